"""Stamp joining, feed assembly with availability, and the processing watchdog."""

import numpy as np
import pytest

from fusion_nodes.core.fusion_inputs import build_feed, SensorSample, StampJoiner
from fusion_nodes.core.watchdog import ERROR, OK, ProcessingWatchdog, WARN, WatchdogConfig

SHAPES = {'camera': (1, 3, 96, 128), 'lidar': (1, 4, 64, 64), 'gps': (1, 8),
          'health': (1, 3, 4), 'available': (1, 3)}


def _sample(sensor, shape, value):
    return SensorSample(sensor, 10, 12, np.full(shape, value, np.float32),
                        np.full(4, value / 10, np.float32), 0.0)


def test_joiner_pairs_in_either_order_and_counts_orphans():
    joiner = StampJoiner(max_pending=2)
    assert joiner.add(1, 'features', 'f1') is None
    assert joiner.add(1, 'health', 'h1') == {'features': 'f1', 'health': 'h1'}
    assert joiner.add(2, 'health', 'h2') is None
    assert joiner.add(2, 'features', 'f2') == {'health': 'h2', 'features': 'f2'}
    for stamp in (3, 4, 5):
        joiner.add(stamp, 'features', stamp)
    assert joiner.unpaired == 1
    assert joiner.add(3, 'health', 'late') is None  # 3 was evicted: it starts a new entry


def test_feed_marks_missing_sensors_unavailable_with_zero_inputs():
    feed = build_feed({'camera': _sample('camera', (3, 96, 128), 1.0), 'lidar': None,
                       'gps': _sample('gps', (8,), 3.0)}, SHAPES)
    assert {k: v.shape for k, v in feed.items()} == SHAPES
    np.testing.assert_array_equal(feed['available'], [[1.0, 0.0, 1.0]])
    assert not feed['lidar'].any() and (feed['camera'] == 1.0).all()
    np.testing.assert_allclose(feed['health'][0], [[0.1] * 4, [0.0] * 4, [0.3] * 4])


def test_feed_rejects_features_of_the_wrong_shape():
    with pytest.raises(ValueError, match='lidar features have shape'):
        build_feed({'camera': None, 'lidar': _sample('lidar', (4, 32, 32), 1.0), 'gps': None},
                   SHAPES)


def test_watchdog_warns_then_errors_on_consecutive_overruns():
    dog = ProcessingWatchdog(WatchdogConfig(warn_ms=10, error_ms=20, error_consecutive=3))
    assert [dog.add(t) for t in (5, 15, 25, 25, 25, 5)] == [OK, WARN, WARN, WARN, ERROR, OK]
    assert dog.level() == ERROR and dog.level() == OK
    assert dog.max_consecutive_over == 3
    with pytest.raises(ValueError):
        WatchdogConfig(warn_ms=30, error_ms=20)
