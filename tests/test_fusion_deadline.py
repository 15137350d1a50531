"""fusion_node driven by direct calls: frame release at the max_wait deadline, the fallback clock,
the ERROR rule and calibrated time offsets."""

import time

import numpy as np
import pytest
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter

from fusion_nodes.core.fusion_inputs import SensorSample
from fusion_nodes.core.lidar_odometry import OdometryEstimate
from fusion_nodes.core.motion_compensation import PlanarVelocity
from fusion_nodes.nodes.fusion_node import FusionNode
from fusion_nodes.nodes.sensor_node import ERROR
from tests.models.make_models import write_tiny_model

pytestmark = pytest.mark.ros


def _fusion_node(tmp_path, **params) -> FusionNode:
    """fusion_node on the tiny model, no overlay, the fallback poll out of the way; params
    are further parameter overrides."""
    overrides = {'model': str(write_tiny_model(tmp_path)), 'enable_overlay': False,
                 'poll_period_ms': 1000.0, **params}
    return FusionNode(parameter_overrides=[Parameter(name, value=value)
                                           for name, value in overrides.items()])


def _record_inputs(node: FusionNode, name: str) -> list[np.ndarray]:
    """A copy of the model input `name` for every inference the node runs from now on."""
    feeds = []
    infer = node.backend.infer
    node.backend.infer = lambda feed: feeds.append(feed[name].copy()) or infer(feed)
    return feeds


HEALTHY_CAMERA = np.array([0.5, 0.4, 0.9, 0.0], np.float32)
HEALTHY_LIDAR = np.array([1.0, 1.0, 0.0, 0.02], np.float32)


def _accept_lidar(node: FusionNode, now: int, health: np.ndarray = HEALTHY_LIDAR,
                  **fields) -> None:
    """A zero sweep stamped and arriving at now; fields are further SensorSample fields."""
    node._accept(node.tracks['lidar'], SensorSample(
        'lidar', now, now, np.zeros(node.input_shapes['lidar'][1:], np.float32), health, 0.0,
        **fields))


def _accept_camera(node: FusionNode, now: int, health: np.ndarray = HEALTHY_CAMERA) -> None:
    """A zero frame stamped at now, arriving a nanosecond later (after the sweep)."""
    node._accept(node.tracks['camera'], SensorSample(
        'camera', now, now + 1, np.zeros(node.input_shapes['camera'][1:], np.float32),
        health, 0.0))


def test_a_frame_without_lidar_or_gps_leaves_at_its_max_wait_deadline(rclpy_session, tmp_path):
    """A frame whose lidar and GPS never come leaves at arrival + max_wait."""
    node = _fusion_node(tmp_path, max_wait_ms=60.0)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        shape = node.input_shapes['camera'][1:]
        health = np.zeros(node.input_shapes['health'][-1], np.float32)
        released = []
        for k in range(3):  # one frame after another; each must leave on its own deadline
            now = node.get_clock().now().nanoseconds
            node._accept(node.tracks['camera'], SensorSample(
                'camera', now, now, np.zeros(shape, np.float32), health, 0.0))
            start, before = time.monotonic(), node.published
            while node.published == before and time.monotonic() - start < 2.0:
                executor.spin_once(timeout_sec=0.005)
            released.append(time.monotonic() - start)
        assert node.published == 3
        # Never before the deadline (nothing better can be awaited sooner: no lidar or GPS
        # has ever arrived), and long before the 1 s fallback poll.
        assert all(0.055 <= s < 0.3 for s in released), released
    finally:
        executor.shutdown()
        node.destroy_node()


def test_outputs_before_the_first_camera_frame_keep_the_sensors_clock(rclpy_session, tmp_path):
    """Lidar alone, stamped a year before the node clock: the fallback output follows it."""
    node = _fusion_node(tmp_path)
    try:
        now = node.get_clock().now().nanoseconds
        year = 365 * 86400 * 10**9
        lidar = np.zeros(node.input_shapes['lidar'][1:], np.float32)
        health = np.zeros(node.input_shapes['health'][-1], np.float32)
        node._accept(node.tracks['lidar'], SensorSample(
            'lidar', now - year, now, lidar, health, 0.0))
        assert node._camera_clock_ns(now + 10_000_000) == now - year + 10_000_000
        camera = np.zeros(node.input_shapes['camera'][1:], np.float32)
        node._accept(node.tracks['camera'], SensorSample(
            'camera', now - 2 * year, now + 5, camera, health, 0.0))
        # Once the camera has spoken, its clock rules.
        assert node._camera_clock_ns(now + 10_000_005) == now - 2 * year + 10_000_000
    finally:
        node.destroy_node()


