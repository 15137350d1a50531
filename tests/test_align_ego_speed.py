"""Metric ego-motion signatures: the camera's road-patch shift and the lidar's cluster shift."""

import math

import cv2
import numpy as np
import pytest

from fusion_nodes.core.align.ego_speed import (
    cluster_displacement, GroundPatchConfig, GroundPatchSpeed, obstacle_centroids,
    ObstacleClusterConfig, ObstacleDisplacement)
from fusion_nodes.core.config import CameraModel
from fusion_nodes.sim.scenario import load_scenario
from fusion_nodes.sim.world import World

CAMERA = CameraModel()
TEXTURE_RES_M = 0.01


def _ground_texture() -> np.ndarray:
    """A speckled road, 40 x 10 m at 1 cm, rows along x from 0 m, columns along y from -5 m."""
    rng = np.random.default_rng(5)
    speckle = cv2.GaussianBlur(rng.random((4000, 1000)).astype(np.float32), (0, 0), 2.0)
    return 255.0 * (speckle - speckle.min()) / (speckle.max() - speckle.min())


def _render_ground(texture: np.ndarray, ego_x: float) -> np.ndarray:
    """Grey frame of the flat textured ground seen by CAMERA with base_link at x = ego_x."""
    rot, _ = CAMERA.base_to_optical()
    u, v = np.meshgrid(np.arange(CAMERA.width), np.arange(CAMERA.height))
    rays = np.stack([(u - CAMERA.cx) / CAMERA.fx, (v - CAMERA.cy) / CAMERA.fy,
                     np.ones(u.shape)], axis=-1) @ rot  # optical -> base_link directions
    origin = np.asarray(CAMERA.translation)
    with np.errstate(divide='ignore', invalid='ignore'):
        reach = np.where(rays[..., 2] < -1e-6, -origin[2] / rays[..., 2], np.nan)
    gx = origin[0] + reach * rays[..., 0] + ego_x
    gy = origin[1] + reach * rays[..., 1]
    map_row = (gx / TEXTURE_RES_M).astype(np.float32)
    map_col = ((gy + 5.0) / TEXTURE_RES_M).astype(np.float32)
    return cv2.remap(texture, np.nan_to_num(map_col, nan=-1.0),
                     np.nan_to_num(map_row, nan=-1.0), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=128.0)


@pytest.mark.parametrize('moved_m', [0.0, 0.11, 0.37])
def test_ground_patch_shift_is_the_distance_driven(moved_m):
    texture = _ground_texture()
    speed = GroundPatchSpeed(CAMERA)
    assert math.isnan(speed.update(_render_ground(texture, 2.0)))
    assert speed.update(_render_ground(texture, 2.0 + moved_m)) == pytest.approx(
        moved_m, abs=0.01)


def test_ground_patch_wants_the_calibrated_size_and_a_patch_in_front():
    speed = GroundPatchSpeed(CAMERA)
    frame = np.zeros((CAMERA.height, CAMERA.width), np.float32)
    assert math.isnan(speed.update(frame))
    assert math.isnan(speed.update(np.zeros((240, 320), np.float32)))  # restarts
    assert math.isnan(speed.update(frame))
    assert math.isnan(speed.update(np.zeros((CAMERA.height, CAMERA.width, 3), np.float32)))
    backwards = CameraModel(rpy=(0.0, 0.08, math.pi))
    with pytest.raises(ValueError, match='behind the camera'):
        GroundPatchSpeed(backwards)
    with pytest.raises(ValueError):
        GroundPatchConfig(x_near=5.0, x_far=4.0)


