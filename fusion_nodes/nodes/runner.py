"""One main() body for every node executable (Humble/Jazzy-safe init and shutdown)."""

from collections.abc import Callable
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

# Errors that mean the node is misconfigured (bad param, missing or corrupt model, missing
# runtime): refuse to start with a clear message and a non-zero exit, never half-run.
STARTUP_ERRORS = (ValueError, FileNotFoundError, RuntimeError, ImportError)


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    """Init rclpy, build the node and spin until shutdown; returns the process exit code."""
    rclpy.init(args=args)
    node = None
    try:
        try:
            node = factory()
        except STARTUP_ERRORS as error:
            print(f'[fusion_nodes] startup failed: {type(error).__name__}: {error}',
                  file=sys.stderr, flush=True)
            return 2
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
