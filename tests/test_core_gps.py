"""GPS geodesy and tracking: ENU, velocity, jump gating, resets."""

from dataclasses import dataclass

import numpy as np
import pytest

from fusion_nodes.core.geodesy import EnuFrame, geodetic_to_ecef
from fusion_nodes.core.gps import GpsTracker, GpsTrackerConfig

ORIGIN = (48.137, 11.575, 520.0)


@dataclass
class Fix:
    stamp_ns: int
    latitude: float
    longitude: float
    altitude: float
    status: int = 0
    covariance_type: int = 2
    position_covariance: tuple = (0.25, 0, 0, 0, 0.25, 0, 0, 0, 1.0)


def test_ecef_of_known_point():
    # Equator / prime meridian lies on the semi-major axis.
    np.testing.assert_allclose(geodetic_to_ecef(0.0, 0.0, 0.0), [6378137.0, 0.0, 0.0])
    np.testing.assert_allclose(geodetic_to_ecef(90.0, 0.0, 0.0)[2], 6356752.314245, atol=1e-3)


def test_enu_round_trip_and_scale():
    frame = EnuFrame(*ORIGIN)
    enu = frame.to_enu(ORIGIN[0] + 0.001, ORIGIN[1], ORIGIN[2])
    # One millidegree of latitude is about 111.2 m north at this latitude.
    assert abs(enu[1] - 111.2) < 0.3 and abs(enu[0]) < 1e-6
    for point in ([100.0, -250.0, 3.0], [-1500.0, 800.0, -20.0]):
        np.testing.assert_allclose(frame.to_enu(*frame.to_geodetic(point)), point, atol=1e-6)


def _drive(tracker, velocity, steps, noise=0.3, jump_at=None, seed=0, step_from=None):
    frame = EnuFrame(*ORIGIN)
    rng = np.random.default_rng(seed)
    samples = []
    for k in range(steps):
        enu = np.array([velocity[0] * k * 0.1, velocity[1] * k * 0.1, 0.0])
        enu += rng.normal(0.0, noise, 3)
        if jump_at is not None and k == jump_at:
            enu[0] += 25.0
        if step_from is not None and k >= step_from:
            enu[1] += 15.0
        samples.append(tracker.update(Fix(k * 100_000_000, *frame.to_geodetic(enu))))
    return samples


def test_velocity_converges_and_origin_is_param_or_first_fix():
    tracker = GpsTracker(GpsTrackerConfig(origin=ORIGIN))
    samples = _drive(tracker, (6.0, -2.0), 80)
    np.testing.assert_allclose(samples[-1].velocity_enu, [6.0, -2.0], atol=0.4)
    assert abs(samples[-1].features[0] * 20.0 - np.hypot(*samples[-1].velocity_enu)) < 1e-5
    first_fix_tracker = GpsTracker()
    first = _drive(first_fix_tracker, (1.0, 0.0), 1)[0]
    np.testing.assert_allclose(first.position_enu, 0.0, atol=1e-6)


def test_velocity_covariance_admits_the_lag_behind_an_acceleration():
    frame = EnuFrame(*ORIGIN)
    cfg = GpsTrackerConfig(origin=ORIGIN)
    plain = GpsTrackerConfig(origin=ORIGIN, velocity_lag_s=0.0, velocity_floor_sigma=0.0)
    for accel, check in ((0.0, 'steady'), (2.0, 'braking')):
        samples = {}
        for name, config in (('shipped', cfg), ('plain', plain)):
            tracker = GpsTracker(config)
            for k in range(60):
                t = k * 0.1
                east = 12.0 * t - 0.5 * accel * t * t  # braking at accel from 12 m/s
                sample = tracker.update(Fix(k * 100_000_000, *frame.to_geodetic([east, 0, 0])))
            samples[name] = sample
        lag_error = samples['plain'].velocity_enu[0] - (12.0 - accel * 5.9)
        added = (samples['shipped'].velocity_covariance - samples['plain'].velocity_covariance)
        if check == 'steady':
            # Nothing to lag behind: only the floor is added.
            np.testing.assert_allclose(added, np.eye(2) * 0.3 ** 2, atol=1e-6)
        else:
            # The filter is behind the braking, and the added east variance covers that.
            assert lag_error > 0.5
            assert added[0, 0] > 0.7 * lag_error ** 2
            assert samples['shipped'].features == pytest.approx(samples['plain'].features)


def test_multipath_jump_is_flagged_and_not_followed():
    samples = _drive(GpsTracker(GpsTrackerConfig(origin=ORIGIN)), (5.0, 0.0), 60, jump_at=40)
    assert samples[40].jump and samples[40].health[2] == 1.0
    assert not any(s.jump for s in samples[:40] + samples[41:])
    np.testing.assert_allclose(samples[41].velocity_enu, [5.0, 0.0], atol=0.6)
    # The multipath health holds for jump_hold_s (2 s) after the jump, falling linearly.
    multipath = [s.health[2] for s in samples]
    assert multipath[:40] == [0.0] * 40
    assert abs(multipath[50] - 0.5) < 1e-6 and multipath[59] > 0.0


