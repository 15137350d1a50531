"""Watches a running fusion stack from outside: rate, latency, gates, diagnostics, pictures.

Used by `make demo`, the replay tests and the end-to-end benchmark. Latency is measured on
this process's clock alone: a camera frame's arrival here to the arrival here of the fused
output carrying the same stamp, so bag stamps and sensor clock offsets don't enter it.
"""

from dataclasses import dataclass, field
from pathlib import Path
import time

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Vector3Stamped
from nav_msgs.msg import Odometry
import numpy as np
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from fusion_nodes import conversions
from fusion_nodes.core.config import SENSORS
from fusion_nodes.core.postprocess import CLASS_COLOURS

_RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
_DIAGNOSTIC_LEVELS = ('OK', 'WARN', 'ERROR', 'STALE')
# Diagnostic values the report prints, so a lost frame can be traced to the node that lost it.
_COUNTERS = ('received', 'processed', 'rejected', 'published', 'fallback_frames',
             'lidar_motion_compensated', 'lidar_not_compensated', 'matched', 'missing',
             'invalid', 'unpaired', 'gate', 'offset_ms')


@dataclass
class ObserverReport:
    camera_frames: int
    fused_frames: int
    fused_matched: int
    output_rate_hz: float
    latency_ms: list[float]
    gate_timeline: list[tuple[float, np.ndarray]]
    diagnostics: dict[str, tuple[str, str]] = field(default_factory=dict)
    counters: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def coverage(self) -> float:
        """Fraction of camera frames that came out fused (matched by stamp)."""
        return self.fused_matched / self.camera_frames if self.camera_frames else 0.0

    def text(self) -> str:
        lines = [f'camera frames in: {self.camera_frames}, fused out: {self.fused_frames} '
                 f'({100 * self.coverage:.1f} % of camera frames), '
                 f'output rate {self.output_rate_hz:.1f} Hz']
        if self.latency_ms:
            p50, p99 = np.percentile(self.latency_ms, [50, 99])
            lines.append(f'end-to-end latency (camera in -> fused out): p50 {p50:.1f} ms, '
                         f'p99 {p99:.1f} ms over {len(self.latency_ms)} frames')
        lines.append('gates over time (mean per second of bag time):')
        lines.append('    t[s]  ' + '  '.join(f'{s:>6}' for s in SENSORS))
        for second, gates in _per_second(self.gate_timeline):
            lines.append(f'  {second:6.0f}  ' + '  '.join(f'{g:6.2f}' for g in gates))
        for name, (level, message) in sorted(self.diagnostics.items()):
            counts = ', '.join(f'{k} {v}' for k, v in self.counters.get(name, {}).items())
            suffix = f' ({counts})' if counts else ''
            lines.append(f'diagnostics {name}: {level} {message}{suffix}')
        return '\n'.join(lines)


def _per_second(timeline: list[tuple[float, np.ndarray]]) -> list[tuple[float, np.ndarray]]:
    buckets: dict[int, list[np.ndarray]] = {}
    for t, gates in timeline:
        buckets.setdefault(int(t), []).append(gates)
    return [(second, np.mean(values, axis=0)) for second, values in sorted(buckets.items())]


