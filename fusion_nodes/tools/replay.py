"""fusion-replay: publish a rosbag2 (MCAP or sqlite3) over DDS on its true log-time schedule.

Each message is published when it is due: start + (log time - window start) / rate on the
monotonic clock. Due times are computed from the start, never from the previous sleep, so no
drift builds up over hours of looping; a message published more than --late-threshold-ms after
its due time is counted late. Messages go out as their recorded CDR bytes (no deserialisation),
and a reader thread fetches and decompresses ahead of the schedule so disk and zstd never delay
a publish. With --clock, /clock follows the bag time (and jumps back to the window start on each
loop, as a robot's nodes see when a bag restarts).
"""

import argparse
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
import math
from pathlib import Path
import queue
import signal
import sys
import threading
import time

from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, qos_profile_sensor_data, QoSProfile,
                       ReliabilityPolicy)

from fusion_nodes.tools import bagio

NS_PER_S = 1_000_000_000
SENSOR_TYPES = frozenset({
    'sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage', 'sensor_msgs/msg/PointCloud2',
    'sensor_msgs/msg/NavSatFix', 'sensor_msgs/msg/CameraInfo'})
TF_STATIC = '/tf_static'
CLOCK_TOPIC = '/clock'
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
_PREFETCH_MESSAGES = 64
_MAX_WAIT_S = 0.05  # longest uninterrupted sleep, so stop() is honoured promptly
_END = object()


@dataclass(frozen=True)
class ReplayOptions:
    """How to replay; times in seconds of bag time unless named otherwise."""

    rate: float = 1.0
    loop: bool = False
    start_offset_s: float = 0.0
    duration_s: float | None = None
    topics: tuple[str, ...] | None = None
    exclude_prefixes: tuple[str, ...] = ()
    remap: Mapping[str, str] = field(default_factory=dict)
    clock_hz: float = 0.0  # 0: no /clock
    qos_overrides: Mapping[str, QoSProfile] = field(default_factory=dict)
    late_threshold_ms: float = 5.0
    wait_for_subscribers_s: float = 0.0
    # Output topics the wait is for, each with the least number of matched subscribers
    # (empty: every topic, one each). Ground truth or camera_info that nobody subscribes to
    # would otherwise always run the wait out.
    wait_topics: tuple[tuple[str, int], ...] = ()
    max_loops: int | None = None  # with loop: stop after this many passes
    # After the last message the publishers stay up this long: Fast DDS's shared-memory
    # delivery keeps a sample in the publisher's memory until each reader takes it, so a
    # publisher destroyed at once loses its last messages to readers still busy.
    linger_s: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0.0):
            raise ValueError(f'rate must be a positive number, got {self.rate}')
        if not (math.isfinite(self.start_offset_s) and self.start_offset_s >= 0.0):
            raise ValueError(f'start offset must be >= 0 s, got {self.start_offset_s}')
        if self.duration_s is not None and not (math.isfinite(self.duration_s)
                                                and self.duration_s > 0.0):
            raise ValueError(f'duration must be > 0 s, got {self.duration_s}')
        if not (math.isfinite(self.clock_hz) and 0.0 <= self.clock_hz <= 10_000.0):
            raise ValueError(f'clock rate must be in [0, 10000] Hz, got {self.clock_hz}')
        if not (math.isfinite(self.late_threshold_ms) and self.late_threshold_ms >= 0.0):
            raise ValueError(f'late threshold must be >= 0 ms, got {self.late_threshold_ms}')
        if not self.wait_for_subscribers_s >= 0.0:
            raise ValueError(f'subscriber wait must be >= 0 s, got {self.wait_for_subscribers_s}')
        if not (math.isfinite(self.linger_s) and self.linger_s >= 0.0):
            raise ValueError(f'linger must be >= 0 s, got {self.linger_s}')
        if self.max_loops is not None and self.max_loops < 1:
            raise ValueError(f'max_loops must be >= 1, got {self.max_loops}')
        for old, new in self.remap.items():
            if not old or not new:
                raise ValueError(f'remap {old!r}:={new!r} needs two topic names')


