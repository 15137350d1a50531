"""GPS tracking in a local ENU frame: velocity, jump gating and health from NavSatFix data.

A constant-velocity Kalman filter on east/north turns noisy fixes into a velocity and gives
the innovation that flags multipath jumps (squared Mahalanobis distance against a chi-square
gate, rather than robot_localization's disabled-by-default threshold). A jumped fix is
reported and flagged but never folded into the state, so one spike can't drag the track;
persistent disagreement re-anchors the position after a few fixes and keeps the velocity (a
receiver that settles on a reflected solution jumps in position, not in speed). After an
outage longer than stale_after_s the track restarts at the new fix, moving at the mean
velocity across the gap (the displacement since the last good fix over the time between),
not at 0: a robot leaving a tunnel has not stopped. Multipath
comes in episodes, so the 'multipath' health feature decays linearly over jump_hold_s after
the last rejected fix instead of marking that fix alone.

The filter's velocity lags an acceleration by about three quarters of a second (README: its
speed error went with the truth's acceleration as -0.75 s, correlation -0.88, on the
recordings it was tuned on), which its own covariance knows nothing of: it stated under half
the error's sigma. The velocity covariance a sample carries (gps_node's published twist)
therefore adds the lag times the acceleration the filter's velocity shows over the last
second or more (velocity_lag_s), and a floor for the receiver's wandering error
(velocity_floor_sigma). The network's features are the filter's velocity itself, as the
shipped model was trained on.
"""

from collections import deque
from dataclasses import dataclass
import math
from typing import Any, Mapping

import numpy as np

from fusion_nodes.core.config import NS_PER_S
from fusion_nodes.core.geodesy import EnuFrame

GPS_FEATURES = ('speed', 'course_rate', 'velocity_east', 'velocity_north', 'sigma_h',
                'status', 'dt', 'valid')
GPS_HEALTH_FEATURES = ('fix_valid', 'sigma_h', 'multipath', 'age')
STATUS_NO_FIX = -1
COVARIANCE_TYPE_UNKNOWN = 0
_ACCEL_SPAN_NS = NS_PER_S


@dataclass(frozen=True)
class GpsTrackerConfig:
    """origin is (lat, lon, alt); None anchors ENU at the first valid fix."""

    origin: tuple[float, float, float] | None = None
    default_sigma_m: float = 5.0
    accel_sigma: float = 2.0
    jump_gate_chi2: float = 13.8  # 99.9 % for 2 degrees of freedom
    reanchor_after: int = 5
    stale_after_s: float = 2.0
    min_course_speed: float = 1.0
    jump_hold_s: float = 2.0
    velocity_lag_s: float = 0.8
    velocity_floor_sigma: float = 0.3  # m/s

    def __post_init__(self) -> None:
        if self.jump_hold_s <= 0.0 or self.stale_after_s <= 0.0:
            raise ValueError('jump_hold_s and stale_after_s must be positive')
        if self.velocity_lag_s < 0.0 or self.velocity_floor_sigma < 0.0:
            raise ValueError('velocity_lag_s and velocity_floor_sigma must be >= 0')

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> 'GpsTrackerConfig':
        """The config gps_node's parameters describe (origin_from_first_fix: origin None)."""
        origin = None
        if not params['origin_from_first_fix']:
            origin = (float(params['origin_latitude']), float(params['origin_longitude']),
                      float(params['origin_altitude']))
        return cls(origin=origin, default_sigma_m=float(params['default_sigma_m']),
                   jump_gate_chi2=float(params['jump_gate_chi2']),
                   stale_after_s=float(params['stale_after_s']),
                   jump_hold_s=float(params['jump_hold_s']),
                   velocity_lag_s=float(params['velocity_lag_s']),
                   velocity_floor_sigma=float(params['velocity_floor_sigma']))


@dataclass(frozen=True)
class GpsSample:
    """One processed fix: ENU state, flags, network features and health features."""

    stamp_ns: int
    valid: bool
    jump: bool
    position_enu: np.ndarray
    velocity_enu: np.ndarray
    position_covariance: np.ndarray
    velocity_covariance: np.ndarray
    features: np.ndarray
    health: np.ndarray