class FusionObserver(Node):
    """Subscribes to the camera input, the fusion outputs and /diagnostics."""

    def __init__(self, camera_transport: str = 'raw', keep_overlays_every_s: float = 4.0,
                 **kwargs) -> None:
        super().__init__('fusion_observer', **kwargs)
        # Latest arrival per stamp: a looping bag repeats stamps, so events are counted too.
        self.camera_arrival: dict[int, int] = {}
        self.camera_count = 0
        self.fused_count = 0
        self.fused_matched = 0
        self.fused_arrivals: list[int] = []
        self.latency_events: list[tuple[int, float]] = []
        self.gates: list[tuple[int, np.ndarray]] = []
        self.semantic: dict[int, np.ndarray] = {}
        self.ego: dict[int, np.ndarray] = {}
        self.ego_variance: dict[int, np.ndarray] = {}
        self.overlays: list[tuple[int, np.ndarray]] = []
        self.diagnostics: dict[str, tuple[str, str, dict[str, str]]] = {}
        self.diagnostic_history: list[tuple[int, str, str, dict[str, str]]] = []
        self._overlay_period_ns = int(keep_overlays_every_s * 1e9)
        camera_type = CompressedImage if camera_transport == 'compressed' else Image
        camera_topic = ('camera/image_raw/compressed' if camera_transport == 'compressed'
                        else 'camera/image_raw')
        self.create_subscription(camera_type, camera_topic, self._on_camera,
                                 qos_profile_sensor_data)
        self.create_subscription(Vector3Stamped, 'fusion/gates', self._on_gates, _RELIABLE)
        self.create_subscription(Image, 'fusion/semantic', self._on_semantic, _RELIABLE)
        self.create_subscription(Odometry, 'fusion/ego', self._on_ego, _RELIABLE)
        self.create_subscription(Image, 'fusion/overlay', self._on_overlay, _RELIABLE)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics,
                                 _RELIABLE)

    def _on_camera(self, msg) -> None:
        self.camera_arrival[conversions.stamp_to_ns(msg.header.stamp)] = time.monotonic_ns()
        self.camera_count += 1

    def _on_gates(self, msg: Vector3Stamped) -> None:
        stamp = conversions.stamp_to_ns(msg.header.stamp)
        arrival = time.monotonic_ns()
        self.fused_count += 1
        self.fused_arrivals.append(arrival)
        camera_arrival = self.camera_arrival.get(stamp)
        if camera_arrival is not None:
            self.fused_matched += 1
            self.latency_events.append((arrival, (arrival - camera_arrival) / 1e6))
        self.gates.append((stamp, np.array([msg.vector.x, msg.vector.y, msg.vector.z])))

    def _on_semantic(self, msg: Image) -> None:
        self.semantic[conversions.stamp_to_ns(msg.header.stamp)] = semantic_to_classes(
            conversions.image_to_numpy(msg))

    def _on_ego(self, msg: Odometry) -> None:
        stamp = conversions.stamp_to_ns(msg.header.stamp)
        self.ego[stamp] = conversions.planar_twist(msg)
        self.ego_variance[stamp] = conversions.planar_twist_variance(msg)

    def _on_overlay(self, msg: Image) -> None:
        stamp = conversions.stamp_to_ns(msg.header.stamp)
        if not self.overlays or stamp - self.overlays[-1][0] >= self._overlay_period_ns:
            self.overlays.append((stamp, conversions.image_to_numpy(msg).copy()))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            level = status.level[0] if isinstance(status.level, bytes) else int(status.level)
            values = {kv.key: kv.value for kv in status.values}
            entry = (_DIAGNOSTIC_LEVELS[min(level, 3)], status.message, values)
            self.diagnostics[status.name] = entry
            self.diagnostic_history.append((time.monotonic_ns(), status.name, *entry[:2],
                                            values))

    def wait_for_outputs(self, stack, timeout_s: float) -> bool:
        """Spin until every node of the stack is up and wired, or a node dies."""
        import rclpy
        deadline = time.monotonic() + timeout_s
        topics = ('fusion/gates', 'camera/features', 'lidar/bev', 'gps/health')
        while time.monotonic() < deadline:
            if stack is not None and not stack.alive():
                return False
            if all(self.count_publishers(t) > 0 for t in topics):
                return True
            rclpy.spin_once(self, timeout_sec=0.1)
        return False

    def report(self) -> ObserverReport:
        latency = [ms for _, ms in self.latency_events]
        arrivals = self.fused_arrivals
        span_s = (arrivals[-1] - arrivals[0]) / 1e9 if len(arrivals) > 1 else 0.0
        rate = (len(arrivals) - 1) / span_s if span_s > 0 else 0.0
        start = min(s for s, _ in self.gates) if self.gates else 0
        timeline = [((s - start) / 1e9, g) for s, g in sorted(self.gates, key=lambda x: x[0])]
        diagnostics = {name: (level, message) for name, (level, message, _)
                       in self.diagnostics.items() if name.startswith('fusion_nodes')}
        counters = {name: {k: values[k] for k in _COUNTERS if k in values}
                    for name, (_, _, values) in self.diagnostics.items()}
        return ObserverReport(self.camera_count, self.fused_count, self.fused_matched, rate,
                              latency, timeline, diagnostics, counters)


def semantic_to_classes(rgb: np.ndarray) -> np.ndarray:
    """Invert fusion/semantic's colour coding back to (rows, cols) class ids in grid order."""
    flat = rgb.reshape(-1, 3).astype(np.int32)
    codes = flat[:, 0] * 65536 + flat[:, 1] * 256 + flat[:, 2]
    palette = CLASS_COLOURS.astype(np.int32)
    palette_codes = palette[:, 0] * 65536 + palette[:, 1] * 256 + palette[:, 2]
    classes = np.full(codes.shape, -1, np.int64)
    for class_id, code in enumerate(palette_codes):
        classes[codes == code] = class_id
    if (classes < 0).any():
        raise ValueError('semantic image holds colours outside the class palette')
    return classes.reshape(rgb.shape[:2])[::-1, ::-1]


def write_report_picture(observer: FusionObserver, path: Path) -> Path:
    """Overlay frames on top, the gate timeline below; returns the written path."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    overlays = observer.overlays[:4]
    report = observer.report()
    columns = max(len(overlays), 1)
    figure = plt.figure(figsize=(4 * columns, 7.5))
    start = min((s for s, _ in observer.gates), default=0)
    for k, (stamp, image) in enumerate(overlays):
        axis = figure.add_subplot(2, columns, k + 1)
        axis.imshow(image)
        axis.set_title(f't = {(stamp - start) / 1e9:.1f} s', fontsize=9)
        axis.axis('off')
    timeline = figure.add_subplot(2, 1, 2)
    if report.gate_timeline:
        t = np.array([x for x, _ in report.gate_timeline])
        gates = np.array([g for _, g in report.gate_timeline])
        for k, sensor in enumerate(SENSORS):
            timeline.plot(t, gates[:, k], label=sensor)
    timeline.set_ylim(-0.05, 1.05)
    timeline.set_xlabel('bag time since first fused frame [s]')
    timeline.set_ylabel('gate')
    timeline.set_title('per-sensor gates')
    timeline.legend(loc='lower left')
    timeline.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
