"""The three sensor nodes in-process over real DDS: outputs, no skew, rejections, diagnostics."""

import math
from types import SimpleNamespace

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, NavSatFix, PointCloud2, PointField
from std_msgs.msg import Header

from fusion_nodes import conversions
from fusion_nodes.core.camera import preprocess_camera
from fusion_nodes.core.config import CameraPreprocessConfig, PillarConfig
from fusion_nodes.core.geodesy import EnuFrame
from fusion_nodes.core.gps import GpsTracker, GpsTrackerConfig
from fusion_nodes.core.lidar import lidar_points_to_base, pillarize
from fusion_nodes.nodes.camera_node import CameraNode
from fusion_nodes.nodes.gps_node import assess_gps, GpsNode
from fusion_nodes.nodes.health_msg import (
    make_health_msg, odometry_from_values, parse_health_msg)
from fusion_nodes.nodes.lidar_node import LidarNode
from fusion_nodes.nodes.sensor_node import ERROR, OK, WARN
from tests.mount_scenes import road_frame, scene, seen_from
from tests.ros_helpers import Collector, spin_until

pytestmark = pytest.mark.ros


@pytest.fixture
def graph():
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    nodes = []

    def add(node_factory, **kwargs):
        node = node_factory(context=context, **kwargs)
        executor.add_node(node)
        nodes.append(node)
        return node

    yield add, executor
    for node in nodes:
        executor.remove_node(node)
        node.destroy_node()
    executor.shutdown()
    rclpy.shutdown(context=context)


def _header(sec: int, nanosec: int = 0, frame: str = 'camera_optical') -> Header:
    header = Header(frame_id=frame)
    header.stamp.sec, header.stamp.nanosec = sec, nanosec
    return header


def _probe(add):
    return add(lambda **kw: rclpy.create_node('probe', **kw))


def _wait_for_subscriber(executor, publisher, timeout_s=10.0):
    assert spin_until(executor, lambda: publisher.get_subscription_count() > 0, timeout_s)


def _scene(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)


def test_camera_node_publishes_the_core_features_and_rejects_bad_frames(graph):
    add, executor = graph
    camera = add(CameraNode)
    probe = _probe(add)
    pub = probe.create_publisher(Image, 'camera/image_raw', qos_profile_sensor_data)
    features = Collector(probe, Image, 'camera/features')
    health = Collector(probe, DiagnosticArray, 'camera/health')
    diagnostics = Collector(probe, DiagnosticArray, '/diagnostics')
    _wait_for_subscriber(executor, pub)
    assert spin_until(executor, lambda: probe.count_publishers('camera/features') > 0, 5.0)

    frames = [_scene(k) for k in range(3)]
    bad = Image(header=_header(9), height=480, width=640, encoding='yuv-unknown', step=1920,
                data=bytes(480 * 1920))
    for k, rgb in enumerate(frames):
        pub.publish(conversions.numpy_to_image(rgb, 'rgb8', header=_header(100 + k)))
        spin_until(executor, lambda k=k: len(features) > k, 5.0)
    pub.publish(bad)
    spin_until(executor, lambda: camera.rejections.total > 0, 5.0)
    pub.publish(conversions.numpy_to_image(frames[0], 'bgr8', header=_header(200)))
    assert spin_until(executor, lambda: len(features) == 4 and len(health) == 4, 5.0)

    cfg = CameraPreprocessConfig()
    for k, rgb in enumerate(frames):
        out = conversions.image_to_numpy(features.messages[k])
        assert features.messages[k].header.stamp.sec == 100 + k
        assert features.messages[k].header.frame_id == 'camera_optical'
        np.testing.assert_array_equal(out.transpose(2, 0, 1), preprocess_camera(rgb, cfg))
    bgr_as_rgb = frames[0][:, :, ::-1]
    np.testing.assert_array_equal(conversions.image_to_numpy(features.messages[3]),
                                  preprocess_camera(bgr_as_rgb, cfg).transpose(1, 2, 0))
    name, _, values = parse_health_msg(health.messages[0])
    assert name == 'camera' and 0.0 <= values['health.brightness'] <= 1.0
    assert camera.rejections.total == 1 and camera.processed == 4

    assert spin_until(executor, lambda: any(
        s.name == 'fusion_nodes: camera' for m in diagnostics.messages for s in m.status), 3.0)
    status = [s for m in diagnostics.messages for s in m.status
              if s.name == 'fusion_nodes: camera'][-1]
    values = {kv.key: kv.value for kv in status.values}
    assert values['rejected'] == '1' and values['processed'] == '4'
    assert any(key.startswith('rejected.') for key in values)