@dataclass
class ReplaySummary:
    """What a replay did: counts per published topic and how well it kept the schedule."""

    published: Counter = field(default_factory=Counter)
    skipped_topics: dict[str, str] = field(default_factory=dict)  # bag topic -> why
    late: int = 0
    max_lateness_ms: float = 0.0
    loops_completed: int = 0
    clock_messages: int = 0
    wall_s: float = 0.0
    bag_s: float = 0.0  # bag time covered, summed over loops
    interrupted: bool = False

    @property
    def total(self) -> int:
        return sum(self.published.values())

    def text(self) -> str:
        lines = [f'replay: {self.total} messages in {self.wall_s:.2f} s wall '
                 f'({self.bag_s:.2f} s of bag time, {self.loops_completed} loop(s) completed'
                 f'{", interrupted" if self.interrupted else ""})']
        for topic in sorted(self.published):
            lines.append(f'  {topic}: {self.published[topic]}')
        if self.clock_messages:
            lines.append(f'  {CLOCK_TOPIC}: {self.clock_messages} (generated)')
        for topic, why in sorted(self.skipped_topics.items()):
            lines.append(f'  skipped {topic}: {why}')
        lines.append(f'late: {self.late} messages, max lateness {self.max_lateness_ms:.2f} ms')
        return '\n'.join(lines)


def default_qos(topic: str, msgtype: str, latched: bool = False) -> QoSProfile:
    """Latched for /tf_static and topics recorded latched, sensor data QoS for sensor streams,
    reliable for the rest."""
    if topic == TF_STATIC or latched:
        return LATCHED
    if msgtype in SENSOR_TYPES:
        return qos_profile_sensor_data
    return RELIABLE


def _excluded(topic: str, prefixes: tuple[str, ...]) -> bool:
    for prefix in prefixes:
        base = prefix.rstrip('/')
        if topic == base or topic.startswith(base + '/'):
            return True
    return False


class _Prefetcher(threading.Thread):
    """Reads the bag ahead of the schedule into a bounded queue (loop index, topic, ns, CDR)."""

    def __init__(self, bag_path: Path, topics: list[str], latched: list[str], window: tuple,
                 loops: int | None, stop: threading.Event) -> None:
        super().__init__(name='replay-prefetch', daemon=True)
        self.bag_path = bag_path
        self.topics = topics
        self.latched = latched
        self.window = window
        self.loops = loops
        self.stop_event = stop
        self.items: queue.Queue = queue.Queue(maxsize=_PREFETCH_MESSAGES)
        self.error: BaseException | None = None
        self.primed = threading.Event()  # queue full, or the whole window read

    def _put(self, item) -> bool:
        if self.items.full():
            self.primed.set()
        while not self.stop_event.is_set():
            try:
                self.items.put(item, timeout=_MAX_WAIT_S)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        start, stop = self.window
        try:
            # A start offset must not lose latched data (static transforms are logged once,
            # at the start): publish what was latched before the window at once.
            if self.latched and start > 0:
                for topic, _, _, data in bagio.iter_raw(self.bag_path, self.latched, None, start):
                    if not self._put((0, topic, start, data)):
                        return
            loop = 0
            while self.loops is None or loop < self.loops:
                for topic, _, log_ns, data in bagio.iter_raw(self.bag_path, self.topics,
                                                             start, stop):
                    if not self._put((loop, topic, log_ns, data)):
                        return
                loop += 1
        except BaseException as exc:  # handed to the publishing thread, which reports it
            self.error = exc
        finally:
            self.primed.set()
            self._put(_END)


