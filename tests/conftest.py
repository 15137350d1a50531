"""Test setup: every rclpy process in the suite runs on loopback DDS in its own domain."""

from fusion_nodes.tools import dds_env

# Before any test imports rclpy: the RMW reads these at rclpy.init, and children inherit them.
dds_env.apply_to_current_process()
