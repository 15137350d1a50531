"""Lidar odometry from the mount check's registrations, and inverse-variance fusion."""

import numpy as np
import pytest

from fusion_nodes.core.lidar_mount import LidarMountMonitor, ScanMotion
from fusion_nodes.core.lidar_odometry import (
    fuse_inverse_variance, LidarOdometry, LidarOdometryConfig, OdometryEstimate)
from tests.mount_scenes import occupancy, PILLARS, scene

NS = 1_000_000_000


def _drive(speed: float, seconds: float = 2.0, yaw_rate_deg: float = 0.0):
    """(monitor states, odometry estimates) of a lidar driven along a gentle arc."""
    world = scene(6)
    monitor, odometry = LidarMountMonitor(PILLARS.grid), LidarOdometry()
    rate = np.radians(yaw_rate_deg)
    estimates = []
    for k in range(int(seconds * 10)):
        t = k / 10
        heading = rate * t
        if rate:
            x, y = speed / rate * np.sin(heading), speed / rate * (1.0 - np.cos(heading))
        else:
            x, y = speed * t, 0.0
        state = monitor.update(round(t * NS), occupancy(world, x, np.degrees(heading), y=y))
        estimates.append(odometry.update(round(t * NS), state.motion, state.motion_span_ns))
    return estimates


def test_odometry_reads_the_speed_and_yaw_rate_driven():
    estimates = _drive(8.0, yaw_rate_deg=4.0)
    assert not estimates[0].valid  # no registration yet
    last = estimates[-1]
    assert last.valid
    assert last.velocity[0] == pytest.approx(8.0, abs=0.5)
    assert abs(last.velocity[1]) < 0.5
    assert last.velocity[2] == pytest.approx(np.radians(4.0), abs=0.02)
    assert np.all(last.variance >= np.square(LidarOdometryConfig().floor_sigma) - 1e-12)


def test_odometry_skips_poor_matches_and_ages_out():
    odometry = LidarOdometry()
    good = ScanMotion(0.0, (-4.0, 0.0), 0.6, False)
    poor = ScanMotion(0.0, (-20.0, 0.0), 0.25, False)
    edge = ScanMotion(10.0, (-20.0, 0.0), 0.9, True)
    odometry.update(0, good, NS // 2)
    odometry.update(NS // 10, poor, NS // 2)
    estimate = odometry.update(2 * NS // 10, edge, NS // 2)
    assert not estimate.valid  # one kept step, two needed
    estimate = odometry.update(3 * NS // 10, good, NS // 2)
    assert estimate.velocity[0] == pytest.approx(8.0)
    assert odometry.estimate(3 * NS // 10 + NS // 2).valid
    assert not odometry.estimate(2 * NS).valid  # older than max_age_ns
    # A stamp that steps back (a bag loop) forgets the steps.
    assert not odometry.update(0, None, 0).valid


def test_odometry_spread_widens_its_variance():
    odometry = LidarOdometry()
    for k, shift in enumerate((-4.0, -5.0, -3.0)):
        estimate = odometry.update(k * NS // 10, ScanMotion(0.0, (shift, 0.0), 0.6, False),
                                   NS // 2)
    assert estimate.velocity[0] == pytest.approx(8.0)
    assert estimate.variance[0] == pytest.approx((1.4826 * 2.0) ** 2)
    assert estimate.variance[1] == pytest.approx(0.3 ** 2)


def test_inverse_variance_fusion_weighs_and_falls_back():
    velocity, variance = fuse_inverse_variance(
        np.array([10.0, 0.0, np.nan]), np.array([4.0, 1.0, 1.0]),
        np.array([8.0, np.nan, np.nan]), np.array([1.0, 1.0, 1.0]))
    assert velocity[0] == pytest.approx(8.4) and variance[0] == pytest.approx(0.8)
    assert velocity[1] == 0.0 and variance[1] == 1.0  # one side missing: the other
    assert np.isnan(velocity[2]) and np.isnan(variance[2])
    # A variance that is not positive makes that side unusable, not infinitely sure.
    velocity, _ = fuse_inverse_variance(np.array([1.0]), np.array([0.0]),
                                        np.array([3.0]), np.array([1.0]))
    assert velocity[0] == pytest.approx(3.0)
    assert not OdometryEstimate().valid


def test_config_validation():
    with pytest.raises(ValueError, match='min_steps'):
        LidarOdometryConfig(min_steps=4)
    with pytest.raises(ValueError, match='floor_sigma'):
        LidarOdometryConfig(floor_sigma=(0.3, 0.0, 0.1))
    with pytest.raises(ValueError, match='max_age_ns'):
        LidarOdometryConfig(max_age_ns=0)
