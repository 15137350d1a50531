"""One generator bag into per-camera-frame training samples.

Messages are replayed in log (arrival) order through the sensor nodes' own processing
(fusion_nodes.model.features), so the health trackers evolve as on the robot. Every kept
camera frame is then paired with the lidar scan and the GPS fix nearest to it in TRUE capture
time (from /gt/capture_time), which is the pairing the online aligner recovers, and with the
ground truth: /gt/bev at the frame's capture time, the /gt/ego twist nearest to it and the
/gt/failures state in force at it.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from fusion_nodes import conversions
from fusion_nodes.core.config import BevGrid, SENSORS
from fusion_nodes.model.features import CameraExtractor, GpsExtractor, LidarExtractor
from fusion_nodes.nodes.params import FUSION_PARAMS, sensor_params_in_force

CAMERA_TOPICS = ('/camera/image_raw', '/camera/image_raw/compressed')
LIDAR_TOPIC = '/lidar/points'
GPS_TOPIC = '/gps/fix'
GT_BEV_TOPIC = '/gt/bev'
GT_EGO_TOPIC = '/gt/ego'
GT_CAPTURE_TOPIC = '/gt/capture_time'
GT_FAILURES_TOPIC = '/gt/failures'
DIAGNOSTIC_ERROR = 2
SAMPLE_FIELDS = ('camera', 'lidar', 'gps', 'health', 'available', 'bev', 'ego', 'failed',
                 'capture_ns', 'pair_gap_ns')


@dataclass(frozen=True)
class PairingConfig:
    """camera_stride keeps every n-th camera frame; stale_ns is the fusion node's staleness."""

    camera_stride: int = 3
    stale_ns: int = round(float(FUSION_PARAMS['sensor_stale_ms']) * 1e6)

    def __post_init__(self) -> None:
        if self.camera_stride < 1:
            raise ValueError(f'camera_stride must be >= 1, got {self.camera_stride}')
        if self.stale_ns <= 0:
            raise ValueError('stale_ns must be positive')


def _level(status) -> int:
    level = status.level
    return level[0] if isinstance(level, (bytes, bytearray)) else int(level)


def failure_flags(msg) -> np.ndarray:
    flags = np.zeros(len(SENSORS), dtype=np.uint8)
    for status in msg.status:
        for k, sensor in enumerate(SENSORS):
            if str(status.name) == sensor and _level(status) >= DIAGNOSTIC_ERROR:
                flags[k] = 1
    return flags


def bev_classes(msg, grid: BevGrid) -> np.ndarray:
    classes = conversions.occupancy_grid_to_numpy(msg)
    if classes.shape != grid.shape:
        raise ValueError(f'/gt/bev is {classes.shape} cells, the BEV grid is {grid.shape}')
    if classes.min() < 0:
        raise ValueError('/gt/bev holds negative (unknown) cells; expected class ids')
    return classes.astype(np.uint8)


def nearest_index(times: np.ndarray, t: int) -> int:
    """Index of the entry of sorted times nearest t (the earlier one on a tie)."""
    k = int(np.searchsorted(times, t))
    if k == 0:
        return 0
    if k == times.size:
        return times.size - 1
    return k if times[k] - t < t - times[k - 1] else k - 1


class _Stream:
    """Processed messages of one sensor with their true capture times."""

    def __init__(self) -> None:
        self.stamps: list[int] = []
        self.features: list[np.ndarray] = []
        self.health: list[np.ndarray] = []

    def add(self, stamp: int, features: np.ndarray, health: np.ndarray) -> None:
        self.stamps.append(stamp)
        self.features.append(features)
        self.health.append(health)


def _flags_at(times: np.ndarray, values: list[np.ndarray], t: int) -> np.ndarray:
    """The /gt/failures flags in force at true time t (none before the first message)."""
    f = int(np.searchsorted(times, t, side='right')) - 1
    return values[f] if f >= 0 else np.zeros(len(SENSORS), np.uint8)


def _capture_times(stream: _Stream, topic: str, captures: dict) -> np.ndarray:
    missing = [s for s in stream.stamps if (topic, s) not in captures]
    if missing:
        raise ValueError(f'{len(missing)} {topic} messages have no /gt/capture_time entry '
                         f'(first stamp {missing[0]})')
    return np.array([captures[(topic, s)] for s in stream.stamps], dtype=np.int64)


