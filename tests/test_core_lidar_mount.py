"""Lidar mount check: registration signs, the heading of travel, and the CUSUM alarm."""

import numpy as np
import pytest

from fusion_nodes.core.lidar_mount import (
    LidarMountConfig, LidarMountMonitor, ScanMotion, ScanRegistration)
from tests.mount_scenes import occupancy, PILLARS, scene

NS = 1_000_000_000


def test_registration_recovers_forward_travel_and_left_yaw():
    world = scene()
    register = ScanRegistration(PILLARS.grid, LidarMountConfig())
    motion = register(occupancy(world, 10.0), occupancy(world, 13.0, 2.0))
    assert motion.yaw_deg == pytest.approx(2.0, abs=0.6)
    assert motion.shift_m[0] == pytest.approx(-3.0, abs=0.4)
    assert abs(motion.heading_deg) < 3.0
    assert motion.peak > 0.3


def test_heading_reads_the_mount_yaw_and_folds_reversing():
    world = scene(1)
    register = ScanRegistration(PILLARS.grid, LidarMountConfig())
    turned = register(occupancy(world, 10.0, 0.0, mount_yaw_deg=20.0),
                      occupancy(world, 13.0, 0.0, mount_yaw_deg=20.0))
    assert turned.heading_deg == pytest.approx(20.0, abs=2.0)
    backwards = register(occupancy(world, 13.0, 0.0), occupancy(world, 10.0, 0.0))
    assert abs(backwards.heading_deg) < 2.0
    assert ScanMotion(0.0, (3.0, 0.0), 1.0, False).heading_deg == pytest.approx(0.0)


def test_registration_refuses_mismatched_grids():
    register = ScanRegistration(PILLARS.grid, LidarMountConfig())
    with pytest.raises(ValueError, match='occupancy grids'):
        register(np.zeros((64, 64)), np.zeros((32, 64)))


def _drive(monitor: LidarMountMonitor, world: np.ndarray, start_s: float, seconds: float,
           mount_yaw_deg: float, speed: float = 8.0, rate_hz: float = 10.0):
    states = []
    for k in range(int(seconds * rate_hz)):
        t = start_s + k / rate_hz
        states.append(monitor.update(round(t * NS), occupancy(
            world, speed * t, 0.0, mount_yaw_deg=mount_yaw_deg)))
    return states


def test_monitor_alarms_on_a_turned_lidar_and_clears_when_fixed():
    world = scene(2)
    monitor = LidarMountMonitor(PILLARS.grid)
    healthy = _drive(monitor, world, 0.0, 5.0, 0.0)
    assert not any(s.in_error for s in healthy)
    assert healthy[-1].steps > 20
    turned = _drive(monitor, world, 5.0, 5.0, 20.0)
    first = next(k for k, s in enumerate(turned) if s.in_error)
    # The first lag's steps straddle the turn; then about ten clipped steps cross the alarm.
    assert first <= 20
    # Binary occupancy shifted by whole cells: single steps read 15 or 21 degrees here.
    assert 12.0 < turned[-1].heading_deg < 24.0
    fixed = _drive(monitor, world, 10.0, 5.0, 0.0)
    assert not fixed[-1].in_error


def test_travel_evidence_reads_steady_then_nothing_at_the_turn_then_turned():
    world = scene(2)
    monitor = LidarMountMonitor(PILLARS.grid)
    healthy = _drive(monitor, world, 0.0, 3.0, 0.0)
    assert np.isnan(healthy[0].travel_heading_deg)  # no step yet
    assert abs(healthy[-1].travel_heading_deg) < 3.0
    turned = _drive(monitor, world, 3.0, 3.0, 20.0)
    # Long before the alarm the evidence says turned, and never steady on the way: the
    # registrations across the turn hit the search edge, which voids the older steps.
    steady = [s for s in turned if abs(s.travel_heading_deg) <= 3.0]
    assert not steady
    first = next(k for k, s in enumerate(turned) if abs(s.travel_heading_deg) >= 10.0)
    alarm = next(k for k, s in enumerate(turned) if s.in_error)
    assert first < alarm and first <= 12
    assert any(np.isnan(s.travel_heading_deg) for s in turned[:first])


def test_travel_evidence_ages_out_while_parked():
    world = scene(2)
    monitor = LidarMountMonitor(PILLARS.grid, LidarMountConfig(evidence_max_age_ns=2 * NS))
    _drive(monitor, world, 0.0, 3.0, 0.0)
    parked = [monitor.update(round((3.0 + k / 10) * NS), occupancy(world, 24.0, 0.0))
              for k in range(30)]
    assert abs(parked[5].travel_heading_deg) < 3.0
    assert np.isnan(parked[-1].travel_heading_deg)


def test_monitor_ignores_a_parked_vehicle_and_resets_on_a_step_back():
    world = scene(3)
    monitor = LidarMountMonitor(PILLARS.grid)
    parked = _drive(monitor, world, 0.0, 3.0, 20.0, speed=0.0)
    assert parked[-1].steps == 0 and not parked[-1].in_error
    _drive(monitor, world, 3.0, 5.0, 20.0)
    assert monitor.state().in_error
    monitor.update(0, occupancy(world, 0.0, 0.0))
    assert not monitor.state().in_error and monitor.state().steps == 0


def test_config_validation():
    with pytest.raises(ValueError, match='lag_ns'):
        LidarMountConfig(lag_ns=0)
    with pytest.raises(ValueError, match='max_yaw_deg'):
        LidarMountConfig(max_yaw_deg=20.0)
    with pytest.raises(ValueError, match='evidence_min_steps'):
        LidarMountConfig(evidence_steps=2, evidence_min_steps=3)