def test_multipath_health_is_zero_again_after_the_hold():
    samples = _drive(GpsTracker(GpsTrackerConfig(origin=ORIGIN, jump_hold_s=1.0)), (5.0, 0.0),
                     60, jump_at=20)
    assert samples[25].health[2] > 0.0 and samples[30].health[2] == 0.0


def test_persistent_offset_reanchors_position_and_keeps_velocity():
    # A reflected solution 15 m north from fix 40 on: rejected, then followed from the 5th.
    samples = _drive(GpsTracker(GpsTrackerConfig(origin=ORIGIN)), (5.0, 0.0), 80, step_from=40)
    assert [s.jump for s in samples[40:46]] == [True] * 5 + [False]
    assert not any(s.jump for s in samples[46:])
    np.testing.assert_allclose(samples[44].position_enu[1], 15.0, atol=1.5)
    for s in samples[44:]:
        np.testing.assert_allclose(s.velocity_enu, [5.0, 0.0], atol=0.8)


def test_config_from_params_and_bad_hold():
    params = {'origin_from_first_fix': False, 'origin_latitude': ORIGIN[0],
              'origin_longitude': ORIGIN[1], 'origin_altitude': ORIGIN[2],
              'default_sigma_m': 4.0, 'jump_gate_chi2': 9.0, 'stale_after_s': 1.0,
              'jump_hold_s': 2.0, 'velocity_lag_s': 0.5, 'velocity_floor_sigma': 0.2}
    cfg = GpsTrackerConfig.from_params(params)
    assert cfg.origin == ORIGIN and cfg.jump_gate_chi2 == 9.0 and cfg.jump_hold_s == 2.0
    assert cfg.velocity_lag_s == 0.5 and cfg.velocity_floor_sigma == 0.2
    assert GpsTrackerConfig.from_params({**params, 'origin_from_first_fix': True}).origin is None
    with pytest.raises(ValueError, match='jump_hold_s'):
        GpsTrackerConfig(jump_hold_s=0.0)
    with pytest.raises(ValueError, match='velocity_lag_s'):
        GpsTrackerConfig(velocity_floor_sigma=-0.1)


def test_no_fix_and_outage_age():
    tracker = GpsTracker(GpsTrackerConfig(origin=ORIGIN))
    _drive(tracker, (3.0, 0.0), 10)
    lost = tracker.update(Fix(1_500_000_000, float('nan'), float('nan'), float('nan'), -1))
    assert not lost.valid and lost.health[0] == 0.0
    assert 0.25 < lost.health[3] < 0.35  # 0.6 s since the last fix of a 2 s stale limit


@pytest.mark.parametrize('no_fix_messages', [False, True])
def test_after_an_outage_the_track_restarts_at_the_mean_velocity_across_it(no_fix_messages):
    """Out of a 10 s tunnel at a new speed: the first fix moves at the mean speed through it."""
    frame = EnuFrame(*ORIGIN)
    tracker = GpsTracker(GpsTrackerConfig(origin=ORIGIN))
    before = _drive(tracker, (8.0, 0.0), 50, noise=0.1)
    np.testing.assert_allclose(before[-1].velocity_enu, [8.0, 0.0], atol=0.5)
    last = before[-1].position_enu[0]
    # Through the outage the robot averages 6 m/s east and 1 m/s north.
    if no_fix_messages:
        for k in range(50, 150):
            tracker.update(Fix(k * 100_000_000, float('nan'), float('nan'), float('nan'), -1))
    back = tracker.update(Fix(150 * 100_000_000, *frame.to_geodetic([last + 60.0, 10.0, 0.0])))
    assert back.valid and not back.jump
    np.testing.assert_allclose(back.velocity_enu, [6.0, 1.0], atol=0.1)
    assert back.features[0] == pytest.approx(np.hypot(6.0, 1.0) / 20.0, abs=0.01)


def test_time_jump_resets_track():
    tracker = GpsTracker(GpsTrackerConfig(origin=ORIGIN))
    _drive(tracker, (3.0, 0.0), 20)
    back = tracker.update(Fix(100, *EnuFrame(*ORIGIN).to_geodetic([0.0, 0.0, 0.0])))
    assert tracker.resets == 1 and back.valid and not back.jump
    np.testing.assert_allclose(back.velocity_enu, 0.0)


def test_unknown_covariance_uses_default_sigma():
    tracker = GpsTracker(GpsTrackerConfig(origin=ORIGIN, default_sigma_m=4.0))
    s = tracker.update(Fix(0, *ORIGIN, covariance_type=0, position_covariance=(0,) * 9))
    assert abs(s.health[1] - 0.4) < 1e-6
