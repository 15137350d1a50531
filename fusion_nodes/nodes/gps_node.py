"""gps_node: NavSatFix to local ENU odometry with velocity, jump gating and health."""

import sys

from nav_msgs.msg import Odometry
import numpy as np
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import NavSatFix

from fusion_nodes import conversions
from fusion_nodes.core.align.signatures import GpsSpeedTrack
from fusion_nodes.core.assessment import assess_gps
from fusion_nodes.core.gnss_types import STATUS_FIX
from fusion_nodes.core.gps import (
    GPS_FEATURES, GPS_HEALTH_FEATURES, GpsSample, GpsTracker, GpsTrackerConfig)
from fusion_nodes.nodes.health_msg import flatten
from fusion_nodes.nodes.params import GPS_PARAMS
from fusion_nodes.nodes.runner import run_node
from fusion_nodes.nodes.sensor_node import RELIABLE_OUTPUT, SensorNode


class GpsNode(SensorNode):
    """Publishes gps/odometry (ENU, origin from a param or the first good fix) and health."""

    def __init__(self, **kwargs) -> None:
        super().__init__('gps_node', 'gps', GPS_PARAMS, GPS_HEALTH_FEATURES, **kwargs)
        p = self.params
        self.tracker = GpsTracker(GpsTrackerConfig.from_params(p))
        # The aligner's motion signature: speed from a fit through the last second of raw
        # fixes, not the Kalman velocity, whose lag would shift it in time.
        self.speed_track = GpsSpeedTrack()
        self._odom_frame = str(p['odom_frame'])
        self.odom_pub = self.create_publisher(Odometry, 'gps/odometry', RELIABLE_OUTPUT)
        self.create_subscription(NavSatFix, 'gps/fix', self._on_fix, qos_profile_sensor_data)

    def _on_fix(self, msg: NavSatFix) -> None:
        self.process_message(msg, self._process)

    def _process(self, msg: NavSatFix) -> None:
        fix = conversions.navsatfix_to_fix(msg)
        sample = self.tracker.update(fix)
        if sample.valid:
            self.odom_pub.publish(self._odometry(msg, sample))
        level, message = assess_gps(sample)
        extra = flatten('feature', GPS_FEATURES, sample.features)
        extra['signature'] = self.speed_track.update(fix.stamp_ns, self._fix_enu(fix))
        extra['resets'] = float(self.tracker.resets)
        self.publish_health(msg.header, sample.health, level, message, extra)

    def _fix_enu(self, fix) -> np.ndarray | None:
        """The fix's own position in the tracker's ENU frame (None without a fix)."""
        if self.tracker.frame is None or fix.status < STATUS_FIX:
            return None
        return np.asarray(self.tracker.frame.to_enu(fix.latitude, fix.longitude, fix.altitude))

    def _odometry(self, msg: NavSatFix, sample: GpsSample) -> Odometry:
        odom = Odometry()
        odom.header.stamp = msg.header.stamp
        odom.header.frame_id = self._odom_frame
        # No heading from a single antenna: the twist is ENU-aligned, like navsat_transform's.
        odom.child_frame_id = msg.header.frame_id or 'gps'
        odom.pose.pose.position.x, odom.pose.pose.position.y, odom.pose.pose.position.z = (
            float(v) for v in sample.position_enu)
        odom.pose.pose.orientation.w = 1.0
        pose_cov = np.full((6, 6), 0.0)
        pose_cov[:3, :3] = sample.position_covariance
        pose_cov[3:, 3:] = np.eye(3) * 1e6  # orientation unknown
        if sample.jump:
            pose_cov[:3, :3] *= 100.0
        odom.pose.covariance = pose_cov.ravel().tolist()
        odom.twist.twist.linear.x = float(sample.velocity_enu[0])
        odom.twist.twist.linear.y = float(sample.velocity_enu[1])
        twist_cov = np.eye(6) * 1e6
        twist_cov[:2, :2] = sample.velocity_covariance
        odom.twist.covariance = twist_cov.ravel().tolist()
        return odom


def main(args: list[str] | None = None) -> None:
    """Entry point: ros2 run fusion_nodes gps_node."""
    sys.exit(run_node(GpsNode, args))


if __name__ == '__main__':
    main()
