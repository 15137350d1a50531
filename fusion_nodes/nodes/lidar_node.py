"""lidar_node: decodes any PointCloud2 layout, publishes BEV pillars and health."""

import math
import sys

import numpy as np
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, PointCloud2

from fusion_nodes import conversions
from fusion_nodes.core.align.ego_speed import ObstacleDisplacement
from fusion_nodes.core.assessment import assess_lidar, assess_lidar_mount
from fusion_nodes.core.config import BevGrid, PillarConfig, rotation_rpy
from fusion_nodes.core.lidar import (
    LIDAR_HEALTH_FEATURES, lidar_points_to_base, LidarHealthConfig, LidarHealthTracker,
    pillarize)
from fusion_nodes.core.lidar_mount import LidarMountMonitor
from fusion_nodes.core.lidar_odometry import LidarOdometry, OdometryEstimate
from fusion_nodes.nodes.health_msg import odometry_values
from fusion_nodes.nodes.params import LIDAR_PARAMS
from fusion_nodes.nodes.runner import run_node
from fusion_nodes.nodes.sensor_node import ERROR, RELIABLE_OUTPUT, SensorNode


class LidarNode(SensorNode):
    """Publishes lidar/bev (32FC4 pillars: occupancy, max height, intensity, density)."""

    def __init__(self, **kwargs) -> None:
        super().__init__('lidar_node', 'lidar', LIDAR_PARAMS, LIDAR_HEALTH_FEATURES, **kwargs)
        p = self.params
        grid = BevGrid(x_min=float(p['grid_x_min']), x_max=float(p['grid_x_max']),
                       y_min=float(p['grid_y_min']), y_max=float(p['grid_y_max']),
                       resolution=float(p['grid_resolution']))
        self.pillar_cfg = PillarConfig(
            grid=grid, z_min=float(p['z_min']), z_max=float(p['z_max']),
            obstacle_min_z=float(p['obstacle_min_z']), density_norm=float(p['density_norm']))
        translation = tuple(float(v) for v in p['extrinsic_translation'])
        rpy = tuple(float(v) for v in p['extrinsic_rpy'])
        if len(translation) != 3 or len(rpy) != 3:
            raise ValueError('extrinsic_translation and extrinsic_rpy need 3 values each')
        self._translation = translation
        self._rotation = None if not any(rpy) else rotation_rpy(*rpy)
        self.tracker = LidarHealthTracker(LidarHealthConfig(
            expected_points=int(p['expected_points']), near_range=float(p['near_range'])))
        self.mount_monitor = LidarMountMonitor(grid) if p['mount_check'] else None
        # Rides on the mount check's registrations: none without it.
        self.odometry = LidarOdometry() if p['mount_check'] else None
        self.displacement = ObstacleDisplacement()
        self.bev_pub = self.create_publisher(Image, 'lidar/bev', RELIABLE_OUTPUT)
        self.create_subscription(PointCloud2, 'lidar/points', self._on_cloud,
                                 qos_profile_sensor_data)

    def _on_cloud(self, msg: PointCloud2) -> None:
        self.process_message(msg, self._process)

    def _process(self, msg: PointCloud2) -> None:
        xyzi = conversions.cloud_to_xyzi(msg, skip_nans=True)
        total = int(msg.width) * int(msg.height)
        health = self.tracker.update(xyzi, total)
        base = lidar_points_to_base(xyzi, self._translation, self._rotation)
        bev = pillarize(base, self.pillar_cfg)
        out = conversions.numpy_to_image(
            np.ascontiguousarray(bev.transpose(1, 2, 0)), '32FC4', header=msg.header)
        self.bev_pub.publish(out)
        level, message = assess_lidar(health)
        extra = {}
        if self.mount_monitor is not None:
            stamp_ns = conversions.stamp_to_ns(msg.header.stamp)
            # A frozen or empty scan would only feed the check a wrong match. The odometry
            # skips it too, as fusion-eval's replay does: its plausibility check would take
            # an estimate nobody receives as the last one given.
            scan_usable = level < ERROR
            mount = (self.mount_monitor.update(stamp_ns, bev[0])
                     if scan_usable else self.mount_monitor.state())
            level, message = assess_lidar_mount(mount, level, message)
            extra.update({'mount.heading_deg': mount.heading_deg,
                          'mount.cusum_deg': mount.cusum_deg, 'mount.steps': mount.steps,
                          'mount.travel_heading_deg': mount.travel_heading_deg,
                          'mount.jumps': mount.jumps})
            odometry = (self.odometry.update(stamp_ns, mount.motion, mount.motion_span_ns)
                        if scan_usable else OdometryEstimate())
            # A scan in ERROR moves no one: its odometry would be the fusion's to drop anyway.
            extra.update(odometry_values(odometry if level < ERROR else OdometryEstimate()))
            extra['odometry.implausible'] = self.odometry.implausible
            extra['odometry.speed_rejected'] = self.odometry.speed_rejected
        if level >= ERROR:
            # A frozen sweep shows a stop, a turned one a wrong shift: no signature from them.
            self.displacement.reset()
            extra['signature'] = math.nan
        else:
            extra['signature'] = self.displacement.update(base)
        self.publish_health(msg.header, health, level, message, extra)


def main(args: list[str] | None = None) -> None:
    """Entry point: ros2 run fusion_nodes lidar_node."""
    sys.exit(run_node(LidarNode, args))


if __name__ == '__main__':
    main()
