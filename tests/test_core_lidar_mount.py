"""Lidar mount check: registration signs, the heading of travel, and the CUSUM alarm."""

import numpy as np
import pytest

from fusion_nodes.core.lidar_mount import (
    LidarMountConfig, LidarMountMonitor, ScanMotion, ScanRegistration, SweepTurnCheck)
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


def test_travel_evidence_reads_turned_from_the_sweep_the_mount_jumps():
    world = scene(2)
    monitor = LidarMountMonitor(PILLARS.grid)
    healthy = _drive(monitor, world, 0.0, 3.0, 0.0)
    assert np.isnan(healthy[0].travel_heading_deg)  # no step yet
    assert abs(healthy[-1].travel_heading_deg) < 3.0
    assert healthy[-1].jumps == 0
    turned = _drive(monitor, world, 3.0, 3.0, 20.0)
    # The first turned sweep matches the one before it 20 degrees round: a mount jump, whose
    # evidence stands (straight before, turned by the jump) until the new frame's own steps.
    assert turned[0].jumps == 1
    assert turned[0].jump_deg == pytest.approx(-20.0, abs=2.0)
    assert turned[0].travel_heading_deg == pytest.approx(20.0, abs=2.0)
    assert all(abs(s.travel_heading_deg) >= 10.0 for s in turned)
    assert np.isnan(turned[-1].jump_deg) and turned[-1].jumps == 1
    assert not turned[0].in_error and turned[-1].in_error  # the alarm still takes its steps
    fixed = _drive(monitor, world, 6.0, 1.0, 0.0)
    assert fixed[0].jumps == 2
    assert all(abs(s.travel_heading_deg) < 3.0 for s in fixed)


def test_a_sharp_turn_of_the_vehicle_is_no_mount_jump():
    world = scene(4)
    monitor = LidarMountMonitor(PILLARS.grid)
    rate = np.radians(30.0)  # per second: half-second registrations hit their search edge
    radius = 8.0 / rate
    states = []
    for k in range(40):
        t = k / 10
        heading = rate * t
        states.append(monitor.update(round(t * NS), occupancy(
            world, radius * np.sin(heading), np.degrees(heading),
            y=radius * (1.0 - np.cos(heading)))))
    assert states[-1].jumps == 0
    assert not any(abs(s.travel_heading_deg) >= 10.0 for s in states)


def test_sweep_turn_tells_a_knocked_mount_from_a_moving_car():
    world = scene(5)
    cfg = LidarMountConfig()
    check = SweepTurnCheck(PILLARS.grid, cfg)
    before = occupancy(world, 10.0)
    driven = check(before, occupancy(world, 10.8, 1.5))
    assert driven.held(cfg) and not driven.is_jump(cfg)
    knocked = check(before, occupancy(world, 10.8, 0.0, mount_yaw_deg=-15.0))
    assert knocked.is_jump(cfg) and not knocked.held(cfg)
    assert knocked.yaw_deg == pytest.approx(15.0, abs=2.0)
    assert knocked.peak > 1.5 * knocked.still_peak


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
    with pytest.raises(ValueError, match='jump_still_deg < jump_min_deg'):
        LidarMountConfig(jump_still_deg=8.0)
    with pytest.raises(ValueError, match='jump_min_ratio'):
        LidarMountConfig(jump_min_ratio=1.0)
