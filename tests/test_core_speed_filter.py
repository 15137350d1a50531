"""The constant-acceleration speed filter over registrations' mean speeds."""

import math

import pytest

from fusion_nodes.core.speed_filter import SpeedFilter, SpeedFilterConfig

NS = 1_000_000_000
SPAN = NS // 2


def _mean_speed(speed_at, t: float, span: float = 0.5, parts: int = 50) -> float:
    return sum(speed_at(t - span * (k + 0.5) / parts) for k in range(parts)) / parts


def test_filter_reads_the_speed_at_the_stamp_not_the_spans_middle():
    def speed_at(t):
        return 5.0 + 3.0 * t  # 3 m/s^2
    speed_filter = SpeedFilter()
    for k in range(30):
        speed_filter.update(k * NS // 10, _mean_speed(speed_at, k / 10), SPAN)
    speed, variance = speed_filter.estimate(29 * NS // 10)
    # The mean over the last half second is 0.75 m/s behind; the filter is not.
    assert speed == pytest.approx(speed_at(2.9), abs=0.05)
    assert 0.0 < variance < 0.6 ** 2
    ahead, ahead_variance = speed_filter.estimate(29 * NS // 10 + NS // 5)
    assert ahead == pytest.approx(speed_at(3.1), abs=0.1) and ahead_variance > variance


def test_filter_gates_a_wrong_registration_and_clips_the_acceleration():
    speed_filter = SpeedFilter(SpeedFilterConfig(max_accel=1.0))
    for k in range(10):
        assert speed_filter.update(k * NS // 10, 10.0, SPAN)
    assert not speed_filter.update(NS, -12.0, SPAN)
    assert speed_filter.rejected == 1
    assert speed_filter.estimate(NS)[0] == pytest.approx(10.0)
    # A steep but steady rise: taken one by one, the acceleration held at max_accel.
    for k in range(11, 40):
        speed_filter.update(k * NS // 10, 10.0 + 6.0 * (k - 10) / 10, SPAN)
    speed_at_39, _ = speed_filter.estimate(39 * NS // 10)
    speed_at_49, _ = speed_filter.estimate(49 * NS // 10)
    assert speed_at_49 - speed_at_39 == pytest.approx(1.0, abs=1e-6)


def test_filter_has_no_estimate_after_max_age_and_restarts():
    speed_filter = SpeedFilter()
    assert math.isnan(speed_filter.estimate(0)[0])
    speed_filter.update(0, 8.0, SPAN)
    assert speed_filter.estimate(NS)[0] == pytest.approx(8.0)
    assert math.isnan(speed_filter.estimate(NS + 1)[0])
    # Far from the old state but nothing to gate against any more: taken as a new start.
    assert speed_filter.update(2 * NS, 15.0, SPAN)
    assert speed_filter.estimate(2 * NS)[0] == pytest.approx(15.0)
    # A stamp that steps back (a bag loop) starts it again too.
    assert speed_filter.update(0, 3.0, SPAN)
    assert speed_filter.estimate(0)[0] == pytest.approx(3.0)


def test_config_validation():
    with pytest.raises(ValueError, match='measurement_sigma'):
        SpeedFilterConfig(measurement_sigma=0.0)
    with pytest.raises(ValueError, match='max_age_ns'):
        SpeedFilterConfig(max_age_ns=0)
