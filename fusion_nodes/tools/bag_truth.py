"""Ground truth of a generator bag, keyed the way live outputs are: by camera header stamp.

The fusion node stamps its outputs with the reference camera frame's stamp. /gt/capture_time
maps that stamp to the frame's true capture time, at which /gt/bev holds the true grid,
/gt/ego the twist (the one nearest in time) and /gt/failures the failures in force. Used to
score a live replay against the offline figure.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusion_nodes import conversions
from fusion_nodes.core.config import BevGrid, SEMANTIC_CLASSES, SENSORS
from fusion_nodes.model.bag_samples import (
    bev_classes, CAMERA_TOPICS, failure_flags, GT_BEV_TOPIC, GT_CAPTURE_TOPIC, GT_EGO_TOPIC,
    GT_FAILURES_TOPIC, nearest_index)
from fusion_nodes.model.metrics import confusion, ego_calibration, mean_iou, rmse


@dataclass(frozen=True)
class BagTruth:
    """Per camera stamp: the true BEV classes, failure flags (SENSORS order) and ego twist
    (vx, vy, yaw rate)."""

    camera_stamps: tuple[int, ...]
    bev: dict[int, np.ndarray]
    failed: dict[int, np.ndarray]
    ego: dict[int, np.ndarray]

    def failed_stamps(self, sensor: str) -> set[int]:
        k = SENSORS.index(sensor)
        return {s for s, flags in self.failed.items() if flags[k]}


def load_bag_truth(bag: Path, grid: BevGrid = BevGrid()) -> BagTruth:
    """Read the camera stamps and the ground truth that belongs to each."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import get_typestore, Stores

    stamps: list[int] = []
    captures: dict[int, int] = {}
    bev_by_capture: dict[int, np.ndarray] = {}
    failure_times: list[int] = []
    flag_rows: list[np.ndarray] = []
    ego_times: list[int] = []
    ego_rows: list[np.ndarray] = []
    camera_topic = None
    with AnyReader([Path(bag)], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        wanted = [c for c in reader.connections
                  if c.topic in CAMERA_TOPICS + (GT_BEV_TOPIC, GT_CAPTURE_TOPIC,
                                                 GT_FAILURES_TOPIC, GT_EGO_TOPIC)]
        for connection, _, raw in reader.messages(connections=wanted):
            topic = connection.topic
            if topic in CAMERA_TOPICS:
                camera_topic = topic
                header = reader.deserialize(raw, connection.msgtype).header
                stamps.append(conversions.stamp_to_ns(header.stamp))
                continue
            msg = reader.deserialize(raw, connection.msgtype)
            if topic == GT_CAPTURE_TOPIC:
                if str(msg.source) in CAMERA_TOPICS:
                    captures[conversions.stamp_to_ns(msg.header.stamp)] = \
                        conversions.stamp_to_ns(msg.time_ref)
            elif topic == GT_BEV_TOPIC:
                bev_by_capture[conversions.stamp_to_ns(msg.header.stamp)] = \
                    bev_classes(msg, grid)
            elif topic == GT_FAILURES_TOPIC:
                failure_times.append(conversions.stamp_to_ns(msg.header.stamp))
                flag_rows.append(failure_flags(msg))
            elif topic == GT_EGO_TOPIC:
                ego_times.append(conversions.stamp_to_ns(msg.header.stamp))
                ego_rows.append(conversions.planar_twist(msg))
    if camera_topic is None:
        raise ValueError(f'{bag} has no camera frames on {CAMERA_TOPICS}')
    if not bev_by_capture or not failure_times:
        raise ValueError(f'{bag} has no {GT_BEV_TOPIC} or {GT_FAILURES_TOPIC} ground truth')
    order = np.argsort(failure_times)
    times = np.asarray(failure_times, dtype=np.int64)[order]
    flags = [flag_rows[k] for k in order]
    ego_order = np.argsort(ego_times)
    ego_stamps = np.asarray(ego_times, dtype=np.int64)[ego_order]
    ego_values = np.asarray(ego_rows, dtype=np.float64).reshape(-1, 3)[ego_order]
    bev, failed, ego = {}, {}, {}
    for stamp in stamps:
        capture = captures.get(stamp)
        if capture is None:
            continue
        if capture in bev_by_capture:
            bev[stamp] = bev_by_capture[capture]
        # The failure state in force at capture: the last flags published at or before it.
        k = int(np.searchsorted(times, capture, side='right')) - 1
        failed[stamp] = flags[max(k, 0)]
        if ego_stamps.size:
            ego[stamp] = ego_values[nearest_index(ego_stamps, capture)]
    return BagTruth(tuple(stamps), bev, failed, ego)


def score_semantic(predicted: dict[int, np.ndarray], truth: BagTruth) -> tuple[float, int]:
    """(mIoU, frames) of predicted class grids against the truth, over stamps both have."""
    common = [s for s in predicted if s in truth.bev]
    if not common:
        return float('nan'), 0
    matrix = sum(confusion(predicted[s], truth.bev[s], len(SEMANTIC_CLASSES)) for s in common)
    return mean_iou(matrix), len(common)


def score_ego_calibration(predicted: dict[int, np.ndarray], variances: dict[int, np.ndarray],
                          truth: BagTruth) -> dict:
    """How the published ego variances cover the errors against the truth (metrics.
    ego_calibration), over stamps all three have."""
    common = [s for s in predicted if s in truth.ego and s in variances]
    if not common:
        return ego_calibration(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)))
    return ego_calibration(np.stack([predicted[s] for s in common]),
                           np.log(np.stack([variances[s] for s in common])),
                           np.stack([truth.ego[s] for s in common]))


def score_ego(predicted: dict[int, np.ndarray], truth: BagTruth) -> tuple[float, int]:
    """(RMSE over vx, vy and yaw rate pooled, frames) of predicted ego twists against the
    truth, over stamps both have: the figure fusion-eval reports per scenario."""
    common = [s for s in predicted if s in truth.ego]
    if not common:
        return float('nan'), 0
    return rmse(np.stack([predicted[s] for s in common]),
                np.stack([truth.ego[s] for s in common])), len(common)
