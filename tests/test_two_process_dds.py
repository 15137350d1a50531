"""Separate processes over loopback DDS: load publisher -> camera/lidar nodes -> this process.

100k-point clouds at 10 Hz and 640x480 rgb8 images at 30 Hz for 5 s; at least 98 % of the
inputs must come out preprocessed and reach this (subscriber) process.
"""

import json
import os
import subprocess
import sys
import time

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image

from fusion_nodes.conversions import stamp_to_ns
from fusion_nodes.tools import dds_env
from fusion_nodes.tools.bringup import stop_process
from tests.ros_helpers import Collector, spin_until

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _start(module: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, '-m', module], env=dds_env.isolated_env(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sensor_nodes_as_processes_keep_98_percent():
    nodes = [_start('fusion_nodes.nodes.camera_node'), _start('fusion_nodes.nodes.lidar_node')]
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    subscriber = rclpy.create_node('dds_test_subscriber', context=context)
    executor.add_node(subscriber)
    publisher = None
    try:
        features = Collector(subscriber, Image, 'camera/features')
        bev = Collector(subscriber, Image, 'lidar/bev')
        assert spin_until(executor, lambda: subscriber.count_publishers('camera/features') > 0
                          and subscriber.count_publishers('lidar/bev') > 0, 30.0), \
            'sensor node processes did not come up'
        publisher = _start('fusion_nodes.tools.load_publisher')
        deadline = time.monotonic() + 60.0
        while publisher.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.02)
        report_lines = publisher.stdout.read().strip().splitlines()
        assert publisher.returncode == 0, '\n'.join(report_lines)
        sent = json.loads(report_lines[-1])['sent']
        spin_until(executor, lambda: len(features) >= len(sent['camera'])
                   and len(bev) >= len(sent['lidar']), 5.0)
        for sensor, collector in (('camera', features), ('lidar', bev)):
            received = {stamp_to_ns(m.header.stamp) for m in collector.messages}
            kept = len(received & set(sent[sensor])) / len(sent[sensor])
            print(f'{sensor}: {kept:.3f} of {len(sent[sensor])} messages came out preprocessed')
            assert kept >= 0.98, f'{sensor}: {kept:.3f} of {len(sent[sensor])} came through'
        assert len(sent['camera']) == 150 and len(sent['lidar']) == 50
    finally:
        for process in nodes + ([publisher] if publisher else []):
            stop_process(process)
        executor.shutdown()
        subscriber.destroy_node()
        rclpy.shutdown(context=context)
