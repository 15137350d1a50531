"""Synthetic sensor load: camera images and lidar clouds at fixed rates, for tests and benches.

Run as its own process (python -m fusion_nodes.tools.load_publisher), it waits until the
sensor nodes subscribe, publishes for --duration seconds on a drift-free schedule and prints
one JSON line with what it sent, so the test can count what came out the other side.
"""

import argparse
import json
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, PointCloud2, PointField

from fusion_nodes.tools import dds_env


def make_cloud_template(points: int, seed: int = 0) -> PointCloud2:
    """A PointCloud2 of x, y, z, intensity (float32), ring (uint16), time (float32)."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype({'names': ['x', 'y', 'z', 'intensity', 'ring', 'time'],
                      'formats': ['<f4', '<f4', '<f4', '<f4', '<u2', '<f4'],
                      'offsets': [0, 4, 8, 12, 16, 18], 'itemsize': 22})
    array = np.zeros(points, dtype)
    array['x'] = rng.uniform(-40, 40, points)
    array['y'] = rng.uniform(-40, 40, points)
    array['z'] = rng.uniform(-1.8, 2.0, points)
    array['intensity'] = rng.uniform(0, 1, points)
    array['ring'] = np.arange(points) % 32
    array['time'] = np.linspace(0.0, 0.1, points)
    fields = [PointField(name=n, offset=o, datatype=d, count=1) for n, o, d in (
        ('x', 0, PointField.FLOAT32), ('y', 4, PointField.FLOAT32), ('z', 8, PointField.FLOAT32),
        ('intensity', 12, PointField.FLOAT32), ('ring', 16, PointField.UINT16),
        ('time', 18, PointField.FLOAT32))]
    cloud = PointCloud2(height=1, width=points, fields=fields, is_bigendian=False,
                        point_step=22, row_step=22 * points, is_dense=True)
    cloud.header.frame_id = 'lidar'
    cloud.data = array.tobytes()
    return cloud


def make_image_template(width: int, height: int, seed: int = 0) -> Image:
    rng = np.random.default_rng(seed)
    image = Image(height=height, width=width, encoding='rgb8', is_bigendian=0, step=width * 3)
    image.header.frame_id = 'camera_optical'
    image.data = rng.integers(0, 255, height * width * 3, dtype=np.uint8).tobytes()
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--duration', type=float, default=5.0)
    parser.add_argument('--camera-rate', type=float, default=30.0)
    parser.add_argument('--lidar-rate', type=float, default=10.0)
    parser.add_argument('--points', type=int, default=100_000)
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--discovery-timeout', type=float, default=20.0)
    args = parser.parse_args(argv)

    dds_env.apply_to_current_process()
    rclpy.init()
    node = rclpy.create_node('sensor_load_publisher')
    camera_pub = node.create_publisher(Image, 'camera/image_raw', qos_profile_sensor_data)
    lidar_pub = node.create_publisher(PointCloud2, 'lidar/points', qos_profile_sensor_data)
    image = make_image_template(args.width, args.height)
    cloud = make_cloud_template(args.points)
    try:
        deadline = time.monotonic() + args.discovery_timeout
        while (camera_pub.get_subscription_count() == 0
               or lidar_pub.get_subscription_count() == 0):
            if time.monotonic() > deadline:
                print(json.dumps({'error': 'no subscribers discovered'}), flush=True)
                return 1
            rclpy.spin_once(node, timeout_sec=0.05)
        time.sleep(0.5)  # let the reader side finish matching too
        camera_count = int(args.duration * args.camera_rate)
        lidar_count = int(args.duration * args.lidar_rate)
        schedule = sorted([(k / args.camera_rate, 'camera') for k in range(camera_count)]
                          + [(k / args.lidar_rate, 'lidar') for k in range(lidar_count)])
        sent = {'camera': [], 'lidar': []}
        start = time.monotonic()
        start_ns = time.time_ns()
        for due, sensor in schedule:
            delay = start + due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            stamp_ns = start_ns + int(due * 1e9)
            msg = image if sensor == 'camera' else cloud
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
            (camera_pub if sensor == 'camera' else lidar_pub).publish(msg)
            sent[sensor].append(stamp_ns)
        time.sleep(0.5)
        print(json.dumps({'sent': sent, 'wall_s': time.monotonic() - start}), flush=True)
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main())
