"""World geometry and sensors: consistency between sensors, ground truth, failures, determinism."""

from dataclasses import replace
import math

import cv2
import numpy as np
import pytest

from fusion_nodes.core.config import BevGrid, SEMANTIC_CLASSES
from fusion_nodes.sim.gps_sim import GpsSimulator
from fusion_nodes.sim.lidar_cast import POINT_DTYPE
from fusion_nodes.sim.scenario import FailureWindow, HELD_OUT_KINDS, load_scenario, WorldParams
from fusion_nodes.sim.world import World

SEED = 11003
NS = 1_000_000_000


@pytest.fixture(scope='module')
def nominal():
    return load_scenario('nominal')


@pytest.fixture(scope='module')
def world(nominal):
    return World(nominal, SEED, horizon_s=6.0)


def _t(scenario, seconds: float) -> int:
    return scenario.start_ns + round(seconds * NS)


def _to_base(ego, x, y):
    c, s = math.cos(ego.yaw), math.sin(ego.yaw)
    dx, dy = np.asarray(x) - ego.x, np.asarray(y) - ego.y
    return c * dx + s * dy, -s * dx + c * dy


def test_world_calls_are_pure_functions_of_time(nominal, world):
    t = _t(nominal, 3.0)
    other = World(nominal, SEED)
    later_first = world.render_camera(_t(nominal, 4.0))
    assert np.array_equal(world.render_camera(t), other.render_camera(t))
    assert np.array_equal(world.lidar_scan(t), other.lidar_scan(t))
    assert world.gps_fix(t) == other.gps_fix(t)
    assert np.array_equal(later_first, other.render_camera(_t(nominal, 4.0)))
    assert not np.array_equal(world.render_camera(t), World(nominal, SEED + 1).render_camera(t))


def test_ego_twist_matches_pose_differences(nominal, world):
    dt = 0.02
    moving = 0
    for sec in np.arange(2.0, 12.0, 0.5):
        a, b = world.ego_state(_t(nominal, sec)), world.ego_state(_t(nominal, sec + dt))
        fwd, side = _to_base(a, b.x, b.y)
        assert fwd / dt == pytest.approx(0.5 * (a.vx + b.vx), abs=0.05)
        assert abs(side / dt) < 0.05 + abs(a.yaw_rate) * a.vx * dt
        yaw_rate = math.remainder(b.yaw - a.yaw, 2 * math.pi) / dt
        assert yaw_rate == pytest.approx(0.5 * (a.yaw_rate + b.yaw_rate), abs=1e-3)
        moving += a.vx > 1.0
    assert moving >= 10


def test_speed_profile_has_structure(nominal, world):
    ts = [_t(nominal, s) for s in np.arange(0.0, 60.0, 0.1)]
    traj = world.trajectory.states(np.array(ts))
    assert traj['vx'].min() < 0.1 < 5.0 < traj['vx'].max()  # stops and cruising
    assert traj['ax'].min() < -1.5 and traj['ax'].max() > 1.0  # braking and accelerating
    assert np.abs(traj['yaw_rate']).max() > 0.05  # turns