def test_ground_patch_speed_tracks_the_true_speed_on_generator_frames():
    scenario = load_scenario('nominal')
    world = World(scenario, 11000, horizon_s=6.0)
    speed = GroundPatchSpeed(scenario.camera)
    start = scenario.start_ns + 4_000_000_000
    measured, truth = [], []
    previous = None
    for k in range(20):
        t = start + k * 33_333_333
        shift = speed.update(cv2.cvtColor(world.render_camera(t), cv2.COLOR_RGB2GRAY))
        if previous is not None:
            measured.append(shift / 0.033333333)
            truth.append(world.ego_state((t + previous) // 2).vx)
        previous = t
    assert min(truth) > 2.0  # the ego is moving, so the check can fail
    assert np.median(np.abs(np.array(measured) - truth)) < 0.3


def _box_points(cx: float, cy: float, length: float, width: float, rng,
                n: int = 200) -> np.ndarray:
    return np.stack([rng.uniform(cx - length / 2, cx + length / 2, n),
                     rng.uniform(cy - width / 2, cy + width / 2, n),
                     rng.uniform(0.4, 1.5, n)], axis=1)


def _scene(shift_m: float, rng) -> np.ndarray:
    boxes = [(8.0, 5.0), (-6.0, -5.0), (15.0, -3.5), (3.0, 7.0), (-12.0, 6.0)]
    parts = [_box_points(x - shift_m, y, 1.0, 0.8, rng) for x, y in boxes]
    parts.append(_box_points(0.0, 3.0, 40.0, 0.3, rng, 8000))  # a wall along the road
    ground = np.stack([rng.uniform(-20, 20, 500), rng.uniform(-20, 20, 500),
                       rng.normal(0.0, 0.02, 500)], axis=1)
    return np.vstack(parts + [ground])


def test_obstacle_centroids_keep_compact_clusters_only():
    rng = np.random.default_rng(1)
    centroids = obstacle_centroids(_scene(0.0, rng))
    assert len(centroids) == 5  # the wall is too long, the ground too low
    found = sorted(map(tuple, np.round(centroids, 0)))
    assert found == sorted([(8.0, 5.0), (-6.0, -5.0), (15.0, -4.0), (3.0, 7.0), (-12.0, 6.0)])
    assert obstacle_centroids(np.zeros((0, 4))).shape == (0, 2)
    nan_rows = np.vstack([_scene(0.0, rng), np.full((3, 3), np.nan)])
    assert len(obstacle_centroids(nan_rows)) == 5
    with pytest.raises(ValueError):
        obstacle_centroids(np.zeros((4, 2)))
    few = obstacle_centroids(_scene(0.0, rng), ObstacleClusterConfig(max_clusters=2))
    assert len(few) == 2 and np.all(np.hypot(*few.T) < 10.0)  # the nearest are kept


def test_cluster_displacement_follows_the_static_world_back():
    rng = np.random.default_rng(3)
    previous = rng.uniform(-25.0, 25.0, (20, 2))
    current = previous - [0.72, 0.0] + rng.normal(0.0, 0.03, previous.shape)
    current = np.vstack([current[:-3], rng.uniform(-25.0, 25.0, (3, 2))])  # lost and new
    assert cluster_displacement(previous, current) == pytest.approx(0.72, abs=0.05)
    assert math.isnan(cluster_displacement(previous[:1], current))
    assert math.isnan(cluster_displacement(previous, current + 10.0))  # nothing matches


@pytest.mark.parametrize('yaw', [-0.035, -0.02, 0.0, 0.015, 0.03])
def test_cluster_displacement_in_a_turn_is_the_forward_motion(yaw):
    # The ego moves 1.1 m forward and turns by yaw: the world is shifted back, then turned by
    # -yaw. A forward shift alone reads lateral clusters' x moves of yaw * y as speed and loses
    # far clusters ahead sideways out of the 0.25 m match radius.
    rng = np.random.default_rng(7)
    previous = np.column_stack([rng.uniform(-25.0, 25.0, 30), rng.uniform(-12.0, 12.0, 30)])
    c, s = math.cos(-yaw), math.sin(-yaw)
    current = (previous - [1.1, 0.0]) @ np.array([[c, -s], [s, c]]).T
    current += rng.normal(0.0, 0.02, current.shape)
    assert cluster_displacement(previous, current) == pytest.approx(1.1, abs=0.02)


def test_obstacle_displacement_between_sweeps():
    rng = np.random.default_rng(2)
    tracker = ObstacleDisplacement()
    assert math.isnan(tracker.update(_scene(0.0, rng)))
    assert tracker.update(_scene(0.85, rng)) == pytest.approx(0.85, abs=0.05)
    assert tracker.update(_scene(0.85, rng)) == pytest.approx(0.0, abs=0.05)
    tracker.reset()
    assert math.isnan(tracker.update(_scene(0.0, rng)))
