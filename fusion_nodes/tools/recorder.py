"""Record live topics into a rosbag2 (MCAP or sqlite3) through rosbags, for offline analysis.

Subscriptions are raw: the CDR bytes DDS delivers go straight into the bag, never deserialised
and serialised again. The log time is the receive time on the node's clock, so with
use_sim_time a recording follows /clock like every other node. Sensor streams are subscribed
best effort (which matches both best-effort and reliable publishers), /tf_static latched, and
everything else reliable.
"""

import argparse
from collections import Counter
from collections.abc import Iterable, Mapping
import functools
from pathlib import Path
import sys
import threading
import time

from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, qos_profile_sensor_data, QoSProfile,
                       ReliabilityPolicy)

from fusion_nodes.tools import bagio
from fusion_nodes.tools.replay import SENSOR_TYPES, split_ros_args

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def subscription_qos(topic: str, msgtype: str) -> QoSProfile:
    """Best effort for sensor streams, latched for /tf_static, reliable for the rest."""
    if topic.rstrip('/').endswith('tf_static'):
        return LATCHED
    if msgtype in SENSOR_TYPES:
        return qos_profile_sensor_data
    return RELIABLE


def _bag_qos(qos: QoSProfile):
    return bagio.make_qos(reliable=qos.reliability == ReliabilityPolicy.RELIABLE,
                          transient_local=qos.durability == DurabilityPolicy.TRANSIENT_LOCAL,
                          depth=qos.depth)


class BagRecorder:
    """Subscribes to topics on a node and writes every message to a new bag until stop()."""

    def __init__(self, node: Node,
                 topics_with_types: Mapping[str, str] | Iterable[tuple[str, str]],
                 out_path: str | Path, storage: str = 'mcap',
                 qos_overrides: Mapping[str, QoSProfile] | None = None) -> None:
        pairs = list(topics_with_types.items() if isinstance(topics_with_types, Mapping)
                     else topics_with_types)
        if not pairs:
            raise ValueError('nothing to record: no topics given')
        topics = [t for t, _ in pairs]
        if len(set(topics)) != len(topics):
            raise ValueError(f'a topic is listed twice: {topics}')
        classes = {t: bagio.rclpy_message_class(m) for t, m in pairs}  # fails before any file
        self.node = node
        self.out_path = Path(out_path)
        self.counts: Counter = Counter()
        self.late_after_stop = 0  # callbacks that ran after stop(); counted, not written
        self._lock = threading.Lock()
        self._closed = False
        self._writer = bagio.open_writer(self.out_path, storage)
        self._subscriptions = []
        self._connections = {}
        qos_overrides = qos_overrides or {}
        try:
            for topic, msgtype in pairs:
                qos = qos_overrides.get(topic, subscription_qos(topic, msgtype))
                sub = node.create_subscription(
                    classes[topic], topic, functools.partial(self._on_message, topic), qos,
                    raw=True)
                # Relative names resolve in the node's namespace: the bag keeps the real name.
                conn = self._writer.add_connection(
                    sub.topic_name, msgtype, typestore=bagio.typestore(),
                    offered_qos_profiles=[_bag_qos(qos)])
                self._subscriptions.append(sub)
                self._connections[topic] = conn
        except BaseException:
            self._abort()
            raise

    def _on_message(self, topic: str, data: bytes) -> None:
        receive_ns = self.node.get_clock().now().nanoseconds
        with self._lock:
            if self._closed:
                self.late_after_stop += 1
                return
            self._writer.write(self._connections[topic], receive_ns, data)
            self.counts[topic] += 1

    def _abort(self) -> None:
        for sub in self._subscriptions:
            self.node.destroy_subscription(sub)
        self._subscriptions.clear()
        with self._lock:
            self._closed = True
            self._writer.abort()

    def stop(self) -> Counter:
        """Unsubscribe, flush and close the bag; returns the messages written per topic."""
        with self._lock:
            if self._closed:
                return Counter(self.counts)
            self._closed = True
        for sub in self._subscriptions:
            self.node.destroy_subscription(sub)
        self._subscriptions.clear()
        self._writer.close()
        return Counter(self.counts)


def resolve_types(node: Node, topics: list[str], timeout_s: float) -> dict[str, str]:
    """Message types of topics, from the ROS graph (waits for them to be discovered)."""
    deadline = time.monotonic() + timeout_s
    while True:
        graph = dict(node.get_topic_names_and_types())
        found = {t: graph[t][0] for t in topics if graph.get(t)}
        if len(found) == len(topics) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    missing = sorted(set(topics) - set(found))
    if missing:
        raise ValueError(f'no publisher seen within {timeout_s:g} s for {missing}; give the '
                         f'type as TOPIC:=pkg/msg/Type')
    return found


def main(argv: list[str] | None = None) -> int:
    argv, ros_args = split_ros_args(sys.argv[1:] if argv is None else list(argv))
    parser = argparse.ArgumentParser(
        description='Record topics into a new rosbag2 until Ctrl-C, SIGTERM or --duration. '
                    'Prints the message count per topic.')
    parser.add_argument('out', type=Path, help='new rosbag2 directory')
    parser.add_argument('topics', nargs='+', metavar='TOPIC[:=TYPE]',
                        help='absolute topic name; the type (pkg/msg/Type) is looked up on '
                             'the graph unless given')
    parser.add_argument('--storage', choices=sorted(bagio.STORAGES), default='mcap')
    parser.add_argument('--duration', type=float, default=None, metavar='SECONDS')
    parser.add_argument('--discovery-timeout', type=float, default=5.0, metavar='SECONDS')
    args = parser.parse_args(argv)

    from fusion_nodes.tools import dds_env
    dds_env.apply_to_current_process()
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    rclpy.init(args=ros_args)
    node = rclpy.create_node('fusion_recorder')
    recorder = None
    try:
        given = dict(t.partition(':=')[::2] for t in args.topics)
        types = {t: m for t, m in given.items() if m}
        types.update(resolve_types(node, [t for t, m in given.items() if not m],
                                   args.discovery_timeout))
        recorder = BagRecorder(node, types, args.out, args.storage)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        end = None if args.duration is None else time.monotonic() + args.duration
        while end is None or time.monotonic() < end:
            executor.spin_once(timeout_sec=0.1)
    except ValueError as exc:
        print(f'recorder: {exc}', file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if recorder is not None:
            counts = recorder.stop()
            for topic in sorted(types):
                print(f'{topic}: {counts[topic]}')
            print(f'recorded into {args.out}')
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