def test_lidar_returns_on_objects_fall_inside_their_camera_silhouettes(nominal, world):
    camera = nominal.camera
    lidar_t = nominal.lidar.translation
    checked_objects = 0
    checked_points = 0
    for sec in (3.0, 5.0, 7.0):
        t = _t(nominal, sec)
        ego = world.ego_state(t)
        pts = world.lidar_scan(t)
        # Each point was measured in the lidar frame at its own firing time: take it to odom.
        states = world.trajectory.states(t + np.round(pts['time'].astype(np.float64) * NS)
                                         .astype(np.int64))
        lx = pts['x'] + lidar_t[0]
        ly = pts['y'] + lidar_t[1]
        c, s = np.cos(states['yaw']), np.sin(states['yaw'])
        wx = states['x'] + c * lx - s * ly
        wy = states['y'] + s * lx + c * ly
        wz = pts['z'] + lidar_t[2]
        bx, by = _to_base(ego, wx, wy)
        uv_all, depth_all = camera.project(np.stack([bx, by, wz], axis=1))
        for obj in world.objects(t, radius_m=30.0):
            oc, os_ = math.cos(obj.yaw), math.sin(obj.yaw)
            lx_o = oc * (wx - obj.x) + os_ * (wy - obj.y)
            ly_o = -os_ * (wx - obj.x) + oc * (wy - obj.y)
            on = ((np.abs(lx_o) < 0.5 * obj.size[0] + 0.08)
                  & (np.abs(ly_o) < 0.5 * obj.size[1] + 0.08) & (wz > 0.1)
                  & (wz < obj.size[2] + 0.08))
            if on.sum() < 5:
                continue
            corners = []
            for fx, fy in obj.footprint():
                cx, cy = _to_base(ego, fx, fy)
                corners += [(cx, cy, 0.0), (cx, cy, obj.size[2])]
            uv, depth = camera.project(np.array(corners))
            if depth.min() < 1.0:
                continue
            inside_image = ((uv[:, 0] > 0) & (uv[:, 0] < camera.width) & (uv[:, 1] > 0)
                            & (uv[:, 1] < camera.height))
            if not inside_image.all():
                continue
            mask = np.zeros((camera.height, camera.width), np.uint8)
            hull = cv2.convexHull(np.round(uv).astype(np.int32))
            cv2.fillConvexPoly(mask, hull, 1)
            mask = cv2.dilate(mask, np.ones((5, 5), np.uint8))
            u = np.round(uv_all[on, 0]).astype(int)
            v = np.round(uv_all[on, 1]).astype(int)
            assert (depth_all[on] > 0).all()
            visible = (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height)
            assert visible.all()
            assert mask[v, u].all(), obj
            checked_objects += 1
            checked_points += int(on.sum())
    assert checked_objects >= 3 and checked_points >= 100


def test_lidar_scan_fields_and_intensity_by_material(nominal, world):
    pts = world.lidar_scan(_t(nominal, 2.0))
    assert set(pts.dtype.names) == {'x', 'y', 'z', 'intensity', 'ring', 'time'}
    assert pts['ring'].max() < nominal.lidar.beams
    assert 0.0 <= pts['time'].min() and pts['time'].max() < 0.1
    assert np.all(np.diff(pts['time']) >= 0)
    assert 15000 < pts.size <= nominal.lidar.beams * nominal.lidar.azimuth_steps
    ground = pts['z'] + nominal.lidar.translation[2] < 0.1
    assert np.abs(pts['z'][ground] + nominal.lidar.translation[2]).max() < 0.15
    # Red and blue cubes share size and material; nothing in lidar tells them apart.
    cubes = [o for o in world.all_objects if o.class_name.endswith('cube')]
    assert {o.material for o in cubes} == {'cube_plastic'}
    assert {o.size for o in cubes} == {(0.8, 0.8, 0.8)}
    assert {o.class_name for o in cubes} == {'red_cube', 'blue_cube'}


def test_colour_alone_does_not_identify_classes(world):
    by_colour: dict[tuple, set] = {}
    for obj in world.all_objects:
        by_colour.setdefault(obj.colour, set()).add(obj.class_name)
    red_cube = next(o.colour for o in world.all_objects if o.class_name == 'red_cube')
    blue_cube = next(o.colour for o in world.all_objects if o.class_name == 'blue_cube')
    assert len(by_colour[red_cube]) > 1 and len(by_colour[blue_cube]) > 1


