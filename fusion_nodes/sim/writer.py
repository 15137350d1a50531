"""Writes a simulated run as a rosbag2 (MCAP or sqlite3) through rosbags.

Log time is when a message reaches the robot (its arrival), header stamps come from the timing
model, and ground truth is logged at true time. Nothing depends on the wall clock and every
random draw is seeded, so the same (scenario, seed, options) gives a byte-identical bag.
"""

from dataclasses import dataclass
from pathlib import Path
import shutil
from typing import Iterator

import numpy as np
from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                QosTime)
from rosbags.rosbag2 import Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin
from tqdm import tqdm

from fusion_nodes.core.config import NS_PER_S, SENSORS
from fusion_nodes.sim.messages import MessageFactory
from fusion_nodes.sim.scenario import load_scenario, Scenario
from fusion_nodes.sim.timing import apply_timing, capture_times, StreamTimes
from fusion_nodes.sim.world import World

TOPIC_IMAGE = '/camera/image_raw'
TOPIC_IMAGE_COMPRESSED = '/camera/image_raw/compressed'
TOPIC_CAMERA_INFO = '/camera/camera_info'
TOPIC_LIDAR = '/lidar/points'
TOPIC_GPS = '/gps/fix'
TOPIC_TF_STATIC = '/tf_static'
TOPIC_GT_BEV = '/gt/bev'
TOPIC_GT_OBJECTS = '/gt/objects'
TOPIC_GT_EGO = '/gt/ego'
TOPIC_GT_CAPTURE = '/gt/capture_time'
TOPIC_GT_FAILURES = '/gt/failures'
JPEG_QUALITY = 80
STORAGES = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
# Order among messages with the same log time, so the write order never depends on a sort's
# tie-breaking: static transforms, truth, then sensors.
_PRIORITY = {'tf': 0, 'gt': 1, 'failures': 1, 'camera': 2, 'lidar': 3, 'gps': 4}


def _qos(durability: QosDurability, reliability: QosReliability, depth: int) -> Qos:
    zero = QosTime(sec=0, nsec=0)
    return Qos(history=QosHistory.KEEP_LAST, depth=depth, reliability=reliability,
               durability=durability, deadline=zero, lifespan=zero,
               liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=zero,
               avoid_ros_namespace_conventions=False)


@dataclass(frozen=True)
class _Event:
    log_ns: int
    priority: int
    index: int
    kind: str


def sensor_schedules(scenario: Scenario, seed: int,
                     duration_ns: int) -> dict[str, tuple[StreamTimes, np.ndarray]]:
    """Delivered message times per sensor and all capture times, seeded per sensor."""
    out = {}
    for i, sensor in enumerate(SENSORS):
        rng = np.random.default_rng([seed, 101 + i])
        captures = capture_times(scenario.timing[sensor], scenario.start_ns, duration_ns)
        times, _ = apply_timing(scenario.timing[sensor], captures, scenario.start_ns, rng)
        out[sensor] = (times, captures)
    return out


def _events(schedules: dict[str, tuple[StreamTimes, np.ndarray]], start_ns: int,
            failure_changes: list[int]) -> Iterator[_Event]:
    yield _Event(start_ns, _PRIORITY['tf'], 0, 'tf')
    _, camera_captures = schedules['camera']
    for i, t in enumerate(camera_captures):
        yield _Event(int(t), _PRIORITY['gt'], i, 'gt')
    for i, t in enumerate(failure_changes):
        yield _Event(int(t), _PRIORITY['failures'], i, 'failures')
    for sensor in SENSORS:
        times, _ = schedules[sensor]
        for i, t in enumerate(times.arrival_ns):
            yield _Event(int(t), _PRIORITY[sensor], i, sensor)


def generate_bag(scenario: Scenario | str, seed: int, out_path: str | Path,
                 duration_s: float | None = None, storage: str = 'mcap',
                 compressed_camera: bool = False, progress: bool = True,
                 jpeg_quality: int = JPEG_QUALITY) -> Path:
    """Simulate (scenario, seed) and write it as a rosbag2 directory at out_path."""
    if isinstance(scenario, str):
        scenario = load_scenario(scenario)
    if storage not in STORAGES:
        raise ValueError(f'storage must be one of {sorted(STORAGES)}, got {storage!r}')
    duration = scenario.duration_s if duration_s is None else float(duration_s)
    if not duration > 0.0:
        raise ValueError(f'duration_s must be positive, got {duration_s}')
    out_path = Path(out_path)
    if out_path.exists():
        raise ValueError(f'{out_path} exists already; rosbag2 output needs a new directory')
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f'jpeg_quality must be in [1, 100], got {jpeg_quality}')
    duration_ns = round(duration * NS_PER_S)
    world = World(scenario, seed, horizon_s=duration)
    schedules = sensor_schedules(scenario, world.seed, duration_ns)
    changes = world.failure_change_times(scenario.start_ns + duration_ns)
    events = sorted(_events(schedules, scenario.start_ns, changes),
                    key=lambda e: (e.log_ns, e.priority, e.index))
    factory = MessageFactory()
    writer = Writer(out_path, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])
    if storage == 'mcap':
        # zstd chunks: readers (rosbags, mcap, ros2 bag) decompress transparently.
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    writer.open()
    try:
        conns = _connections(writer, factory, compressed_camera)
        emit = _Emitter(world, scenario, schedules, factory, writer, conns, compressed_camera,
                        jpeg_quality)
        for event in tqdm(events, desc=f'{scenario.name} seed {seed}', unit='msg',
                          disable=not progress, mininterval=0.5):
            emit(event)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return out_path