class Replayer:
    """Publishes a bag on a node, on the bag's log-time schedule; run() blocks until done."""

    def __init__(self, bag_path: str | Path, node: Node,
                 options: ReplayOptions = ReplayOptions()) -> None:
        self.bag_path = Path(bag_path)
        self.node = node
        self.options = options
        self.info = bagio.bag_info(self.bag_path)
        self._stop = threading.Event()
        self.summary = ReplaySummary()
        self._publishers = {}
        self._clock_pub = None
        self.started_ns: int | None = None  # monotonic ns of the schedule's origin, once run
        self._select_and_create_publishers()
        start = self.info.start_ns + round(options.start_offset_s * NS_PER_S)
        stop = self.info.end_ns + 1
        if options.duration_s is not None:
            stop = min(stop, start + round(options.duration_s * NS_PER_S))
        self.window = (start, stop)
        self.cycle_ns = max(stop - start, 0) + self._loop_gap_ns()

    def _select_and_create_publishers(self) -> None:
        opts = self.options
        wanted = set(opts.topics) if opts.topics is not None else None
        if wanted is not None:
            missing = wanted - set(self.info.topics)
            if missing:
                raise ValueError(f'topics not in bag {self.bag_path}: {sorted(missing)}; '
                                 f'it has {sorted(self.info.topics)}')
        for topic, info in sorted(self.info.topics.items()):
            if wanted is not None and topic not in wanted:
                continue
            if _excluded(topic, opts.exclude_prefixes):
                continue
            try:
                cls = bagio.rclpy_message_class(info.msgtype)
            except bagio.UnknownMessageType as exc:
                # Counted and reported in the summary: never dropped without a word.
                self.summary.skipped_topics[topic] = f'{info.count} messages not published: {exc}'
                self.node.get_logger().warning(f'not replaying {topic}: {exc}')
                continue
            out_topic = opts.remap.get(topic, topic)
            qos = opts.qos_overrides.get(
                topic, default_qos(topic, info.msgtype, info.transient_local))
            self._publishers[topic] = (out_topic, self.node.create_publisher(cls, out_topic, qos))
        if opts.clock_hz > 0.0:
            from rosgraph_msgs.msg import Clock
            self._clock_pub = self.node.create_publisher(
                Clock, opts.remap.get(CLOCK_TOPIC, CLOCK_TOPIC), RELIABLE)

    def _loop_gap_ns(self) -> int:
        # The bag's busiest stream keeps its period across the restart instead of the last and
        # first messages landing at the same instant.
        busiest = max((self.info.topics[t] for t in self._publishers),
                      key=lambda i: i.count, default=None)
        span = self.info.end_ns - self.info.start_ns
        if busiest is None or busiest.count < 2 or span <= 0:
            return NS_PER_S // 10
        return max(span // (busiest.count - 1), 1)

    @property
    def output_topics(self) -> dict[str, str]:
        """Bag topic -> the topic it is published on."""
        return {topic: out for topic, (out, _) in self._publishers.items()}

    def stop(self) -> None:
        """Ask run() to finish (thread- and signal-safe); it returns with the summary."""
        self._stop.set()

    def wait_for_subscribers(self, timeout_s: float,
                             topics: tuple[tuple[str, int], ...] = ()) -> list[str]:
        """Wait until the (output topic, least subscribers) pairs are met (empty: every topic
        has one); returns the topics still short. A topic not published is a ValueError.
        """
        publishers = {out: pub for out, pub in self._publishers.values()}
        unknown = sorted({t for t, _ in topics} - set(publishers))
        if unknown:
            raise ValueError(f'--wait-for topics {unknown} are not published; published: '
                             f'{sorted(publishers)}')
        watched = topics or tuple((t, 1) for t in publishers)
        deadline = time.monotonic() + timeout_s
        while True:
            unmatched = [t for t, least in watched
                         if publishers[t].get_subscription_count() < least]
            if not unmatched or time.monotonic() >= deadline or self._stop.is_set():
                return unmatched
            self._stop.wait(0.02)

    def close(self) -> None:
        """Destroy the publishers this replayer created on the node."""
        for _, pub in self._publishers.values():
            self.node.destroy_publisher(pub)
        if self._clock_pub is not None:
            self.node.destroy_publisher(self._clock_pub)
        self._publishers.clear()
        self._clock_pub = None

    def run(self) -> ReplaySummary:
        """Replay until the window (or max_loops) is done or stop() is called."""
        opts = self.options
        if opts.wait_for_subscribers_s > 0.0:
            unmatched = self.wait_for_subscribers(opts.wait_for_subscribers_s, opts.wait_topics)
            if unmatched:
                self.node.get_logger().info(f'starting without subscribers on {unmatched}')
        loops = (opts.max_loops if opts.loop else 1)
        latched = [t for t in self._publishers
                   if t == TF_STATIC or self.info.topics[t].transient_local]
        if not self._publishers:
            return self.summary
        prefetch = _Prefetcher(self.bag_path, list(self._publishers), latched, self.window,
                               loops, self._stop)
        prefetch.start()
        # The clock starts once the read-ahead is primed, so opening the bag and decompressing
        # its first chunk do not make the first messages late.
        prefetch.primed.wait(timeout=10.0)
        wall_start = time.monotonic_ns()
        self.started_ns = wall_start
        published_ns = None
        try:
            self._publish_loop(prefetch, wall_start)
            published_ns = time.monotonic_ns()
            self._stop.wait(opts.linger_s)  # returns at once after stop()
        finally:
            self._stop.set()
            prefetch.join(timeout=5.0)
            end_ns = published_ns if published_ns is not None else time.monotonic_ns()
            self.summary.wall_s = (end_ns - wall_start) / NS_PER_S
        if prefetch.error is not None:
            raise RuntimeError(f'reading {self.bag_path} failed: {prefetch.error}') \
                from prefetch.error
        return self.summary

    def _publish_loop(self, prefetch: _Prefetcher, base_ns: int) -> None:
        opts = self.options
        start = self.window[0]
        late_ns = opts.late_threshold_ms * 1e6
        clock_period_ns = NS_PER_S / opts.clock_hz if self._clock_pub is not None else 0.0
        clock_tick = 0
        loop = 0
        while True:
            item = self._next(prefetch)
            if item is _END:
                if not self.summary.interrupted and self.summary.total:
                    self.summary.loops_completed = loop + 1
                return
            loop, topic, log_ns, data = item
            self.summary.loops_completed = loop
            bag_elapsed = loop * self.cycle_ns + (log_ns - start)
            due_ns = base_ns + round(bag_elapsed / opts.rate)
            # /clock ticks falling before this message go out first, each on its own due time.
            while clock_period_ns and base_ns + clock_tick * clock_period_ns <= due_ns:
                if not self._sleep_until(base_ns + round(clock_tick * clock_period_ns)):
                    return
                tick_bag_ns = round(clock_tick * clock_period_ns * opts.rate)
                self._publish_clock(start + tick_bag_ns % self.cycle_ns)
                clock_tick += 1
            if not self._sleep_until(due_ns):
                return
            lateness = time.monotonic_ns() - due_ns
            out_topic, pub = self._publishers[topic]
            pub.publish(data if isinstance(data, bytes) else bytes(data))
            self.summary.published[out_topic] += 1
            self.summary.late += int(lateness > late_ns)
            self.summary.max_lateness_ms = max(self.summary.max_lateness_ms, lateness / 1e6)
            self.summary.bag_s = bag_elapsed / NS_PER_S

    def _next(self, prefetch: _Prefetcher):
        while not self._stop.is_set():
            try:
                return prefetch.items.get(timeout=_MAX_WAIT_S)
            except queue.Empty:
                continue
        self.summary.interrupted = True
        return _END

    def _sleep_until(self, due_ns: int) -> bool:
        """Sleep to due_ns on the monotonic clock; False when stopped meanwhile."""
        while True:
            # Checked before the due time, so a stop while a message is already due (a late
            # one, under load) is an interrupt too.
            if self._stop.is_set():
                self.summary.interrupted = True
                return False
            remaining = due_ns - time.monotonic_ns()
            if remaining <= 0:
                return True
            self._stop.wait(min(remaining / NS_PER_S, _MAX_WAIT_S))

    def _publish_clock(self, bag_ns: int) -> None:
        from rosgraph_msgs.msg import Clock
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(bag_ns, NS_PER_S)
        self._clock_pub.publish(msg)
        self.summary.clock_messages += 1


_QOS_KEYS = {
    'reliability': ('reliability', {'reliable': ReliabilityPolicy.RELIABLE,
                                    'best_effort': ReliabilityPolicy.BEST_EFFORT}),
    'durability': ('durability', {'volatile': DurabilityPolicy.VOLATILE,
                                  'transient_local': DurabilityPolicy.TRANSIENT_LOCAL}),
    'history': ('history', {'keep_last': HistoryPolicy.KEEP_LAST,
                            'keep_all': HistoryPolicy.KEEP_ALL}),
}


def load_qos_overrides(path: str | Path) -> dict[str, QoSProfile]:
    """Per-topic QoS from a ros2 bag style YAML: {topic: {reliability, durability, history,
    depth}}."""
    import yaml
    with open(path, encoding='utf-8') as handle:
        doc = yaml.safe_load(handle) or {}
    if not isinstance(doc, dict):
        raise ValueError(f'{path}: expected a mapping of topic to QoS settings')
    out = {}
    for topic, settings in doc.items():
        if not isinstance(settings, dict):
            raise ValueError(f'{path}: {topic}: expected a mapping of QoS settings')
        kwargs = {'depth': 10}
        for key, value in settings.items():
            if key == 'depth':
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f'{path}: {topic}: depth must be an int >= 1, got {value!r}')
                kwargs['depth'] = value
            elif key in _QOS_KEYS:
                name, choices = _QOS_KEYS[key]
                if str(value).lower() not in choices:
                    raise ValueError(f'{path}: {topic}: {key} must be one of '
                                     f'{sorted(choices)}, got {value!r}')
                kwargs[name] = choices[str(value).lower()]
            else:
                raise ValueError(f'{path}: {topic}: unknown QoS setting {key!r}; known: '
                                 f'depth, {", ".join(_QOS_KEYS)}')
        out[str(topic)] = QoSProfile(**kwargs)
    return out


