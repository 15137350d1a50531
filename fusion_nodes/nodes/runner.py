"""One main() body for every node executable (Humble/Jazzy-safe init and shutdown)."""

from collections.abc import Callable
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    """Init rclpy, build the node, spin until shutdown; a bad setting exits 2 with the reason."""
    rclpy.init(args=args)
    node = None
    try:
        node = factory()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, FileNotFoundError) as error:
        # Startup validation: refuse to run half-configured rather than limp along.
        print(f'[fusion_nodes] startup failed: {error}', file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