@pytest.mark.parametrize('drop', [True, False])
def test_a_sensor_whose_health_says_error_is_fused_as_missing(rclpy_session, tmp_path, drop):
    """drop_sensor_on_error: a frozen camera enters the model as missing, whatever its gate."""
    node = _fusion_node(tmp_path, max_wait_ms=0.0, drop_sensor_on_error=drop)
    feeds = _record_inputs(node, 'available')
    try:
        frozen_camera = np.array([0.5, 0.4, 0.9, 1.0], np.float32)
        now = node.get_clock().now().nanoseconds
        _accept_lidar(node, now)
        before = node.published  # lidar before any camera frame: a fallback output
        _accept_camera(node, now, frozen_camera)
        assert node.published == before + 1
        assert feeds[-1][0].tolist() == [0.0 if drop else 1.0, 1.0, 0.0]
        assert node.tracks['camera'].dropped_on_error == int(drop)
        if drop:
            assert node._sensor_status('camera')[0] == 'DROPPED'
    finally:
        node.destroy_node()


def test_a_lidar_its_node_puts_in_error_is_fused_as_missing(rclpy_session, tmp_path):
    """The published level counts, not only the health vector: lidar_node's mount check
    puts a lidar with healthy-looking scans in ERROR."""
    node = _fusion_node(tmp_path, max_wait_ms=0.0)
    feeds = _record_inputs(node, 'available')
    try:
        now = node.get_clock().now().nanoseconds
        _accept_lidar(node, now, level=ERROR)
        _accept_camera(node, now)
        assert feeds[-1][0].tolist() == [1.0, 0.0, 0.0]
        assert node.tracks['lidar'].dropped_on_error >= 1
    finally:
        node.destroy_node()


def test_calibrated_time_offsets_reach_the_aligner(rclpy_session, tmp_path):
    node = _fusion_node(tmp_path, lidar_time_offset_ms=80.0, gps_time_offset_ms=-12.5)
    try:
        offsets = node.aligner.offsets()
        assert offsets['lidar'].offset_ns == 80_000_000 and not offsets['lidar'].valid
        assert offsets['gps'].offset_ns == -12_500_000
    finally:
        node.destroy_node()