def _wait_arg(text: str) -> tuple[str, int]:
    topic, _, count = text.partition('=')
    try:
        least = int(count) if count else 1
    except ValueError:
        least = 0
    if not topic or least < 1:
        raise argparse.ArgumentTypeError(f'expected TOPIC or TOPIC=N with N >= 1, got {text!r}')
    return topic, least


def _remap_arg(text: str) -> tuple[str, str]:
    old, sep, new = text.partition(':=')
    if not sep or not old or not new:
        raise argparse.ArgumentTypeError(f'remap must look like /old:=/new, got {text!r}')
    return old, new


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='fusion-replay',
        description='Publish a rosbag2 (directory, .mcap or .db3) over DDS at real time, on '
                    "the bag's log-time schedule. Sensor streams go out with sensor-data QoS, "
                    '/tf_static latched, everything else reliable. Prints a summary (messages '
                    'per topic, late messages, max lateness) at the end or on Ctrl-C/SIGTERM.')
    parser.add_argument('bag', type=Path, help='rosbag2 directory, or a .mcap / .db3 file')
    parser.add_argument('--rate', type=float, default=1.0,
                        help='playback speed factor: 2 plays twice as fast (default 1)')
    parser.add_argument('--loop', action='store_true',
                        help='start again at the window start when the end is reached')
    parser.add_argument('--start-offset', type=float, default=0.0, metavar='SECONDS',
                        help='skip this much bag time at the start (latched topics such as '
                             '/tf_static from before it are still published)')
    parser.add_argument('--duration', type=float, default=None, metavar='SECONDS',
                        help='play only this much bag time after the start offset')
    parser.add_argument('--topics', nargs='+', default=None, metavar='TOPIC',
                        help='publish only these bag topics (default: all)')
    parser.add_argument('--exclude-prefix', action='append', default=[], metavar='PREFIX',
                        help='do not publish topics under this prefix, e.g. /gt for the '
                             'ground truth (repeatable; default: publish everything)')
    parser.add_argument('--remap', action='append', default=[], type=_remap_arg,
                        metavar='OLD:=NEW', help='publish bag topic OLD as NEW (repeatable)')
    parser.add_argument('--clock', nargs='?', type=float, const=100.0, default=0.0,
                        metavar='HZ', help='publish /clock from the bag time at HZ '
                                           '(default 100 when given) for use_sim_time nodes')
    parser.add_argument('--qos-profile-overrides-path', '--qos-profile-overrides',
                        type=Path, default=None, metavar='YAML',
                        help='per-topic QoS, ros2 bag style: {topic: {reliability: '
                             'reliable|best_effort, durability: volatile|transient_local, '
                             'history: keep_last|keep_all, depth: N}}')
    parser.add_argument('--late-threshold-ms', type=float, default=5.0,
                        help='a message published later than this after its due time counts '
                             'as late (default 5)')
    parser.add_argument('--wait-for-subscribers', type=float, default=2.0, metavar='SECONDS',
                        help='before starting, wait up to this long for every published topic '
                             'to have a subscriber, so discovery does not eat the first '
                             'messages (default 2; 0 starts at once)')
    parser.add_argument('--linger', type=float, default=1.0, metavar='SECONDS',
                        help='after the last message, keep publishing endpoints up this long '
                             'so that busy subscribers still get it (default 1)')
    parser.add_argument('--wait-for', action='append', default=[], type=_wait_arg,
                        metavar='TOPIC[=N]',
                        help='an output topic the subscriber wait is for, with at least N '
                             'subscribers (default 1; repeatable; default: every published '
                             'topic, one each)')
    return parser


