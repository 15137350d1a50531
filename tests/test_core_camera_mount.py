"""Camera mount check: the ground flows at the bottom; upside down, at the top."""

import pytest

from fusion_nodes.core.camera_mount import (
    bottom_to_top_log_ratio, CameraMountConfig, CameraMountMonitor)
from tests.mount_scenes import road_frame

NS = 1_000_000_000


def test_ground_flow_is_larger_at_the_bottom_and_flips_with_the_image():
    from fusion_nodes.core.align.signatures import dense_flow
    upright = dense_flow(road_frame(0.0), road_frame(0.1))
    turned = dense_flow(road_frame(0.0, upside_down=True), road_frame(0.1, upside_down=True))
    ratio, moving = bottom_to_top_log_ratio(upright, 1 / 3)
    assert ratio > 1.0 and moving > 0.3
    assert bottom_to_top_log_ratio(turned, 1 / 3)[0] < -1.0


def _drive(monitor, start_s, seconds, upside_down, speed=8.0, rate_hz=30.0):
    return [monitor.update(round((start_s + k / rate_hz) * NS),
                           road_frame(start_s + k / rate_hz, speed, upside_down))
            for k in range(int(seconds * rate_hz))]


def test_monitor_alarms_within_a_second_and_clears_when_righted():
    monitor = CameraMountMonitor()
    upright = _drive(monitor, 0.0, 2.0, False)
    assert not any(s.in_error for s in upright) and upright[-1].steps >= 15
    turned = _drive(monitor, 2.0, 2.0, True)
    first = next(k for k, s in enumerate(turned) if s.in_error)
    assert first <= 30  # frames at 30 Hz
    assert turned[-1].log_ratio < 0.0
    righted = _drive(monitor, 4.0, 1.0, False)
    assert not righted[-1].in_error


def test_monitor_waits_for_motion_and_resets_on_a_step_back():
    monitor = CameraMountMonitor()
    parked = _drive(monitor, 0.0, 2.0, True, speed=0.0)
    assert parked[-1].steps == 0 and not parked[-1].in_error
    _drive(monitor, 2.0, 2.0, True)
    assert monitor.state().in_error
    monitor.update(0, road_frame(0.0))
    assert not monitor.state().in_error and monitor.state().steps == 0


def test_config_validation():
    with pytest.raises(ValueError, match='band_fraction'):
        CameraMountConfig(band_fraction=0.7)
    with pytest.raises(ValueError, match='ceiling'):
        CameraMountConfig(ceiling=1.0)