def test_bev_ground_truth_marks_object_footprints(nominal, world):
    grid = BevGrid()
    xs, ys = grid.cell_centres()
    non_free = []
    for sec in np.arange(0.0, 12.0, 0.5):
        t = _t(nominal, sec)
        ego = world.ego_state(t)
        bev = world.bev_ground_truth(t)
        assert bev.shape == grid.shape and bev.dtype == np.uint8
        near_any = np.zeros(grid.shape, bool)
        for obj in world.objects(t, radius_m=40.0):
            cx, cy = _to_base(ego, obj.x, obj.y)
            rel = math.remainder(obj.yaw - ego.yaw, 2 * math.pi)
            lx = math.cos(rel) * (xs - cx) + math.sin(rel) * (ys - cy)
            ly = -math.sin(rel) * (xs - cx) + math.cos(rel) * (ys - cy)
            inside = (np.abs(lx) < 0.5 * obj.size[0]) & (np.abs(ly) < 0.5 * obj.size[1])
            assert np.all(bev[inside] == obj.class_id)
            near_any |= (np.abs(lx) < 0.5 * obj.size[0] + grid.resolution) & (
                np.abs(ly) < 0.5 * obj.size[1] + grid.resolution)
            ci, cj, ok = grid.cell_index(np.array([cx]), np.array([cy]))
            if ok[0]:
                assert bev[ci[0], cj[0]] == obj.class_id
        assert np.all(bev[~near_any] == 0)
        non_free.append(np.count_nonzero(bev))
    assert min(non_free) >= 60  # plenty of labelled cells in every frame
    assert set(np.unique(world.bev_ground_truth(_t(nominal, 2.0)))) <= set(
        range(len(SEMANTIC_CLASSES)))


