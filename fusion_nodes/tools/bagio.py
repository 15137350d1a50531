"""Shared rosbag2 helpers over the pure-Python rosbags library (no rosbag2_py, no ros2 CLI).

Reading opens a rosbag2 directory, or a single .mcap or .db3 file, with either storage
plugin. Messages cross between rosbags dataclasses and rclpy messages through their common
wire format, CDR, so no field is copied by hand and both sides agree on every type. rclpy is
imported lazily: reading and writing bags works on a machine without ROS.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
import functools
import importlib
from pathlib import Path

from rosbags.interfaces import (Connection, Qos, QosDurability, QosHistory, QosLiveliness,
                                QosReliability, QosTime)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores

STORAGES = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}

# One bag entry: (topic, msgtype 'pkg/msg/Type', log time ns, message).
BagEntry = tuple[str, str, int, object]


class UnknownMessageType(ValueError):
    """A message type that neither the typestore nor the installed Python packages know."""


@dataclass(frozen=True)
class TopicInfo:
    """What a bag says about one topic."""

    topic: str
    msgtype: str
    count: int
    offered_qos: tuple[Qos, ...]

    @property
    def transient_local(self) -> bool:
        """True when the recorded publisher latched (e.g. /tf_static)."""
        return any(q.durability == QosDurability.TRANSIENT_LOCAL for q in self.offered_qos)


@dataclass(frozen=True)
class BagInfo:
    """Topics and the log-time span of a bag; end_ns is the last message's log time."""

    path: Path
    start_ns: int
    end_ns: int
    message_count: int
    topics: dict[str, TopicInfo]


def select_store() -> Stores:
    """Stores.ROS2_KILTED (the distro the nodes run) if rosbags has it, else the newest ROS 2."""
    kilted = getattr(Stores, 'ROS2_KILTED', None)
    if kilted is not None:
        return kilted
    ros2 = [s for s in Stores if s.name.startswith('ROS2_')]
    if not ros2:
        raise RuntimeError('this rosbags version has no ROS 2 typestore')
    return ros2[-1]


@functools.cache
def typestore():
    """The shared rosbags typestore (built once: building one parses every definition)."""
    return get_typestore(select_store())


def _check_bag_path(bag_path: str | Path) -> Path:
    path = Path(bag_path)
    if not path.exists():
        raise ValueError(f'bag {path} does not exist')
    if path.is_file() and path.suffix not in ('.mcap', '.db3'):
        raise ValueError(f'bag {path} is neither a rosbag2 directory nor a .mcap/.db3 file')
    return path


def _connections(reader: Reader, topics: Iterable[str] | None) -> list[Connection]:
    if topics is None:
        return list(reader.connections)
    wanted = set(topics)
    return [c for c in reader.connections if c.topic in wanted]


def _offered_qos(connection: Connection) -> tuple[Qos, ...]:
    profiles = getattr(connection.ext, 'offered_qos_profiles', None) or ()
    return tuple(p for p in profiles if isinstance(p, Qos))


def bag_info(bag_path: str | Path) -> BagInfo:
    """Topics, message counts, QoS and log-time span of a bag."""
    path = _check_bag_path(bag_path)
    with Reader(path) as reader:
        topics: dict[str, TopicInfo] = {}
        for conn in reader.connections:
            known = topics.get(conn.topic)
            if known is not None and known.msgtype != conn.msgtype:
                raise ValueError(f'bag {path}: topic {conn.topic} has two types, '
                                 f'{known.msgtype} and {conn.msgtype}')
            count = conn.msgcount + (known.count if known else 0)
            qos = (known.offered_qos if known else ()) + _offered_qos(conn)
            topics[conn.topic] = TopicInfo(conn.topic, conn.msgtype, count, qos)
        count = reader.message_count
        # rosbags reports end_time as the last stamp + 1; an empty bag has no span at all.
        start = reader.start_time if count else 0
        end = reader.end_time - 1 if count else 0
    return BagInfo(path, start, end, count, topics)


