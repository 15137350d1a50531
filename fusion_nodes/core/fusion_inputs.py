"""Assembling network inputs from whatever sensors arrived, with availability masks."""

from collections import OrderedDict
from dataclasses import dataclass, field
import math

import numpy as np

from fusion_nodes.core.config import SENSORS
from fusion_nodes.core.lidar_odometry import OdometryEstimate


@dataclass(frozen=True)
class SensorSample:
    """One sensor message after its node: network features, health and motion signature,
    and (lidar) its mount check's travel heading evidence (NaN for none) and its odometry."""

    sensor: str
    stamp_ns: int
    arrival_ns: int
    features: np.ndarray
    health: np.ndarray
    signature: float
    level: int = 0
    travel_heading_deg: float = math.nan
    odometry: OdometryEstimate = field(default_factory=OdometryEstimate)


class StampJoiner:
    """Pairs a sensor's feature message with its health message by exact header stamp.

    Both come from the same sensor node back to back, but on two topics, so either may arrive
    first. Halves that never find their partner are evicted oldest-first and counted.
    """

    def __init__(self, max_pending: int = 64) -> None:
        if max_pending <= 0:
            raise ValueError('max_pending must be positive')
        self._max_pending = max_pending
        self._pending: OrderedDict[int, dict[str, object]] = OrderedDict()
        self.unpaired = 0

    def add(self, stamp_ns: int, part: str, value: object) -> dict[str, object] | None:
        """Store one half; returns both halves once the pair is complete."""
        entry = self._pending.setdefault(stamp_ns, {})
        entry[part] = value
        if len(entry) == 2:
            return self._pending.pop(stamp_ns)
        while len(self._pending) > self._max_pending:
            self._pending.popitem(last=False)
            self.unpaired += 1
        return None

    def clear(self) -> None:
        self._pending.clear()


def build_feed(samples: dict[str, SensorSample | None],
               input_shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The model's feed: missing sensors get zero inputs and availability 0.

    input_shapes maps each sensor (and 'health', 'available') to the model input's shape, from
    the model metadata, so a shape mismatch between a node's config and the model is caught
    here with a clear error rather than deep inside a runtime.
    """
    feed: dict[str, np.ndarray] = {}
    health = np.zeros(input_shapes['health'], np.float32)
    available = np.zeros(input_shapes['available'], np.float32)
    for k, sensor in enumerate(SENSORS):
        shape = input_shapes[sensor]
        sample = samples.get(sensor)
        if sample is None:
            feed[sensor] = np.zeros(shape, np.float32)
            continue
        features = np.asarray(sample.features, dtype=np.float32)
        if features.size != int(np.prod(shape)) or features.shape != tuple(shape[1:]):
            raise ValueError(f'{sensor} features have shape {features.shape}, the model '
                             f'expects {tuple(shape[1:])}')
        feed[sensor] = features.reshape(shape)
        health[0, k] = sample.health
        available[0, k] = 1.0
    feed['health'] = health
    feed['available'] = available
    return feed