def test_gps_noise_matches_its_stated_sigma():
    params = WorldParams()
    sim = GpsSimulator((48.0, 11.0, 500.0), params, seed=7)
    errs = np.array([sim.error_enu(t * NS // 2) for t in range(2400)])
    sigma = np.array([params.gps_sigma_h_m, params.gps_sigma_h_m, params.gps_sigma_v_m])
    normalised = errs / sigma
    assert np.all(np.abs(normalised) < 4.5)
    assert np.all((0.6 < normalised.std(axis=0)) & (normalised.std(axis=0) < 1.4))
    # Correlated in time like a real receiver: neighbours 0.5 s apart are similar.
    corr = np.corrcoef(errs[1:, 0], errs[:-1, 0])[0, 1]
    assert corr > 0.5


T0 = 4.0  # failure windows start here, once the ego is moving


def _failure_world(nominal, windows):
    held_out = any((w.sensor, w.kind) in HELD_OUT_KINDS for w in windows)
    return World(replace(nominal, failures=tuple(windows), held_out=held_out), SEED,
                 horizon_s=6.0)


def test_every_camera_failure_visibly_changes_frames(nominal, world):
    kinds = ('blackout', 'glare', 'blur', 'frozen', 'dirt', 'channel_swap', 'upside_down')
    failed = _failure_world(nominal, [FailureWindow('camera', k, T0 + i, T0 + i + 1.0)
                                      for i, k in enumerate(kinds)])
    for i, kind in enumerate(kinds):
        t = _t(nominal, T0 + i + 0.6)
        clean = world.render_camera(t).astype(np.float64)
        bad = failed.render_camera(t).astype(np.float64)
        assert failed.failure_flags(t)['camera'] == kind
        if kind == 'blackout':
            assert bad.mean() < 8.0 < clean.mean()
        elif kind == 'glare':
            assert bad.mean() > clean.mean() + 50.0
            assert (bad >= 250).mean() > 0.3
        elif kind == 'blur':
            sharp = cv2.Laplacian(clean.mean(axis=2), cv2.CV_64F).var()
            blurred = cv2.Laplacian(bad.mean(axis=2), cv2.CV_64F).var()
            assert blurred < 0.2 * sharp
        elif kind == 'frozen':
            start = failed.render_camera(_t(nominal, T0 + i))
            assert np.array_equal(bad, start)
            assert np.abs(clean - start).mean() > 2.0
        elif kind == 'channel_swap':
            assert np.array_equal(bad, clean[..., ::-1])
        elif kind == 'upside_down':
            assert np.array_equal(bad, clean[::-1, ::-1])
            assert np.abs(bad - clean).mean() > 5.0
        else:
            changed = np.abs(bad - clean).max(axis=2) > 30
            assert 0.03 < changed.mean() < 0.9
    assert np.array_equal(failed.render_camera(_t(nominal, T0 + 7.5)),
                          world.render_camera(_t(nominal, T0 + 7.5)))


def test_every_lidar_failure_visibly_changes_scans(nominal, world):
    kinds = ('dropout', 'sparse', 'rain', 'frozen', 'crosstalk', 'yaw_misaligned')
    failed = _failure_world(nominal, [FailureWindow('lidar', k, T0 + i, T0 + i + 1.0)
                                      for i, k in enumerate(kinds)])
    for i, kind in enumerate(kinds):
        t = _t(nominal, T0 + i + 0.6)
        clean, bad = world.lidar_scan(t), failed.lidar_scan(t)
        assert bad.dtype == clean.dtype == POINT_DTYPE  # the PointCloud2 layout
        if kind == 'dropout':
            assert bad.size < 0.02 * clean.size
        elif kind == 'sparse':
            assert bad.size < 0.4 * clean.size
            assert set(np.unique(bad['ring'] % 4)) == {0}
        elif kind == 'rain':
            near = np.hypot(bad['x'], bad['y']) < 3.0
            near_clean = np.hypot(clean['x'], clean['y']) < 3.0
            assert near.sum() > near_clean.sum() + 1000
            far = np.hypot(bad['x'], bad['y']) > 25.0
            assert far.sum() < 0.8 * (np.hypot(clean['x'], clean['y']) > 25.0).sum()
        elif kind == 'crosstalk':
            # Every true return kept, ghosts added at all ranges, far ones included.
            assert bad.size == clean.size + 6000
            assert np.all(np.diff(bad['time']) >= 0)
            far = np.hypot(bad['x'], bad['y']) > 25.0
            assert far.sum() > (np.hypot(clean['x'], clean['y']) > 25.0).sum() + 3000
        elif kind == 'yaw_misaligned':
            # The same returns at the same ranges, every one turned by 20 degrees.
            assert bad.size == clean.size
            np.testing.assert_allclose(np.hypot(bad['x'], bad['y']),
                                       np.hypot(clean['x'], clean['y']), rtol=1e-5)
            turn = np.angle(np.exp(1j * (np.arctan2(bad['y'], bad['x'])
                                         - np.arctan2(clean['y'], clean['x']))))
            moved = np.hypot(clean['x'], clean['y']) > 1.0
            np.testing.assert_allclose(np.degrees(turn[moved]), 20.0, atol=1e-3)
        else:
            start = failed.lidar_scan(_t(nominal, T0 + i))
            assert np.array_equal(bad, start)
            assert not np.array_equal(clean, start)
    assert np.array_equal(failed.lidar_scan(_t(nominal, T0 + 6.5)),
                          world.lidar_scan(_t(nominal, T0 + 6.5)))


def test_every_gps_failure_visibly_changes_fixes(nominal, world):
    kinds = ('outage', 'no_fix', 'multipath', 'drift')
    failed = _failure_world(nominal, [FailureWindow('gps', k, T0 + i, T0 + i + 1.0,
                                                    {'rate_mps': 3.0, 'jump_m': 15.0})
                                      for i, k in enumerate(kinds)])
    frame = failed._gps.frame

    def enu(w, t):
        fix = w.gps_fix(t)
        return frame.to_enu(fix.latitude, fix.longitude, fix.altitude)

    assert failed.gps_fix(_t(nominal, T0 + 0.5)) is None
    assert world.gps_fix(_t(nominal, T0 + 0.5)) is not None
    no_fix = failed.gps_fix(_t(nominal, T0 + 1.5))
    assert no_fix.status == -1 and math.isnan(no_fix.latitude)
    sigma = nominal.world.gps_sigma_h_m
    times = [_t(nominal, T0 + 2.0 + k / 10) for k in range(10)]
    # Same seed and time give the same receiver noise, so the difference is the fault alone.
    jumps = [np.linalg.norm(enu(failed, t) - enu(world, t)) for t in times]
    assert sum(j > 5.0 * sigma for j in jumps) >= 5
    for elapsed in (0.1, 0.5, 0.95):
        t = _t(nominal, T0 + 3.0 + elapsed)
        shift = np.linalg.norm(enu(failed, t) - enu(world, t))
        assert shift == pytest.approx(3.0 * elapsed, rel=1e-3)
    fix = failed.gps_fix(_t(nominal, T0 + 3.5))
    assert fix.covariance == world.gps_fix(_t(nominal, T0 + 3.5)).covariance


def test_bad_seed_raises(nominal):
    with pytest.raises(ValueError, match='seed'):
        World(nominal, -1)
    with pytest.raises(ValueError, match='outside'):
        World(nominal, SEED).ego_state(_t(nominal, 500.0))


def test_multipath_flags_only_fixes_that_are_reflected():
    """A multipath slot that reflects nothing delivers healthy fixes and is not flagged."""
    scenario = load_scenario('gps_multipath')
    world = World(scenario, 5, horizon_s=20.0)
    clean = World(replace(scenario, failures=()), 5, horizon_s=20.0)
    flagged = reflected = 0
    for k in range(200):
        t = scenario.start_ns + k * 100_000_000
        fix, healthy = world.gps_fix(t), clean.gps_fix(t)
        differs = (fix.latitude, fix.longitude) != (healthy.latitude, healthy.longitude)
        assert (world.failure_flags(t)['gps'] == 'multipath') == differs
        flagged += scenario.active_failure('gps', t) is not None
        reflected += differs
    assert 0 < reflected < flagged  # some slot in the 10 s window reflected nothing


def test_failure_change_times_are_window_and_slot_edges():
    scenario = load_scenario('gps_multipath')
    world = World(scenario, 5, horizon_s=20.0)
    start = scenario.start_ns
    changes = world.failure_change_times(start + 20 * 1_000_000_000)
    edges = [start + 6_000_000_000, start + 16_000_000_000]
    slots = list(range(start + 7_500_000_000, start + 16_000_000_000, 1_500_000_000))
    assert changes == sorted(set(edges + slots))
    for t in changes:
        # The state published at an edge is the one from that instant on.
        assert world.failure_flags(t) == world.failure_flags(t + 1)


def _horizon_shift(clean: np.ndarray, turned: np.ndarray) -> int:
    """Columns the far field near the horizon moved by, from edge profiles of a band there."""
    profiles = []
    for frame in (clean, turned):
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
        edges = np.abs(np.diff(grey[205:235], axis=1)).sum(axis=0)
        profiles.append(edges - edges.mean())
    a, b = profiles
    shifts = range(-200, 201)
    scores = [float(np.dot(a[max(0, -s):a.size - max(0, s)], b[max(0, s):b.size - max(0, -s)]))
              for s in shifts]
    return shifts[int(np.argmax(scores))]


def test_a_camera_turned_on_its_mount_sees_the_scene_moved_sideways():
    # Turned 20 degrees to the left, distant things move about fx * tan(20 deg) = 116 px to
    # the right (nearer ones less: the camera turns about its own mount point, 1.5 m ahead of
    # base_link); outside the window the frame is the healthy one.
    scenario = load_scenario('camera_yaw_misaligned')
    world = World(scenario, 11000, horizon_s=12.0)
    inside = _t(scenario, 7.0)
    assert 60 <= _horizon_shift(world.clean_camera(inside), world.render_camera(inside)) <= 160
    outside = _t(scenario, 3.0)
    np.testing.assert_array_equal(world.render_camera(outside), world.clean_camera(outside))
