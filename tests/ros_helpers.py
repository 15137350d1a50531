"""Helpers for tests that run real rclpy nodes: spinning with deadlines, collecting messages."""

from collections.abc import Callable
import time

from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


def spin_until(executor: SingleThreadedExecutor, done: Callable[[], bool],
               timeout_s: float) -> bool:
    """Spin until done() or the deadline; returns done()."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            return True
        executor.spin_once(timeout_sec=0.02)
    return done()


class Collector:
    """Subscribes to a topic and keeps every message it receives."""

    def __init__(self, node: Node, msg_type, topic: str, qos: QoSProfile = RELIABLE) -> None:
        self.messages = []
        self.subscription = node.create_subscription(msg_type, topic, self.messages.append, qos)

    def __len__(self) -> int:
        return len(self.messages)