@pytest.mark.parametrize('compensate', [True, False])
def test_a_scan_older_than_the_frame_is_moved_by_the_ego_motion(rclpy_session, tmp_path,
                                                                compensate):
    """lidar_motion_compensation: a pillar 150 ms old at 10 m/s reaches the model 1.5 m nearer."""
    node = _fusion_node(tmp_path, max_wait_ms=0.0, lidar_motion_compensation=compensate)
    feeds = _record_inputs(node, 'lidar')
    try:
        cols = node.input_shapes['lidar'][3]
        lidar = np.zeros(node.input_shapes['lidar'][1:], np.float32)
        lidar[:, 40, cols // 2] = 1.0
        health = np.array([1.0, 1.0, 0.0, 0.0], np.float32)
        now = node.get_clock().now().nanoseconds
        node._accept(node.tracks['lidar'], SensorSample('lidar', now, now, lidar, health, 0.0))
        camera_stamp = now + 150_000_000
        # As if the previous fused frame had estimated 10 m/s straight ahead, from GPS.
        node.ego_hold.update(camera_stamp - 33_000_000, PlanarVelocity(10.0, 0.0, 0.0), 1.0)
        node._accept(node.tracks['camera'], SensorSample(
            'camera', camera_stamp, now + 1, np.zeros(node.input_shapes['camera'][1:],
                                                      np.float32), health, 0.0))
        moved_row = 40 - 3 if compensate else 40
        assert np.argwhere(feeds[-1][0, 0]).tolist() == [[moved_row, cols // 2]]
        assert node.lidar_compensated == int(compensate)
    finally:
        node.destroy_node()


def test_a_scan_of_the_wrong_shape_is_not_moved_but_rejected(rclpy_session, tmp_path):
    node = _fusion_node(tmp_path, max_wait_ms=0.0)
    try:
        health = np.array([1.0, 1.0, 0.0, 0.0], np.float32)
        now = node.get_clock().now().nanoseconds
        node._accept(node.tracks['lidar'], SensorSample(
            'lidar', now, now, np.zeros((4, 32, 32), np.float32), health, 0.0))
        node.ego_hold.update(now + 50_000_000, PlanarVelocity(10.0, 0.0, 0.0), 1.0)
        errors = node.inference_errors.total
        node._accept(node.tracks['camera'], SensorSample(
            'camera', now + 100_000_000, now + 1,
            np.zeros(node.input_shapes['camera'][1:], np.float32), health, 0.0))
        assert node.lidar_not_compensated == 1 and node.lidar_compensated == 0
        assert node.inference_errors.total == errors + 1
    finally:
        node.destroy_node()


def test_offset_estimates_run_after_the_frame_is_fused(rclpy_session, tmp_path):
    """The DTW window estimate (milliseconds) never runs between a frame and its output."""
    node = _fusion_node(tmp_path, max_wait_ms=0.0)
    events = []
    infer, poll, update = node.backend.infer, node.aligner.poll, node.aligner.update_offsets
    node.backend.infer = lambda feed: events.append('infer') or infer(feed)
    node.aligner.poll = lambda now, estimate=True: (
        events.append(f'poll estimate={estimate}') or poll(now, estimate))
    node.aligner.update_offsets = lambda: events.append('update') or update()
    try:
        shape = node.input_shapes['camera'][1:]
        health = np.zeros(node.input_shapes['health'][-1], np.float32)
        first = node.get_clock().now().nanoseconds
        for k in range(60):  # 2 s of camera stamps: estimates fall due every 0.5 s
            now = node.get_clock().now().nanoseconds
            node._accept(node.tracks['camera'], SensorSample(
                'camera', first + k * 33_333_333, now, np.zeros(shape, np.float32), health,
                float(k % 7)))
        assert node.published == 60
        assert node.aligner.stats()['estimates_run'] >= 2
        assert set(e for e in events if e.startswith('poll')) == {'poll estimate=False'}
        # update_offsets() comes after each poll's inference, never between poll and infer.
        assert events.count('update') == 60
        assert all(events[i - 1] == 'infer' for i, e in enumerate(events) if e == 'update')
    finally:
        node.destroy_node()


@pytest.mark.parametrize('heading, blame, dropped', [
    (0.5, True, 'camera'), (-19.0, True, 'lidar'), (float('nan'), True, None),
    (6.0, True, None), (0.5, False, None)])
def test_a_yaw_disagreement_drops_the_sensor_the_lidar_travel_blames(
        rclpy_session, tmp_path, heading, blame, dropped):
    """With the model's yaw_disagreement at 1, the frame is inferred again without the
    sensor blame_for_yaw names from the lidar sample's travel heading."""
    node = _fusion_node(tmp_path, max_wait_ms=0.0, yaw_blame=blame)
    feeds = []
    infer = node.backend.infer

    def disagreeing(feed):
        feeds.append(feed['available'].copy())
        return {**infer(feed), 'yaw_disagreement': np.ones((1, 1), np.float32)}

    node.backend.infer = disagreeing
    try:
        now = node.get_clock().now().nanoseconds
        _accept_lidar(node, now, travel_heading_deg=heading)
        feeds.clear()  # the lidar-only fallback output before any camera frame
        _accept_camera(node, now)
        assert feeds[0][0].tolist() == [1.0, 1.0, 0.0]
        if dropped is None:
            assert len(feeds) == 1
        else:
            expected = [0.0 if dropped == 'camera' else 1.0,
                        0.0 if dropped == 'lidar' else 1.0, 0.0]
            assert len(feeds) == 2 and feeds[1][0].tolist() == expected
        for sensor in ('camera', 'lidar'):
            assert node.tracks[sensor].dropped_on_yaw == int(sensor == dropped)
    finally:
        node.destroy_node()


@pytest.mark.parametrize('odometry_on, blamed', [(True, False), (False, False), (True, True)])
def test_ego_is_joined_with_a_kept_lidars_odometry(rclpy_session, tmp_path, odometry_on,
                                                   blamed):
    """The published ego is the inverse-variance mean of the network's and the lidar
    sample's odometry, unless lidar_odometry is off or the lidar was dropped (here by the
    yaw blame: its odometry is in a turned frame)."""
    node = _fusion_node(tmp_path, max_wait_ms=0.0, lidar_odometry=odometry_on)
    infer = node.backend.infer

    def network(feed):
        out = {**infer(feed), 'ego_velocity': np.array([[10.0, 0.0, 0.1]], np.float32),
               'ego_log_variance': np.log(np.array([[4.0, 1e-4, 0.01]], np.float32))}
        if blamed and feed['available'][0, 1] > 0:
            out['yaw_disagreement'] = np.ones((1, 1), np.float32)
        return out

    node.backend.infer = network
    published = []
    node._publish = lambda header, outputs, samples: published.append(outputs)
    try:
        now = node.get_clock().now().nanoseconds
        odometry = OdometryEstimate(np.array([8.0, 0.0, 0.1]), np.array([1.0, 0.09, 0.01]))
        _accept_lidar(node, now, travel_heading_deg=-19.0, odometry=odometry)
        published.clear()  # the lidar-only fallback output before any camera frame
        before = node.ego_with_lidar_odometry
        _accept_camera(node, now)
        ego = published[-1]['ego_velocity'][0]
        variance = np.exp(published[-1]['ego_log_variance'][0])
        if odometry_on and not blamed:
            assert ego[0] == pytest.approx(8.4, abs=1e-5)
            assert variance[0] == pytest.approx(0.8, rel=1e-5)
            assert variance[2] == pytest.approx(0.005, rel=1e-4)
            assert node.ego_with_lidar_odometry == before + 1
        else:
            assert ego[0] == pytest.approx(10.0) and variance[0] == pytest.approx(4.0)
            assert node.ego_with_lidar_odometry == before
    finally:
        node.destroy_node()


@pytest.mark.parametrize('multipath, odometry_valid, blame_lidar, gps_fused', [
    (0.5, True, False, False), (0.0, True, False, True), (0.5, False, False, True),
    (0.5, True, True, True)])
def test_gps_in_a_multipath_episode_gives_way_to_the_lidar_odometry(
        rclpy_session, tmp_path, multipath, odometry_valid, blame_lidar, gps_fused):
    """The GPS is fused as missing while its health shows a multipath episode and a kept
    lidar's odometry can carry the ego; if the yaw blame then drops the lidar, it is back."""
    node = _fusion_node(tmp_path, max_wait_ms=0.0)
    feeds = []
    infer = node.backend.infer

    def network(feed):
        feeds.append(feed['available'].copy())
        out = infer(feed)
        if blame_lidar and feed['available'][0, 0] > 0 and feed['available'][0, 1] > 0:
            out['yaw_disagreement'] = np.ones((1, 1), np.float32)
        return out

    node.backend.infer = network
    try:
        now = node.get_clock().now().nanoseconds
        node._accept(node.tracks['gps'], SensorSample(
            'gps', now, now, np.zeros(node.input_shapes['gps'][1:], np.float32),
            np.array([1.0, 0.1, multipath, 0.1], np.float32), 0.0))
        odometry = (OdometryEstimate(np.array([8.0, 0.0, 0.0]), np.array([0.09, 0.09, 1e-3]))
                    if odometry_valid else OdometryEstimate())
        _accept_lidar(node, now, travel_heading_deg=-19.0, odometry=odometry)
        feeds.clear()
        before = node.tracks['gps'].dropped_on_multipath
        _accept_camera(node, now)
        assert feeds[-1][0, 2] == float(gps_fused)
        assert node.tracks['gps'].dropped_on_multipath == before + int(not gps_fused)
        if blame_lidar:
            assert feeds[0][0].tolist() == [1.0, 1.0, 0.0]  # first run: GPS given way
            assert feeds[-1][0].tolist() == [1.0, 0.0, 1.0]
    finally:
        node.destroy_node()
