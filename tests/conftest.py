"""Test setup: every rclpy process in the suite runs on loopback DDS in its own domain."""

import pytest

from fusion_nodes.tools import dds_env

# Before any test imports rclpy: the RMW reads these at rclpy.init, and children inherit them.
dds_env.apply_to_current_process()


@pytest.fixture
def rclpy_session():
    """rclpy initialised for one test, shut down after it."""
    import rclpy
    rclpy.init()
    yield
    rclpy.try_shutdown()
