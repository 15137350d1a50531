"""Shared machinery of the three sensor nodes: counting, rejection, timing, diagnostics."""

from collections.abc import Callable
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from fusion_nodes.core.stats import RejectionCounter, RollingPercentiles
from fusion_nodes.nodes.health_msg import flatten, make_health_msg
from fusion_nodes.nodes.params import declare_all

OK = DiagnosticStatus.OK[0] if isinstance(DiagnosticStatus.OK, bytes) else DiagnosticStatus.OK
WARN = OK + 1
ERROR = OK + 2
STALE = OK + 3
RELIABLE_OUTPUT = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class SensorNode(Node):
    """Base of camera_node, lidar_node and gps_node; subclasses only decode and compute."""

    def __init__(self, node_name: str, sensor: str, table: dict[str, object],
                 health_names: tuple[str, ...], **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.sensor = sensor
        self.params = declare_all(self, table)
        self.health_names = health_names
        self.received = 0
        self.processed = 0
        self.rejections = RejectionCounter()
        self.processing_ms = RollingPercentiles(1000)
        self.last_health: np.ndarray | None = None
        self._last_health_level = OK
        self._last_health_message = 'no data yet'
        self._last_receive = None
        self._period_received = 0
        self._period_start = time.monotonic()
        self.health_pub = self.create_publisher(
            DiagnosticArray, f'{sensor}/health', RELIABLE_OUTPUT)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(float(self.params['diagnostics_period_s']), self._publish_diagnostics)

    def process_message(self, msg, process: Callable[[object], None]) -> None:
        """Run process(msg), timing it; a ValueError rejects the message, counted and logged."""
        self.received += 1
        self._period_received += 1
        self._last_receive = time.monotonic()
        start = time.perf_counter()
        try:
            process(msg)
        except ValueError as error:
            self.reject(str(error))
            return
        self.processing_ms.add((time.perf_counter() - start) * 1e3)
        self.processed += 1

    def reject(self, detail: str) -> None:
        """Count a rejected message under its reason and warn, throttled."""
        reason = detail.split(':', 1)[0][:80]
        self.rejections.add(reason)
        self.get_logger().warning(
            f'rejected {self.sensor} message ({self.rejections.total} so far): {detail}',
            throttle_duration_sec=float(self.params['warn_throttle_s']))

    def publish_health(self, header, health: np.ndarray, level: int, message: str,
                       extra: dict[str, float]) -> None:
        """Publish this message's health features, stamped like the message."""
        self.last_health = health
        self._last_health_level = level
        self._last_health_message = message
        values = flatten('health', self.health_names, health)
        values.update(extra)
        self.health_pub.publish(make_health_msg(header, self.sensor, level, message, values))

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        elapsed = max(now - self._period_start, 1e-9)
        rate = self._period_received / elapsed
        self._period_received = 0
        self._period_start = now
        if self._last_receive is None:
            level, message = STALE, 'no input received yet'
        elif now - self._last_receive > 2.0:
            level, message = STALE, f'no input for {now - self._last_receive:.1f} s'
        else:
            level, message = self._last_health_level, self._last_health_message
        values = {
            'received': self.received,
            'processed': self.processed,
            'rejected': self.rejections.total,
            'rate_hz': round(rate, 2),
            'processing_ms_p50': round(self.processing_ms.percentile(50), 3),
            'processing_ms_p99': round(self.processing_ms.percentile(99), 3),
        }
        values.update({f'rejected.{r}': n for r, n in self.rejections.by_reason.items()})
        if self.last_health is not None:
            values.update(flatten('health', self.health_names, self.last_health))
        status = DiagnosticStatus(
            level=bytes([level]), name=f'fusion_nodes: {self.sensor}', message=message,
            hardware_id=self.get_fully_qualified_name(),
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)
