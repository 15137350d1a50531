"""Lidar BEV pillars and health, against a per-point reference."""

import numpy as np

from fusion_nodes.core.config import BevGrid, PillarConfig
from fusion_nodes.core.lidar import (
    lidar_points_to_base, LidarHealthConfig, LidarHealthTracker, pillarize)

CFG = PillarConfig()


def _reference_pillars(points: np.ndarray, cfg: PillarConfig) -> np.ndarray:
    rows, cols = cfg.grid.shape
    out = np.zeros((4, rows, cols))
    counts = np.zeros((rows, cols))
    for x, y, z, intensity in points:
        i = int(np.floor((x - cfg.grid.x_min) / cfg.grid.resolution))
        j = int(np.floor((y - cfg.grid.y_min) / cfg.grid.resolution))
        if not (0 <= i < rows and 0 <= j < cols and cfg.z_min <= z <= cfg.z_max):
            continue
        counts[i, j] += 1
        out[0, i, j] = max(out[0, i, j], 1.0 if z >= cfg.obstacle_min_z else 0.0)
        out[1, i, j] = max(out[1, i, j], min(max(z / cfg.z_max, 0.0), 1.0))
        out[2, i, j] += min(max(intensity, 0.0), 1.0)
    seen = counts > 0
    out[2][seen] /= counts[seen]
    out[3] = np.minimum(np.log1p(counts) / np.log1p(cfg.density_norm), 1.0)
    return out


def test_pillarize_matches_per_point_reference():
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-5, 40, 3000), rng.uniform(-20, 20, 3000),
                           rng.uniform(-1, 4, 3000), rng.uniform(0, 1.2, 3000)])
    pts = pts.astype(np.float32)
    np.testing.assert_allclose(pillarize(pts, CFG), _reference_pillars(pts, CFG), atol=1e-5)


def test_ground_is_free_and_a_box_is_occupied():
    xs, ys = np.meshgrid(np.linspace(1, 31, 120), np.linspace(-15, 15, 120))
    ground = np.column_stack([xs.ravel(), ys.ravel(), np.zeros(xs.size), np.full(xs.size, 0.2)])
    box = np.column_stack([np.full(50, 10.2), np.linspace(2.1, 2.4, 50),
                           np.linspace(0.3, 1.5, 50), np.full(50, 0.8)])
    bev = pillarize(np.vstack([ground, box]).astype(np.float32), CFG)
    i, j, _ = CFG.grid.cell_index(np.array([10.2]), np.array([2.2]))
    assert bev[0, i[0], j[0]] == 1.0
    assert bev[0].sum() <= 2
    assert abs(bev[1, i[0], j[0]] - 1.5 / CFG.z_max) < 1e-6


def test_empty_and_out_of_grid_clouds_give_zeros():
    assert not pillarize(np.zeros((0, 4), np.float32), CFG).any()
    far = np.array([[100.0, 0.0, 1.0, 0.5]], np.float32)
    assert not pillarize(far, CFG).any()


def test_custom_grid_shape():
    cfg = PillarConfig(grid=BevGrid(x_min=-10, x_max=10, y_min=-5, y_max=5, resolution=0.25))
    assert pillarize(np.zeros((1, 4), np.float32), cfg).shape == (4, 80, 40)


def test_points_to_base_applies_extrinsic():
    pts = np.array([[1.0, 2.0, 3.0, 0.5]], np.float32)
    out = lidar_points_to_base(pts, (0.5, 0.0, 1.8))
    np.testing.assert_allclose(out, [[1.5, 2.0, 4.8, 0.5]])
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(lidar_points_to_base(pts, (0, 0, 0), rot)[0, :3], [-2, 1, 3])


def test_health_flags_dropout_frozen_and_clutter():
    rng = np.random.default_rng(1)
    scan = rng.uniform(-30, 30, (20000, 4)).astype(np.float32)
    tracker = LidarHealthTracker(LidarHealthConfig(expected_points=20000))
    first = tracker.update(scan, 25000)
    np.testing.assert_allclose(first[:2], [1.0, 0.8])
    assert first[2] == 0.0
    assert tracker.update(scan.copy(), 25000)[2] == 1.0
    sparse = tracker.update(scan[:1000], 25000)
    assert sparse[0] == 0.05 and sparse[2] == 0.0
    rain = np.vstack([scan, rng.uniform(-2, 2, (8000, 4)).astype(np.float32)])
    cluttered = LidarHealthTracker().update(rain, rain.shape[0])
    clean = LidarHealthTracker().update(scan, scan.shape[0])
    assert cluttered[3] > clean[3] + 0.2
    assert LidarHealthTracker().update(np.zeros((0, 4), np.float32), 0).tolist() == [0, 0, 0, 0]