class GpsTracker:
    """Feeds fixes (anything with GpsFix's attributes) in stamp order; see module docstring."""

    def __init__(self, cfg: GpsTrackerConfig = GpsTrackerConfig()) -> None:
        self._cfg = cfg
        self.frame: EnuFrame | None = EnuFrame(*cfg.origin) if cfg.origin else None
        self.resets = 0
        self.reset()

    def reset(self) -> None:
        """Forget the track (kept: the ENU origin) after a time jump or a long outage."""
        self._state: np.ndarray | None = None
        self._cov = np.zeros((4, 4))
        self._last_stamp: int | None = None
        self._last_valid_stamp: int | None = None
        self._last_track: tuple[int, np.ndarray] | None = None  # stamp, filtered position
        self._course: float | None = None
        self._jumps_in_row = 0
        self._last_jump_stamp: int | None = None
        self._velocities: deque[tuple[int, np.ndarray]] = deque()  # stamp, filtered velocity

    def update(self, fix) -> GpsSample:
        """Process one fix; a stamp at or before the previous one resets the track first."""
        cfg = self._cfg
        stamp = int(fix.stamp_ns)
        if self._last_stamp is not None and stamp <= self._last_stamp:
            self.resets += 1
            self.reset()
        dt = 0.0 if self._last_stamp is None else (stamp - self._last_stamp) / NS_PER_S
        self._last_stamp = stamp
        valid = fix.status > STATUS_NO_FIX and math.isfinite(fix.latitude)
        if valid and self.frame is None:
            self.frame = EnuFrame(fix.latitude, fix.longitude, fix.altitude)
        if not valid:
            self._predict(dt)
            return self._sample(stamp, False, False, np.full(3, np.nan), None, dt, fix.status)

        enu = self.frame.to_enu(fix.latitude, fix.longitude, fix.altitude)
        measurement_cov = self._measurement_covariance(fix)
        restart_velocity = np.zeros(2)
        if self._state is not None and self._last_valid_stamp is not None:
            gap = (stamp - self._last_valid_stamp) / NS_PER_S
            if gap > cfg.stale_after_s:
                # Outage: the filter's extrapolation is worthless by now, the mean velocity
                # across the gap is the best guess there is until the next fixes refine it.
                self._state = None
                if self._last_track is not None:
                    track_stamp, track_position = self._last_track
                    restart_velocity = ((enu[:2] - track_position)
                                        / ((stamp - track_stamp) / NS_PER_S))
        jump = False
        if self._state is None:
            self._state = np.array([enu[0], enu[1], *restart_velocity])
            self._cov = np.diag([measurement_cov[0, 0], measurement_cov[1, 1], 25.0, 25.0])
        else:
            self._predict(dt)
            jump = self._correct(enu[:2], measurement_cov[:2, :2])
        if jump:
            self._last_jump_stamp = stamp
        else:
            self._last_track = (stamp, self._state[:2].copy())
        self._last_valid_stamp = stamp
        return self._sample(stamp, True, jump, enu, measurement_cov, dt, fix.status)

    def _measurement_covariance(self, fix) -> np.ndarray:
        cov = np.asarray(fix.position_covariance, dtype=np.float64).reshape(3, 3)
        if fix.covariance_type == COVARIANCE_TYPE_UNKNOWN or not np.all(np.isfinite(cov)) \
                or cov[0, 0] <= 0.0 or cov[1, 1] <= 0.0:
            return np.diag([self._cfg.default_sigma_m ** 2] * 3)
        return cov

    def _predict(self, dt: float) -> None:
        if self._state is None or dt <= 0.0:
            return
        f = np.eye(4)
        f[0, 2] = f[1, 3] = dt
        q = self._cfg.accel_sigma ** 2
        g = np.array([[dt * dt / 2.0, 0.0], [0.0, dt * dt / 2.0], [dt, 0.0], [0.0, dt]])
        self._state = f @ self._state
        self._cov = f @ self._cov @ f.T + q * g @ g.T

    def _correct(self, position: np.ndarray, measurement_cov: np.ndarray) -> bool:
        h = np.zeros((2, 4))
        h[0, 0] = h[1, 1] = 1.0
        innovation = position - h @ self._state
        s = h @ self._cov @ h.T + measurement_cov
        mahalanobis2 = float(innovation @ np.linalg.solve(s, innovation))
        if mahalanobis2 > self._cfg.jump_gate_chi2:
            self._jumps_in_row += 1
            if self._jumps_in_row < self._cfg.reanchor_after:
                return True
            # The receiver settled on a new solution: follow its position, keep the speed.
            self._state[:2] = position
            self._cov[:2, :] = 0.0
            self._cov[:, :2] = 0.0
            self._cov[0, 0], self._cov[1, 1] = measurement_cov[0, 0], measurement_cov[1, 1]
            self._jumps_in_row = 0
            return True
        self._jumps_in_row = 0
        gain = self._cov @ h.T @ np.linalg.inv(s)
        self._state = self._state + gain @ innovation
        self._cov = (np.eye(4) - gain @ h) @ self._cov
        return False

    def _unmodelled_velocity_cov(self, stamp: int, velocity: np.ndarray) -> np.ndarray:
        """The lag behind the acceleration seen over the last second or more, and the floor."""
        history = self._velocities
        history.append((stamp, velocity.copy()))
        while len(history) > 2 and stamp - history[1][0] >= _ACCEL_SPAN_NS:
            history.popleft()
        acceleration = np.zeros(2)
        then, old_velocity = history[0]
        if stamp - then >= _ACCEL_SPAN_NS:
            acceleration = (velocity - old_velocity) / ((stamp - then) / NS_PER_S)
        lag = self._cfg.velocity_lag_s * acceleration
        return np.outer(lag, lag) + np.eye(2) * self._cfg.velocity_floor_sigma ** 2

    def _sample(self, stamp: int, valid: bool, jump: bool, enu: np.ndarray,
                measurement_cov: np.ndarray | None, dt: float, status: int) -> GpsSample:
        cfg = self._cfg
        if self._state is not None:
            velocity = self._state[2:].copy()
            velocity_cov = self._cov[2:, 2:] + self._unmodelled_velocity_cov(stamp, velocity)
        else:
            velocity = np.zeros(2)
            velocity_cov = np.diag([25.0, 25.0])
        speed = float(np.hypot(*velocity))
        course_rate = 0.0
        if speed >= cfg.min_course_speed:
            course = math.atan2(velocity[1], velocity[0])
            if self._course is not None and dt > 0.0:
                course_rate = math.remainder(course - self._course, 2.0 * math.pi) / dt
            self._course = course
        else:
            self._course = None
        cov = measurement_cov if measurement_cov is not None else np.diag([1e6] * 3)
        sigma_h = math.sqrt(max(cov[0, 0], cov[1, 1]))
        if self._last_valid_stamp is None:
            age = cfg.stale_after_s
        else:
            age = (stamp - self._last_valid_stamp) / NS_PER_S
        multipath = 0.0
        if self._last_jump_stamp is not None:
            since_jump = (stamp - self._last_jump_stamp) / NS_PER_S
            multipath = max(0.0, 1.0 - since_jump / cfg.jump_hold_s)
        features = np.array([
            speed / 20.0, np.clip(course_rate, -2.0, 2.0), velocity[0] / 20.0,
            velocity[1] / 20.0, min(sigma_h / 10.0, 1.0), (status + 1) / 3.0, min(dt, 1.0),
            1.0 if valid else 0.0,
        ], dtype=np.float32)
        health = np.array([
            1.0 if valid else 0.0, min(sigma_h / 10.0, 1.0), multipath,
            min(age / cfg.stale_after_s, 1.0),
        ], dtype=np.float32)
        return GpsSample(stamp, valid, jump, np.asarray(enu, dtype=np.float64), velocity, cov,
                         velocity_cov, features, health)