def iter_raw(bag_path: str | Path, topics: Iterable[str] | None = None,
             start_ns: int | None = None,
             stop_ns: int | None = None) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, msgtype, log_time_ns, CDR bytes) in log-time order, log time in [start, stop)."""
    path = _check_bag_path(bag_path)
    with Reader(path) as reader:
        conns = _connections(reader, topics)
        if not conns:
            return
        for conn, log_ns, data in reader.messages(conns, start=start_ns, stop=stop_ns):
            yield conn.topic, conn.msgtype, log_ns, data


def iter_messages(bag_path: str | Path,
                  topics: Iterable[str] | None = None) -> Iterator[BagEntry]:
    """(topic, msgtype, log_time_ns, rosbags message) in log-time order."""
    store = typestore()
    for topic, msgtype, log_ns, data in iter_raw(bag_path, topics):
        yield topic, msgtype, log_ns, store.deserialize_cdr(data, msgtype)


@functools.cache
def rclpy_message_class(msgtype: str) -> type:
    """The rclpy message class of 'pkg/msg/Type' (also accepts 'pkg/Type')."""
    parts = msgtype.split('/')
    if len(parts) == 2:
        parts = [parts[0], 'msg', parts[1]]
    if len(parts) != 3 or not all(parts) or parts[1] not in ('msg', 'srv', 'action'):
        raise ValueError(f'message type must look like pkg/msg/Type, got {msgtype!r}')
    try:
        from rosidl_runtime_py.utilities import get_message
    except ImportError:
        get_message = None
    if get_message is not None and parts[1] == 'msg':
        try:
            return get_message('/'.join(parts))
        except (AttributeError, ModuleNotFoundError, ValueError) as exc:
            raise UnknownMessageType(f'{msgtype} is not installed for rclpy: {exc}') from exc
    try:
        module = importlib.import_module(f'{parts[0]}.{parts[1]}')
        return getattr(module, parts[2])
    except (ModuleNotFoundError, AttributeError) as exc:
        raise UnknownMessageType(
            f'{msgtype} is not installed for rclpy (no {parts[0]}.{parts[1]}.{parts[2]}): '
            f'install its interface package, e.g. ros-<distro>-{parts[0].replace("_", "-")}'
        ) from exc


def _check_known(msgtype: str) -> None:
    if msgtype not in typestore().types:
        raise UnknownMessageType(f'{msgtype} is not in the rosbags typestore '
                                 f'{select_store().name}')


def to_rclpy(rosbags_msg: object, msgtype: str) -> object:
    """Convert a rosbags message to the rclpy message of msgtype, through CDR."""
    from rclpy.serialization import deserialize_message
    _check_known(msgtype)
    cls = rclpy_message_class(msgtype)
    data = typestore().serialize_cdr(rosbags_msg, msgtype)
    return deserialize_message(bytes(data), cls)


def from_rclpy(msg: object, msgtype: str) -> object:
    """Convert an rclpy message to the rosbags message of msgtype, through CDR."""
    from rclpy.serialization import serialize_message
    _check_known(msgtype)
    cls = rclpy_message_class(msgtype)
    if not isinstance(msg, cls):
        raise ValueError(f'expected an rclpy {msgtype}, got {type(msg).__name__}')
    return typestore().deserialize_cdr(serialize_message(msg), msgtype)


def make_qos(reliable: bool = True, transient_local: bool = False, depth: int = 10) -> Qos:
    """A rosbags QoS record for a connection's offered_qos_profiles (bag metadata)."""
    zero = QosTime(sec=0, nsec=0)
    return Qos(history=QosHistory.KEEP_LAST, depth=depth,
               reliability=QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               durability=(QosDurability.TRANSIENT_LOCAL if transient_local
                           else QosDurability.VOLATILE),
               deadline=zero, lifespan=zero, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=zero, avoid_ros_namespace_conventions=False)


def open_writer(path: str | Path, storage: str = 'mcap') -> Writer:
    """An open rosbags Writer for a new rosbag2 directory at path."""
    if storage not in STORAGES:
        raise ValueError(f'storage must be one of {sorted(STORAGES)}, got {storage!r}')
    path = Path(path)
    if path.exists():
        raise ValueError(f'{path} exists already; a rosbag2 is written to a new directory')
    writer = Writer(path, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])
    writer.open()
    return writer


def write_bag(path: str | Path, entries: Iterable[BagEntry], storage: str = 'mcap',
              qos: dict[str, Qos] | None = None) -> Path:
    """Write (topic, msgtype, log_time_ns, rosbags message) entries as a rosbag2 at path.

    qos optionally gives a topic's offered QoS for the metadata (the default is reliable).
    """
    store = typestore()
    qos = qos or {}
    writer = open_writer(path, storage)
    try:
        conns: dict[str, Connection] = {}
        for topic, msgtype, log_ns, msg in entries:
            conn = conns.get(topic)
            if conn is None:
                _check_known(msgtype)
                conn = writer.add_connection(topic, msgtype, typestore=store,
                                             offered_qos_profiles=[qos.get(topic, make_qos())])
                conns[topic] = conn
            elif conn.msgtype != msgtype:
                raise ValueError(f'topic {topic} was {conn.msgtype}, now given a {msgtype}')
            if isinstance(log_ns, bool) or not isinstance(log_ns, int) or log_ns < 0:
                raise ValueError(f'log time must be a non-negative int ns, got {log_ns!r}')
            writer.write(conn, log_ns, store.serialize_cdr(msg, msgtype))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return Path(path)