def generate_bag_once(scenario: Scenario | str, seed: int, out_path: str | Path,
                      **options) -> Path:
    """out_path if it already holds a finished bag, else generate_bag(...) into it.

    The bag is written aside and renamed, so an interrupted run never leaves a directory that
    looks finished; a leftover from one is replaced.
    """
    out_path = Path(out_path)
    if (out_path / 'metadata.yaml').is_file():
        return out_path
    partial = out_path.with_name(out_path.name + '.partial')
    for stale in (partial, out_path):
        if stale.exists():
            shutil.rmtree(stale)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    generate_bag(scenario, seed, partial, **options)
    partial.rename(out_path)
    return out_path


def _connections(writer: Writer, factory: MessageFactory, compressed_camera: bool) -> dict:
    store = factory.store
    sensor_qos = [_qos(QosDurability.VOLATILE, QosReliability.BEST_EFFORT, 5)]
    reliable = [_qos(QosDurability.VOLATILE, QosReliability.RELIABLE, 10)]
    latched = [_qos(QosDurability.TRANSIENT_LOCAL, QosReliability.RELIABLE, 1)]
    topics = {
        'image': ((TOPIC_IMAGE_COMPRESSED, 'sensor_msgs/msg/CompressedImage')
                  if compressed_camera else (TOPIC_IMAGE, 'sensor_msgs/msg/Image'), sensor_qos),
        'camera_info': ((TOPIC_CAMERA_INFO, 'sensor_msgs/msg/CameraInfo'), sensor_qos),
        'lidar': ((TOPIC_LIDAR, 'sensor_msgs/msg/PointCloud2'), sensor_qos),
        'gps': ((TOPIC_GPS, 'sensor_msgs/msg/NavSatFix'), sensor_qos),
        'tf': ((TOPIC_TF_STATIC, 'tf2_msgs/msg/TFMessage'), latched),
        'bev': ((TOPIC_GT_BEV, 'nav_msgs/msg/OccupancyGrid'), reliable),
        'objects': ((TOPIC_GT_OBJECTS, 'visualization_msgs/msg/MarkerArray'), reliable),
        'ego': ((TOPIC_GT_EGO, 'nav_msgs/msg/Odometry'), reliable),
        'capture': ((TOPIC_GT_CAPTURE, 'sensor_msgs/msg/TimeReference'), reliable),
        'failures': ((TOPIC_GT_FAILURES, 'diagnostic_msgs/msg/DiagnosticArray'), reliable),
    }
    return {key: writer.add_connection(topic, msgtype, typestore=store,
                                       offered_qos_profiles=qos)
            for key, ((topic, msgtype), qos) in topics.items()}


class _Emitter:
    """Turns one scheduled event into its serialised messages."""

    def __init__(self, world: World, scenario: Scenario, schedules: dict,
                 factory: MessageFactory, writer: Writer, conns: dict,
                 compressed_camera: bool, jpeg_quality: int) -> None:
        self.world = world
        self.scenario = scenario
        self.schedules = schedules
        self.factory = factory
        self.writer = writer
        self.conns = conns
        self.compressed = compressed_camera
        self.quality = jpeg_quality
        image_topic = TOPIC_IMAGE_COMPRESSED if compressed_camera else TOPIC_IMAGE
        self.sensor_topics = {'camera': image_topic, 'lidar': TOPIC_LIDAR, 'gps': TOPIC_GPS}

    def _write(self, key: str, log_ns: int, msg) -> None:
        self.writer.write(self.conns[key], log_ns, self.factory.serialize(msg))

    def _capture(self, sensor: str, log_ns: int, stamp: int, capture: int) -> None:
        self._write('capture', log_ns, self.factory.time_reference(
            stamp, capture, self.sensor_topics[sensor]))

    def __call__(self, event: _Event) -> None:
        f, world = self.factory, self.world
        log = event.log_ns
        if event.kind == 'tf':
            self._write('tf', log, f.tf_static(self.scenario.camera, self.scenario.lidar, log))
            return
        if event.kind == 'gt':
            t = log
            self._write('bev', log, f.bev_grid(world.bev_ground_truth(t), world.grid, t))
            self._write('objects', log, f.markers(world.objects(t), t))
            self._write('ego', log, f.odometry(world.ego_state(t), t))
        if event.kind in ('gt', 'failures'):
            # 'failures' alone: a failure starts or ends between camera captures.
            self._write('failures', log, f.failures(world.failure_flags(log),
                                                    self.sensor_topics, log))
            return
        times, _ = self.schedules[event.kind]
        capture = int(times.capture_ns[event.index])
        stamp = int(times.stamp_ns[event.index])
        if event.kind == 'camera':
            img = world.render_camera(capture)
            msg = (f.compressed_image(img, stamp, self.quality) if self.compressed
                   else f.image(img, stamp))
            self._write('image', log, msg)
            self._write('camera_info', log, f.camera_info(self.scenario.camera, stamp))
        elif event.kind == 'lidar':
            self._write('lidar', log, f.point_cloud(world.lidar_scan(capture), stamp))
        else:
            fix = world.gps_fix(capture)
            if fix is None:
                return  # receiver silent: no message, and /gt/failures says why
            self._write('gps', log, f.nav_sat_fix(fix, stamp))
        self._capture(event.kind, log, stamp, capture)