@pytest.mark.parametrize('upside_down, check, expected', [
    (True, True, ERROR), (False, True, OK), (True, False, OK)])
def test_camera_node_puts_an_upside_down_camera_in_error(rclpy_session, upside_down,
                                                         check, expected):
    """A second at 8 m/s along a striped road: an upside-down image goes to ERROR, unless
    mount_check is off; the upright one stays OK."""
    node = CameraNode(parameter_overrides=[Parameter('mount_check', value=check)])
    published = []
    node.publish_health = lambda header, health, level, message, extra: published.append(
        (level, message, extra))
    try:
        for k in range(30):
            t = k / 30.0
            grey = cv2.resize(road_frame(t, upside_down=upside_down), (640, 480))
            rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
            stamp_ns = 5 * 10**9 + round(t * 1e9)
            node._process(conversions.numpy_to_image(
                rgb, 'rgb8', header=_header(stamp_ns // 10**9, stamp_ns % 10**9)))
    finally:
        node.destroy_node()
    level, message, extra = published[-1]
    assert level == expected, message
    if expected == ERROR:
        assert message.startswith('upside down') and extra['mount.log_ratio'] < 0.0
    assert ('mount.steps' in extra) == check
    # No clock-offset signature from a camera in ERROR: its road would not be the road.
    assert math.isnan(extra['signature']) == (expected == ERROR)


def test_camera_node_compressed_transport(graph):
    add, executor = graph
    add(CameraNode, parameter_overrides=[Parameter('input_transport', value='compressed')])
    probe = _probe(add)
    pub = probe.create_publisher(CompressedImage, 'camera/image_raw/compressed',
                                 qos_profile_sensor_data)
    features = Collector(probe, Image, 'camera/features')
    _wait_for_subscriber(executor, pub)
    assert spin_until(executor, lambda: probe.count_publishers('camera/features') > 0, 5.0)
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[:, 320:] = (200, 40, 10)
    msg = conversions.rgb8_to_compressed(rgb, fmt='png', header=_header(5))
    pub.publish(msg)
    assert spin_until(executor, lambda: len(features) == 1, 5.0)
    expected = preprocess_camera(conversions.compressed_to_rgb8(msg), CameraPreprocessConfig())
    np.testing.assert_array_equal(
        conversions.image_to_numpy(features.messages[0]).transpose(2, 0, 1), expected)


def test_camera_node_refuses_unknown_transport():
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(ValueError, match='input_transport'):
            CameraNode(context=context,
                       parameter_overrides=[Parameter('input_transport', value='h264')])
    finally:
        rclpy.shutdown(context=context)


def _cloud_with_ring_and_padding(points: np.ndarray, sec: int) -> PointCloud2:
    dtype = np.dtype({'names': ['x', 'y', 'z', 'intensity', 'ring', 'time'],
                      'formats': ['<f4', '<f4', '<f4', '<f4', '<u2', '<f4'],
                      'offsets': [0, 4, 8, 16, 20, 24], 'itemsize': 32})
    array = np.zeros(points.shape[0], dtype)
    for k, name in enumerate(('x', 'y', 'z', 'intensity')):
        array[name] = points[:, k]
    array['ring'] = np.arange(points.shape[0]) % 32
    fields = [PointField(name=n, offset=o, datatype=d, count=1) for n, o, d in (
        ('x', 0, PointField.FLOAT32), ('y', 4, PointField.FLOAT32), ('z', 8, PointField.FLOAT32),
        ('intensity', 16, PointField.FLOAT32), ('ring', 20, PointField.UINT16),
        ('time', 24, PointField.FLOAT32))]
    return PointCloud2(header=_header(sec, frame='lidar'), height=1, width=points.shape[0],
                       fields=fields, is_bigendian=False, point_step=32,
                       row_step=32 * points.shape[0], data=array.tobytes(), is_dense=False)


def test_lidar_node_publishes_pillars_of_any_layout(graph):
    add, executor = graph
    lidar = add(LidarNode)
    probe = _probe(add)
    pub = probe.create_publisher(PointCloud2, 'lidar/points', qos_profile_sensor_data)
    bev = Collector(probe, Image, 'lidar/bev')
    health = Collector(probe, DiagnosticArray, 'lidar/health')
    _wait_for_subscriber(executor, pub)
    assert spin_until(executor, lambda: probe.count_publishers('lidar/bev') > 0, 5.0)
    rng = np.random.default_rng(3)
    points = np.column_stack([rng.uniform(0, 35, 5000), rng.uniform(-18, 18, 5000),
                              rng.uniform(-2, 1.5, 5000), rng.uniform(0, 1, 5000)])
    points[::50, 0] = np.nan
    pub.publish(_cloud_with_ring_and_padding(points.astype(np.float32), 7))
    assert spin_until(executor, lambda: len(bev) == 1 and len(health) == 1, 5.0)
    finite = points[np.isfinite(points).all(axis=1)].astype(np.float32)
    expected = pillarize(lidar_points_to_base(finite, (0.0, 0.0, 1.8)), PillarConfig())
    got = conversions.image_to_numpy(bev.messages[0])
    np.testing.assert_allclose(got.transpose(2, 0, 1), expected, atol=1e-6)
    assert bev.messages[0].header.stamp.sec == 7
    _, _, values = parse_health_msg(health.messages[0])
    assert values['health.valid_ratio'] == pytest.approx(finite.shape[0] / 5000, abs=1e-6)

    no_xyz = PointCloud2(header=_header(8, frame='lidar'), height=1, width=1, point_step=4,
                         row_step=4, data=bytes(4),
                         fields=[PointField(name='a', offset=0, datatype=7, count=1)])
    pub.publish(no_xyz)
    assert spin_until(executor, lambda: lidar.rejections.total == 1, 5.0)


@pytest.mark.parametrize('mount_yaw_deg, extrinsic_yaw_deg, check, expected', [
    (20.0, 0.0, True, ERROR), (0.0, 0.0, True, OK), (20.0, 0.0, False, OK),
    (20.0, -20.0, True, OK)])
def test_lidar_node_puts_a_turned_lidar_in_error(rclpy_session, mount_yaw_deg,
                                                 extrinsic_yaw_deg, check, expected):
    """Three seconds at 8 m/s past poles: a lidar turned 20 degrees on its mount goes to
    ERROR with its heading in the message, unless mount_check is off or the extrinsic says
    how it is turned (the check works in base_link)."""
    world = scene(5)
    node = LidarNode(parameter_overrides=[
        Parameter('mount_check', value=check), Parameter('expected_points', value=len(world)),
        Parameter('extrinsic_rpy', value=[0.0, 0.0, float(np.radians(extrinsic_yaw_deg))])])
    published = []
    node.publish_health = lambda header, health, level, message, extra: published.append(
        (level, message, extra))
    try:
        for k in range(30):
            lidar_frame = seen_from(world, 0.8 * k, mount_yaw_deg=mount_yaw_deg)
            lidar_frame[:, 2] -= 1.8  # the default extrinsic puts the lidar 1.8 m up
            stamp_ns = 5 * 10**9 + k * 100_000_000
            header = _header(stamp_ns // 10**9, stamp_ns % 10**9, frame='lidar')
            node._process(conversions.create_cloud_xyzi(header, lidar_frame))
    finally:
        node.destroy_node()
    level, message, extra = published[-1]
    assert level == expected
    if expected == ERROR:
        assert 'mount turned' in message and extra['mount.heading_deg'] > 12.0
    assert ('mount.steps' in extra) == check
    if expected == ERROR:
        assert math.isnan(extra['signature'])
    elif mount_yaw_deg == extrinsic_yaw_deg:
        # The clock-offset signature: the poles come 0.8 m closer every sweep.
        assert extra['signature'] == pytest.approx(0.8, abs=0.05)


def test_lidar_node_warns_on_the_sweep_its_mount_is_knocked(rclpy_session):
    """Straight for two seconds, then the lidar turns 20 degrees between two sweeps: that
    sweep is a WARN with the jump, and the travel heading says turned at once."""
    world = scene(5)
    node = LidarNode(parameter_overrides=[Parameter('expected_points', value=len(world))])
    published = []
    node.publish_health = lambda header, health, level, message, extra: published.append(
        (level, message, extra))
    try:
        for k in range(25):
            lidar_frame = seen_from(world, 0.8 * k, mount_yaw_deg=20.0 if k >= 20 else 0.0)
            lidar_frame[:, 2] -= 1.8
            stamp_ns = 5 * 10**9 + k * 100_000_000
            header = _header(stamp_ns // 10**9, stamp_ns % 10**9, frame='lidar')
            node._process(conversions.create_cloud_xyzi(header, lidar_frame))
    finally:
        node.destroy_node()
    level, message, extra = published[19]
    assert level == OK and extra['mount.jumps'] == 0
    assert abs(extra['mount.travel_heading_deg']) < 3.0
    # 0.8 m a sweep: the odometry the mount check's registrations give.
    assert extra['odometry.vx'] == pytest.approx(8.0, abs=0.5)
    assert extra['odometry.var_vx'] > 0.0
    assert extra['odometry.implausible'] == 0  # steady driving: nothing held back
    assert extra['odometry.speed_rejected'] == 0
    _, _, values = parse_health_msg(make_health_msg(Header(), 'lidar', level, message, extra))
    read_back = odometry_from_values(values)
    assert read_back.valid and read_back.velocity[0] == pytest.approx(extra['odometry.vx'])
    level, message, extra = published[20]
    assert level == WARN and 'mount knocked' in message and extra['mount.jumps'] == 1
    assert abs(extra['mount.travel_heading_deg']) >= 10.0


def test_gps_node_publishes_enu_odometry_and_flags_no_fix(graph):
    add, executor = graph
    gps = add(GpsNode)
    probe = _probe(add)
    pub = probe.create_publisher(NavSatFix, 'gps/fix', qos_profile_sensor_data)
    odom = Collector(probe, Odometry, 'gps/odometry')
    health = Collector(probe, DiagnosticArray, 'gps/health')
    _wait_for_subscriber(executor, pub)
    assert spin_until(executor, lambda: probe.count_publishers('gps/odometry') > 0, 5.0)
    frame = EnuFrame(47.0, 8.0, 400.0)
    for k in range(5):
        lat, lon, alt = frame.to_geodetic([2.0 * k, 1.0 * k, 0.0])
        fix = NavSatFix(header=_header(k, frame='gps'), latitude=lat, longitude=lon,
                        altitude=alt, position_covariance=[0.04, 0, 0, 0, 0.04, 0, 0, 0, 0.1],
                        position_covariance_type=NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN)
        fix.status.status = 0
        pub.publish(fix)
        spin_until(executor, lambda k=k: len(health) > k, 5.0)
    lost = NavSatFix(header=_header(5, frame='gps'), latitude=float('nan'),
                     longitude=float('nan'), altitude=float('nan'))
    lost.status.status = -1
    pub.publish(lost)
    assert spin_until(executor, lambda: len(health) == 6 and len(odom) == 5, 5.0)
    last = odom.messages[-1]
    position = (last.pose.pose.position.x, last.pose.pose.position.y)
    assert position == pytest.approx((8, 4), abs=1e-3)
    assert last.header.frame_id == 'map' and last.header.stamp.sec == 4
    # The twist covariance holds at least the velocity floor (config/fusion.yaml: 0.3 m/s).
    twist_cov = np.reshape(last.twist.covariance, (6, 6))
    assert twist_cov[0, 0] >= 0.3 ** 2 and twist_cov[1, 1] >= 0.3 ** 2
    _, level, values = parse_health_msg(health.messages[-1])
    assert values['health.fix_valid'] == 0.0 and level == 2
    assert gps.rejections.total == 0

    bad = NavSatFix(header=_header(6, frame='gps'), latitude=123.0, longitude=0.0)
    pub.publish(bad)
    assert spin_until(executor, lambda: gps.rejections.total == 1, 5.0)


def test_gps_diagnostics_follow_a_multipath_episode():
    tracker = GpsTracker(GpsTrackerConfig(origin=(47.0, 8.0, 400.0), jump_hold_s=1.0))
    frame = EnuFrame(47.0, 8.0, 400.0)
    messages = []
    for k in range(40):
        east = 2.0 * k * 0.1 + (30.0 if k == 20 else 0.0)
        fix = SimpleNamespace(stamp_ns=k * 100_000_000, status=0, covariance_type=2,
                              position_covariance=(0.04, 0, 0, 0, 0.04, 0, 0, 0, 0.1))
        fix.latitude, fix.longitude, fix.altitude = frame.to_geodetic([east, 0.0, 0.0])
        messages.append(assess_gps(tracker.update(fix)))
    assert messages[19] == (OK, 'ok')
    assert messages[20] == (WARN, 'position jump rejected (multipath?)')
    assert messages[21] == messages[29] == (WARN, 'recent position jumps (multipath?)')
    assert messages[30] == (OK, 'ok')
