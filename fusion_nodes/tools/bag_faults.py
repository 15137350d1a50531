"""Rewrite a rosbag2 with one injected fault, for replay tests of the live nodes.

Faults (issue 7): a sensor dies mid-run, a sensor freezes (identical data, advancing stamps),
the sensor clocks jump backwards, out-of-order messages, NaN/Inf in fields, and a 2x burst of
input. Bag loops are not a rewrite: fusion-replay --loop does that. Ground-truth topics pass
through unchanged, so tests can still score against /gt.
"""

import argparse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
import math
from pathlib import Path
import sys

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores

NS = 1_000_000_000
SENSOR_TOPICS = ('/camera/image_raw', '/camera/image_raw/compressed', '/lidar/points',
                 '/gps/fix')

# (topic, msgtype, log_time_ns, message) where message is a rosbags dataclass
Record = tuple[str, str, int, object]


@dataclass(frozen=True)
class Fault:
    """kind is a FAULTS key; times are seconds from the bag's first message."""

    kind: str
    topic: str = '/lidar/points'
    start_s: float = 5.0
    end_s: float = math.inf
    amount: float = 1.0


def _stamp_ns(msg) -> int:
    return msg.header.stamp.sec * NS + msg.header.stamp.nanosec


def _set_stamp(msg, ns: int) -> None:
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(ns), NS)


def _in_window(fault: Fault, t0: int, log_time: int) -> bool:
    return fault.start_s * NS <= log_time - t0 < fault.end_s * NS


def _sensor_dies(records: Iterator[Record], fault: Fault, t0: int) -> Iterator[Record]:
    for record in records:
        topic, _, log_time, _ = record
        if topic == fault.topic and _in_window(fault, t0, log_time):
            continue
        yield record


def _sensor_freezes(records: Iterator[Record], fault: Fault, t0: int) -> Iterator[Record]:
    frozen = None
    for topic, msgtype, log_time, msg in records:
        if topic == fault.topic:
            if not _in_window(fault, t0, log_time):
                frozen = msg
            elif frozen is not None:
                stamp = _stamp_ns(msg)
                msg = _copy_message(frozen, msgtype)
                _set_stamp(msg, stamp)
        yield topic, msgtype, log_time, msg


def _clock_jump_back(records: Iterator[Record], fault: Fault, t0: int) -> Iterator[Record]:
    for topic, msgtype, log_time, msg in records:
        if topic in SENSOR_TOPICS and _in_window(fault, t0, log_time):
            _set_stamp(msg, max(_stamp_ns(msg) - int(fault.amount * NS), 0))
        yield topic, msgtype, log_time, msg


def _out_of_order(records: Iterator[Record], fault: Fault, t0: int) -> Iterator[Record]:
    held = None
    for record in records:
        topic, msgtype, log_time, msg = record
        if topic != fault.topic or not _in_window(fault, t0, log_time):
            yield record
            continue
        if held is None:
            held = record
            continue
        # Swap payloads of a pair: arrival order stays, stamps now go backwards once.
        yield topic, msgtype, held[2], msg
        yield held[0], held[1], log_time, held[3]
        held = None
    if held is not None:
        yield held


def _nan_fields(records: Iterator[Record], fault: Fault, t0: int) -> Iterator[Record]:
    rng = np.random.default_rng(0)
    for topic, msgtype, log_time, msg in records:
        if topic == fault.topic and _in_window(fault, t0, log_time):
            msg = _copy_message(msg, msgtype)
            if msgtype == 'sensor_msgs/msg/PointCloud2':
                _poison_cloud(msg, rng, fault.amount)
            elif msgtype == 'sensor_msgs/msg/NavSatFix':
                msg.latitude = float('nan')
                msg.longitude = float('inf')
            else:
                raise ValueError(f'nan_fields has no rule for {msgtype}')
        yield topic, msgtype, log_time, msg