def options_from_args(args: argparse.Namespace) -> ReplayOptions:
    """ReplayOptions from parsed command-line arguments."""
    overrides = (load_qos_overrides(args.qos_profile_overrides_path)
                 if args.qos_profile_overrides_path is not None else {})
    return ReplayOptions(
        rate=args.rate, loop=args.loop, start_offset_s=args.start_offset,
        duration_s=args.duration, topics=tuple(args.topics) if args.topics else None,
        exclude_prefixes=tuple(args.exclude_prefix), remap=dict(args.remap),
        clock_hz=args.clock, qos_overrides=overrides, late_threshold_ms=args.late_threshold_ms,
        wait_for_subscribers_s=args.wait_for_subscribers, wait_topics=tuple(args.wait_for),
        linger_s=args.linger)


def split_ros_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(our arguments, rclpy's): only what follows --ros-args goes to rcl, so that our own
    OLD:=NEW arguments are never taken for global remapping rules."""
    if '--ros-args' not in argv:
        return argv, [sys.argv[0]]
    at = argv.index('--ros-args')
    return argv[:at], [sys.argv[0], *argv[at:]]


def main(argv: list[str] | None = None) -> int:
    argv, ros_args = split_ros_args(sys.argv[1:] if argv is None else list(argv))
    args = build_parser().parse_args(argv)
    try:
        options = options_from_args(args)
    except (ValueError, OSError) as exc:
        print(f'fusion-replay: {exc}', file=sys.stderr)
        return 2

    from fusion_nodes.tools import dds_env
    dds_env.apply_to_current_process()
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.signals import SignalHandlerOptions

    # Our own handlers: SIGINT and SIGTERM end the replay with its summary, not a traceback.
    rclpy.init(args=ros_args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    replayer = None
    try:
        node = rclpy.create_node('fusion_replay')
        try:
            replayer = Replayer(args.bag, node, options)
        except ValueError as exc:
            print(f'fusion-replay: {exc}', file=sys.stderr)
            return 2
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: replayer.stop())
        print(f'fusion-replay: {args.bag}: {len(replayer.output_topics)} topics, '
              f'{(replayer.window[1] - replayer.window[0]) / NS_PER_S:.2f} s of bag time at '
              f'rate {options.rate:g}{", looping" if options.loop else ""}', flush=True)
        summary = replayer.run()
        print(summary.text(), flush=True)
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        if replayer is not None:
            replayer.summary.interrupted = True
            print(replayer.summary.text(), flush=True)
        return 0
    finally:
        if replayer is not None:
            replayer.close()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main())
