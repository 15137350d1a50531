"""Malformed input never crashes a node and is never lost silently: each message is rejected,
counted by reason, and the count reaches /diagnostics while good messages keep flowing."""

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, NavSatFix, PointCloud2, PointField

from fusion_nodes import conversions
from fusion_nodes.nodes.camera_node import CameraNode
from fusion_nodes.nodes.gps_node import GpsNode
from fusion_nodes.nodes.lidar_node import LidarNode
from tests.ros_helpers import Collector, spin_until

pytestmark = pytest.mark.ros


def _bad_images() -> list[Image]:
    def image(**kw):
        msg = Image(height=4, width=4, encoding='rgb8', step=12, data=bytes(48))
        for key, value in kw.items():
            setattr(msg, key, value)
        return msg
    return [image(encoding='yuv422_weird'), image(step=8), image(data=bytes(20)),
            image(encoding='mono16', step=4), image(encoding='32FC1', data=bytes(47))]


def _bad_clouds() -> list[PointCloud2]:
    xyz = [PointField(name=n, offset=4 * k, datatype=PointField.FLOAT32, count=1)
           for k, n in enumerate('xyz')]

    def cloud(fields=xyz, width=10, point_step=12, data_len=120, row_step=None):
        return PointCloud2(height=1, width=width, fields=fields, point_step=point_step,
                           row_step=row_step if row_step is not None else point_step * width,
                           data=bytes(data_len), is_dense=True)
    return [cloud(fields=xyz[:2]), cloud(data_len=100), cloud(point_step=8, data_len=80),
            cloud(fields=[*xyz[:2], PointField(name='z', offset=8, datatype=99, count=1)]),
            cloud(row_step=7)]


def _bad_fixes() -> list[NavSatFix]:
    fixes = []
    for latitude, covariance_type in ((123.0, 0), (float('nan'), 0), (10.0, 9)):
        fix = NavSatFix(latitude=latitude, longitude=5.0, altitude=1.0,
                        position_covariance_type=covariance_type)
        fix.status.status = 0
        fixes.append(fix)
    return fixes


def _good_image() -> Image:
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    return conversions.numpy_to_image(rgb, 'rgb8')


def _good_cloud() -> PointCloud2:
    xyzi = np.random.default_rng(1).uniform(0, 10, (100, 4)).astype(np.float32)
    return conversions.create_cloud_xyzi(None, xyzi)


def _good_fix() -> NavSatFix:
    fix = NavSatFix(latitude=48.0, longitude=11.0, altitude=500.0)
    fix.status.status = 0
    return fix


CASES = [
    (CameraNode, 'camera', Image, 'camera/image_raw', _bad_images, _good_image, []),
    (CameraNode, 'camera', CompressedImage, 'camera/image_raw/compressed',
     lambda: [CompressedImage(format='jpeg', data=b'not a jpeg at all'),
              CompressedImage(format='h264', data=bytes(100))],
     lambda: conversions.rgb8_to_compressed(np.zeros((48, 64, 3), np.uint8)),
     [Parameter('input_transport', value='compressed')]),
    (LidarNode, 'lidar', PointCloud2, 'lidar/points', _bad_clouds, _good_cloud, []),
    (GpsNode, 'gps', NavSatFix, 'gps/fix', _bad_fixes, _good_fix, []),
]


@pytest.mark.parametrize('node_class, sensor, msg_type, topic, bad, good, overrides', CASES)
def test_every_bad_message_is_counted_and_the_node_keeps_working(
        node_class, sensor, msg_type, topic, bad, good, overrides):
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    node = node_class(context=context, parameter_overrides=overrides)
    probe = rclpy.create_node('rejection_probe', context=context)
    for n in (node, probe):
        executor.add_node(n)
    try:
        pub = probe.create_publisher(msg_type, topic, qos_profile_sensor_data)
        health = Collector(probe, DiagnosticArray, f'{sensor}/health')
        diagnostics = Collector(probe, DiagnosticArray, '/diagnostics')
        assert spin_until(executor, lambda: pub.get_subscription_count() > 0
                          and probe.count_publishers(f'{sensor}/health') > 0, 10.0)
        bad_messages = bad()
        for k, msg in enumerate(bad_messages):
            msg.header.stamp.sec = k + 1
            pub.publish(msg)
            assert spin_until(executor, lambda k=k: node.rejections.total == k + 1, 5.0), \
                f'message {k} was not rejected: {node.rejections.by_reason}'
        good_msg = good()
        good_msg.header.stamp.sec = 100
        pub.publish(good_msg)
        assert spin_until(executor, lambda: len(health) == 1, 5.0), 'good message not processed'

        def reported() -> dict[str, str] | None:
            for msg in reversed(diagnostics.messages):
                for status in msg.status:
                    if status.name == f'fusion_nodes: {sensor}':
                        return {kv.key: kv.value for kv in status.values}
            return None
        assert spin_until(executor, lambda: (reported() or {}).get('rejected')
                          == str(len(bad_messages)), 4.0), reported()
        values = reported()
        by_reason = sum(int(v) for k, v in values.items() if k.startswith('rejected.'))
        assert by_reason == len(bad_messages) and values['processed'] == '1'
    finally:
        executor.shutdown()
        node.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=context)