def _poison_cloud(msg, rng: np.random.Generator, fraction: float) -> None:
    """Overwrite x, y, z of a random fraction of the points with NaN, +Inf and -Inf."""
    fields = {f.name: f for f in msg.fields}
    float32 = 7  # PointField.FLOAT32
    if any(fields[n].datatype != float32 for n in 'xyz' if n in fields):
        raise ValueError('nan_fields poisons float32 x/y/z clouds only')
    data = np.array(msg.data, dtype=np.uint8)
    points = msg.width * msg.height
    picks = rng.choice(points, size=max(1, int(points * fraction)), replace=False)
    order = '>f4' if msg.is_bigendian else '<f4'
    for name, value in (('x', np.nan), ('y', np.inf), ('z', -np.inf)):
        if name in fields:
            starts = picks * msg.point_step + fields[name].offset
            encoded = np.frombuffer(np.array([value], order).tobytes(), np.uint8)
            data[starts[:, None] + np.arange(4)] = encoded
    msg.data = data
    msg.is_dense = False


def _burst_2x(records: Iterator[Record], fault: Fault, t0: int) -> Iterator[Record]:
    previous: dict[str, tuple[int, int]] = {}
    for topic, msgtype, log_time, msg in records:
        if topic in SENSOR_TOPICS and _in_window(fault, t0, log_time) and topic in previous:
            last_log, last_stamp = previous[topic]
            extra = _copy_message(msg, msgtype)
            _set_stamp(extra, (last_stamp + _stamp_ns(msg)) // 2)
            yield topic, msgtype, (last_log + log_time) // 2, extra
        if topic in SENSOR_TOPICS:
            previous[topic] = (log_time, _stamp_ns(msg))
        yield topic, msgtype, log_time, msg


FAULTS: dict[str, Callable[[Iterator[Record], Fault, int], Iterator[Record]]] = {
    'sensor_dies': _sensor_dies,
    'sensor_freezes': _sensor_freezes,
    'clock_jump_back': _clock_jump_back,
    'out_of_order': _out_of_order,
    'nan_fields': _nan_fields,
    'burst_2x': _burst_2x,
}

_TYPESTORE = get_typestore(Stores.ROS2_KILTED)


def _copy_message(msg, msgtype: str):
    return _TYPESTORE.deserialize_cdr(_TYPESTORE.serialize_cdr(msg, msgtype), msgtype)


def inject_fault(source: Path, target: Path, fault: Fault) -> Path:
    """Write source with fault applied to target (MCAP); returns target."""
    if fault.kind not in FAULTS:
        raise ValueError(f'unknown fault {fault.kind!r}; known: {sorted(FAULTS)}')
    with Reader(source) as reader:
        connections = {c.id: c for c in reader.connections}
        first = reader.start_time

        def records() -> Iterator[Record]:
            for connection, log_time, raw in reader.messages():
                msg = _TYPESTORE.deserialize_cdr(raw, connection.msgtype)
                yield connection.topic, connection.msgtype, log_time, msg

        with Writer(target, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
            out = {}
            for connection in connections.values():
                out[connection.topic] = writer.add_connection(
                    connection.topic, connection.msgtype, typestore=_TYPESTORE)
            ordered = sorted(FAULTS[fault.kind](records(), fault, first), key=lambda r: r[2])
            for topic, msgtype, log_time, msg in ordered:
                writer.write(out[topic], log_time, _TYPESTORE.serialize_cdr(msg, msgtype))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('source', type=Path)
    parser.add_argument('target', type=Path)
    parser.add_argument('--fault', choices=sorted(FAULTS), required=True)
    parser.add_argument('--topic', default='/lidar/points')
    parser.add_argument('--start', type=float, default=5.0, help='seconds into the bag')
    parser.add_argument('--end', type=float, default=math.inf)
    parser.add_argument('--amount', type=float, default=1.0,
                        help='jump seconds (clock_jump_back) or poisoned fraction (nan_fields)')
    args = parser.parse_args(argv)
    inject_fault(args.source, args.target,
                 Fault(args.fault, args.topic, args.start, args.end, args.amount))
    return 0


if __name__ == '__main__':
    sys.exit(main())
