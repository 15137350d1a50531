"""Per-message processing time of each sensor node (decode + preprocess + health + publish).

The nodes run in-process and get real messages straight into their processing path, so
the figures are the nodes' own cost without DDS transport. Baseline in the same run: the
cost of only copying the message's data buffer, the floor any node pays.
"""

import time

import numpy as np
import rclpy
from rclpy.parameter import Parameter
from sensor_msgs.msg import NavSatFix

from fusion_nodes.core.geodesy import EnuFrame
from fusion_nodes.tools import dds_env
from fusion_nodes.tools.load_publisher import make_cloud_template, make_image_template

ROUNDS = 200


def _time_node(node, messages, period_ns: int | None) -> np.ndarray:
    """Per-message ms. With period_ns, stamps advance by it as a live sensor's do (the mount
    checks compare each message with older ones and restart when time steps back)."""
    times = []
    for k in range(ROUNDS):
        msg = messages[k % len(messages)]
        if period_ns is not None:
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(k * period_ns, 10 ** 9)
        start = time.perf_counter()
        node._process(msg)
        times.append((time.perf_counter() - start) * 1e3)
    return np.array(times)


def _copy_floor(messages) -> float:
    start = time.perf_counter()
    for k in range(ROUNDS):
        bytes(messages[k % len(messages)].data)
    return (time.perf_counter() - start) * 1e3 / ROUNDS


def _fixes() -> list[NavSatFix]:
    frame = EnuFrame(48.1, 11.6, 500.0)
    fixes = []
    for k in range(50):
        lat, lon, alt = frame.to_geodetic([k * 1.0, 0.2 * k, 0.0])
        fix = NavSatFix(latitude=lat, longitude=lon, altitude=alt,
                        position_covariance=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 4.0],
                        position_covariance_type=2)
        fix.status.status = 0  # STATUS_FIX: the message default (-2, unknown) is rejected
        fix.header.stamp.sec, fix.header.stamp.nanosec = divmod(k * 100_000_000, 10 ** 9)
        fixes.append(fix)
    return fixes


def run() -> None:
    """Print p50/p99 per node against the buffer-copy floor."""
    from fusion_nodes.nodes.camera_node import CameraNode
    from fusion_nodes.nodes.gps_node import GpsNode
    from fusion_nodes.nodes.lidar_node import LidarNode

    dds_env.apply_to_current_process()
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        images = [make_image_template(640, 480, seed) for seed in range(4)]
        clouds = [make_cloud_template(100_000, seed) for seed in range(2)]
        no_mount_check = [Parameter('mount_check', value=False)]
        cases = (
            ('camera_node (640x480 rgb8)', CameraNode, images, 33_333_333, []),
            ('  without mount_check', CameraNode, images, 33_333_333, no_mount_check),
            ('lidar_node (100k points)', LidarNode, clouds, 100_000_000, []),
            ('  without mount_check', LidarNode, clouds, 100_000_000, no_mount_check),
            ('gps_node (NavSatFix)', GpsNode, _fixes(), None, []),
        )
        print(f'{"node":<30} {"p50 ms":>8} {"p99 ms":>8} {"copy floor ms":>14} {"x floor":>8}')
        for label, node_class, messages, period_ns, overrides in cases:
            node = node_class(context=context, parameter_overrides=overrides)
            try:
                _time_node(node, messages[:2], period_ns)  # warm caches and lazy imports
                times = _time_node(node, messages, period_ns)
            finally:
                node.destroy_node()
            floor = _copy_floor(messages) if hasattr(messages[0], 'data') else float('nan')
            p50, p99 = np.percentile(times, [50, 99])
            print(f'{label:<30} {p50:8.3f} {p99:8.3f} {floor:14.3f} {p50 / floor:8.1f}')
    finally:
        rclpy.shutdown(context=context)