def extract_bag_samples(bag_path: Path, pairing: PairingConfig = PairingConfig(),
                        grid: BevGrid = BevGrid(),
                        node_params: Mapping[str, Mapping[str, Any]] | None = None
                        ) -> dict[str, np.ndarray]:
    """Arrays keyed by SAMPLE_FIELDS, one row per kept camera frame with ground truth.

    node_params ({'lidar_node': {...}, ...}) replaces the sensor nodes' parameter defaults
    where given, as a robot's parameter file does for its nodes.
    """
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import get_typestore, Stores

    camera = CameraExtractor(sensor_params_in_force('camera_node', node_params))
    lidar = LidarExtractor(sensor_params_in_force('lidar_node', node_params))
    gps = GpsExtractor(sensor_params_in_force('gps_node', node_params))
    streams = {'camera': _Stream(), 'lidar': _Stream(), 'gps': _Stream()}
    camera_topic = None
    camera_count = 0
    captures: dict[tuple[str, int], int] = {}
    bev_by_capture: dict[int, np.ndarray] = {}
    ego_times, ego_values, failure_times, failure_values = [], [], [], []
    typestore = get_typestore(Stores.ROS2_KILTED)
    with AnyReader([Path(bag_path)], default_typestore=typestore) as reader:
        for connection, _, raw in reader.messages():
            topic = connection.topic
            msg = reader.deserialize(raw, connection.msgtype)
            if topic in CAMERA_TOPICS:
                if camera_topic not in (None, topic):
                    raise ValueError(f'{bag_path} holds both {camera_topic} and {topic}')
                camera_topic = topic
                keep = camera_count % pairing.camera_stride == 0
                camera_count += 1
                out = camera.update(msg, with_features=keep)
                if keep:
                    streams['camera'].add(out.stamp_ns, out.features, out.health)
            elif topic == LIDAR_TOPIC:
                out = lidar.update(msg)
                streams['lidar'].add(out.stamp_ns, out.features, out.health)
            elif topic == GPS_TOPIC:
                out = gps.update(msg)
                streams['gps'].add(out.stamp_ns, out.features, out.health)
            elif topic == GT_CAPTURE_TOPIC:
                captures[(str(msg.source), conversions.stamp_to_ns(msg.header.stamp))] = \
                    conversions.stamp_to_ns(msg.time_ref)
            elif topic == GT_BEV_TOPIC:
                bev_by_capture[conversions.stamp_to_ns(msg.header.stamp)] = \
                    bev_classes(msg, grid)
            elif topic == GT_EGO_TOPIC:
                ego_times.append(conversions.stamp_to_ns(msg.header.stamp))
                ego_values.append(conversions.planar_twist(msg))
            elif topic == GT_FAILURES_TOPIC:
                failure_times.append(conversions.stamp_to_ns(msg.header.stamp))
                failure_values.append(failure_flags(msg))
    if camera_topic is None or not streams['camera'].stamps:
        raise ValueError(f'{bag_path} has no camera frames on {CAMERA_TOPICS}')
    if not ego_times:
        raise ValueError(f'{bag_path} has no {GT_EGO_TOPIC} ground truth')
    topics = {'camera': camera_topic, 'lidar': LIDAR_TOPIC, 'gps': GPS_TOPIC}
    capture = {s: _capture_times(streams[s], topics[s], captures) for s in SENSORS
               if streams[s].stamps}
    return _pair(streams, capture, bev_by_capture, np.array(ego_times, dtype=np.int64),
                 np.array(ego_values, dtype=np.float32), failure_times, failure_values,
                 pairing, grid)


def _pair(streams, capture, bev_by_capture, ego_times, ego_values, failure_times,
          failure_values, pairing, grid) -> dict[str, np.ndarray]:
    order = {s: np.argsort(t, kind='stable') for s, t in capture.items()}
    sorted_capture = {s: capture[s][order[s]] for s in capture}
    ego_order = np.argsort(ego_times, kind='stable')
    ego_times, ego_values = ego_times[ego_order], ego_values[ego_order]
    failure_order = np.argsort(np.array(failure_times, dtype=np.int64), kind='stable')
    failure_times = np.array(failure_times, dtype=np.int64)[failure_order]
    failure_values = [failure_values[i] for i in failure_order]
    rows, cols = grid.shape
    rows_out: dict[str, list] = {name: [] for name in SAMPLE_FIELDS}
    dropped = 0
    for k, t in enumerate(capture['camera']):
        bev = bev_by_capture.get(int(t))
        if bev is None:
            dropped += 1
            continue
        health = np.zeros((len(SENSORS), 4), np.float32)
        available = np.zeros(len(SENSORS), np.float32)
        gaps = np.full(len(SENSORS), -1, np.int64)
        paired_capture = np.full(len(SENSORS), -1, np.int64)
        health[0] = streams['camera'].health[k]
        available[0] = 1.0
        gaps[0] = 0
        inputs = {'camera': streams['camera'].features[k],
                  'lidar': np.zeros((4, rows, cols), np.float32),
                  'gps': np.zeros(8, np.float32)}
        for s_index, sensor in ((1, 'lidar'), (2, 'gps')):
            if sensor not in sorted_capture:
                continue
            j = nearest_index(sorted_capture[sensor], int(t))
            gap = abs(int(sorted_capture[sensor][j]) - int(t))
            if gap > pairing.stale_ns:
                continue
            paired_capture[s_index] = sorted_capture[sensor][j]
            original = int(order[sensor][j])
            inputs[sensor] = streams[sensor].features[original]
            health[s_index] = streams[sensor].health[original]
            available[s_index] = 1.0
            gaps[s_index] = gap
        e = nearest_index(ego_times, int(t))
        # A sensor's flag describes the sample it delivered: a scan captured just before the
        # rain starts, or the last fix before a tunnel, is healthy data.
        failed = _flags_at(failure_times, failure_values, int(t)).copy()
        for s_index, sensor in ((1, 'lidar'), (2, 'gps')):
            if available[s_index]:
                failed[s_index] = _flags_at(failure_times, failure_values,
                                            int(paired_capture[s_index]))[s_index]
        for name, value in (('camera', inputs['camera']), ('lidar', inputs['lidar']),
                            ('gps', inputs['gps']), ('health', health),
                            ('available', available), ('bev', bev), ('ego', ego_values[e]),
                            ('failed', failed), ('capture_ns', np.int64(t)),
                            ('pair_gap_ns', gaps)):
            rows_out[name].append(value)
    if not rows_out['capture_ns']:
        raise ValueError(f'no camera frame has a /gt/bev grid at its capture time '
                         f'({dropped} frames without one)')
    return {name: np.stack(values) for name, values in rows_out.items()}
