"""Ego velocity from the lidar mount check's registrations, and its fusion with the network's.

The mount check (lidar_mount.py) registers every scan against the one about half a second
older: the shift and yaw between them are the vehicle's mean velocity and yaw rate over that
span. The network's ego head reads velocity from the GPS branch alone (single camera and lidar
frames hold no motion), so without GPS it falls back on a prior, and with GPS it is no better
than the fix's velocity. The lidar's own motion needs no GPS at all.

A registration is noisy and now and then wrong (a turn beyond the yaw search, a scene that
matches itself shifted), and a poor phase correlation peak foretells it (README: under 0.3,
13 % of steps were off by over 2 m/s; from 0.4, under 1 %). So steps under min_peak or on the
search edge are skipped, the estimate is the median of the last few kept steps within
max_age_ns, and its variance the larger of a floor and the steps' spread (MAD). That median
lags the truth by half the registration span and more, like any finite difference, so the
forward speed, the one that changes fast, comes from a constant-acceleration filter over the
same steps instead (speed_filter.py), started again at the median where the two part by more
than speed_anchor. Without the filter the forward speed was off by 0.3 s times the
acceleration and its stated variance four times too small (README).

Even a good peak is now and then a confident wrong match (20 m/s sideways with the floor
variance, on the demo's light lidar), and two of them carry the median. A vehicle cannot
change its velocity faster than it brakes, so an estimate further from the last one given
than max_accel (max_yaw_accel) allows over the time between, plus change_slack, is not
given (counted in implausible): the last one given is, its variance widened by the change
max_accel allows since, taken as three sigma. Nothing given for max_age_ns, the next
estimate is taken as it comes. The slack is for gross errors only: the lateral shift comes
in whole cells, 1 m/s quanta (0.5 m over half a second), so honest estimates jump by 2-3 m/s
between sweeps, and holding those back made the joined ego worse (README).

fuse_inverse_variance weighs two estimates of the same quantities by their variances;
join_ego is how fusion_node and fusion-eval join this one with the network's ego (its
predicted log variance).
"""

from collections import deque
from dataclasses import dataclass, field
import math

import numpy as np

from fusion_nodes.core.config import NS_PER_S
from fusion_nodes.core.lidar_mount import ScanMotion
from fusion_nodes.core.speed_filter import SpeedFilter, SpeedFilterConfig

ODOMETRY_FIELDS = ('vx', 'vy', 'yaw_rate')
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class LidarOdometryConfig:
    """Sigmas in m/s, m/s and rad/s for (vx, vy, yaw rate)."""

    min_peak: float = 0.3
    window_steps: int = 3
    min_steps: int = 2
    max_age_ns: int = 1_000_000_000
    floor_sigma: tuple[float, float, float] = (0.3, 0.3, 0.03)
    max_accel: float = 8.0  # m/s^2: hard braking
    max_yaw_accel: float = 1.0  # rad/s^2
    change_slack: tuple[float, float, float] = (3.0, 3.0, 0.3)
    speed_filter: SpeedFilterConfig | None = SpeedFilterConfig()  # None: the median's vx
    speed_anchor: float = 2.5  # m/s

    def __post_init__(self) -> None:
        if not 1 <= self.min_steps <= self.window_steps:
            raise ValueError('need 1 <= min_steps <= window_steps')
        if self.max_age_ns <= 0 or not 0.0 <= self.min_peak <= 1.0:
            raise ValueError('max_age_ns must be positive and min_peak in [0, 1]')
        if len(self.floor_sigma) != 3 or min(self.floor_sigma) <= 0.0:
            raise ValueError('floor_sigma needs three positive values (vx, vy, yaw rate)')
        if self.max_accel <= 0.0 or self.max_yaw_accel <= 0.0:
            raise ValueError('max_accel and max_yaw_accel must be positive')
        if len(self.change_slack) != 3 or min(self.change_slack) < 0.0:
            raise ValueError('change_slack needs three values >= 0 (vx, vy, yaw rate)')
        if self.speed_anchor <= 0.0:
            raise ValueError('speed_anchor must be positive')


@dataclass(frozen=True)
class OdometryEstimate:
    """(vx, vy, yaw rate) in base_link and their variances; NaN when there is no estimate."""

    velocity: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    variance: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))

    @property
    def valid(self) -> bool:
        return bool(np.all(np.isfinite(self.velocity)) and np.all(self.variance > 0.0))


class LidarOdometry:
    """Feeds each registration (ScanMotion and the span it covers), gives the estimate."""

    def __init__(self, cfg: LidarOdometryConfig = LidarOdometryConfig()) -> None:
        self._cfg = cfg
        self._floor = np.square(np.asarray(cfg.floor_sigma, dtype=np.float64))
        self._max_change_rate = np.array([cfg.max_accel, cfg.max_accel, cfg.max_yaw_accel])
        self._slack = np.asarray(cfg.change_slack, dtype=np.float64)
        self._steps: deque[tuple[int, np.ndarray]] = deque(maxlen=cfg.window_steps)
        self._given: OdometryEstimate | None = None  # the last plausible estimate given
        self._given_stamp = 0
        self.implausible = 0
        self._speed = None if cfg.speed_filter is None else SpeedFilter(cfg.speed_filter)

    @property
    def speed_rejected(self) -> int:
        """Registrations the speed filter did not take (0 without one)."""
        return 0 if self._speed is None else self._speed.rejected

    def reset(self) -> None:
        self._steps.clear()
        self._given = None
        if self._speed is not None:
            self._speed.reset()

    def update(self, stamp_ns: int, motion: ScanMotion | None, span_ns: int
               ) -> OdometryEstimate:
        """The estimate at stamp_ns after this scan's registration (None: no registration)."""
        if self._steps and stamp_ns < self._steps[-1][0]:
            self.reset()
        if (motion is not None and span_ns > 0 and not motion.on_search_edge
                and motion.peak >= self._cfg.min_peak):
            span_s = span_ns / NS_PER_S
            # The static world moved by shift_m: the vehicle by the opposite.
            step = np.array([-motion.shift_m[0] / span_s, -motion.shift_m[1] / span_s,
                             math.radians(motion.yaw_deg) / span_s])
            self._steps.append((int(stamp_ns), step))
            if self._speed is not None:
                self._speed.update(stamp_ns, float(step[0]), span_ns)
        given = self._plausible(int(stamp_ns), self.estimate(stamp_ns))
        if self._speed is None or not given.valid:
            return given
        return self._with_filtered_speed(int(stamp_ns), given)

    def _plausible(self, stamp: int, estimate: OdometryEstimate) -> OdometryEstimate:
        """estimate, or the last plausible one widened where estimate is not plausible."""
        if not estimate.valid:
            return estimate
        elapsed = stamp - self._given_stamp
        if self._given is None or not 0 <= elapsed <= self._cfg.max_age_ns:
            self._given, self._given_stamp = estimate, stamp
            return estimate
        allowance = self._max_change_rate * (elapsed / NS_PER_S) + self._slack
        if np.all(np.abs(estimate.velocity - self._given.velocity) <= allowance):
            self._given, self._given_stamp = estimate, stamp
            return estimate
        self.implausible += 1
        # The vehicle has done at most what the limits allow since the last plausible one.
        possible_change = self._max_change_rate * (elapsed / NS_PER_S) / 3.0
        return OdometryEstimate(self._given.velocity.copy(),
                                self._given.variance + np.square(possible_change))

    def _with_filtered_speed(self, stamp: int, given: OdometryEstimate) -> OdometryEstimate:
        """given with the speed filter's forward speed and variance."""
        speed, variance = self._speed.estimate(stamp)
        if not abs(speed - given.velocity[0]) <= self._cfg.speed_anchor:  # NaN included
            self._speed.restart(stamp, float(given.velocity[0]))
            speed, variance = self._speed.estimate(stamp)
        velocity, variances = given.velocity.copy(), given.variance.copy()
        velocity[0], variances[0] = speed, variance
        return OdometryEstimate(velocity, variances)

    def estimate(self, stamp_ns: int) -> OdometryEstimate:
        """The median of the recent kept steps at stamp_ns, before update's plausibility
        check and speed filter; it changes nothing."""
        recent = [v for stamp, v in self._steps if 0 <= stamp_ns - stamp <= self._cfg.max_age_ns]
        if len(recent) < self._cfg.min_steps:
            return OdometryEstimate()
        steps = np.stack(recent)
        median = np.median(steps, axis=0)
        spread = _MAD_TO_SIGMA * np.median(np.abs(steps - median), axis=0)
        return OdometryEstimate(median, np.maximum(np.square(spread), self._floor))


def fuse_inverse_variance(velocity_a: np.ndarray, variance_a: np.ndarray,
                          velocity_b: np.ndarray, variance_b: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise inverse-variance mean of two estimates and its variance.

    An element with a non-finite value or a variance that is not positive on one side takes
    the other side's; variances are floored at 1e-12 so a zero cannot swallow the other.
    """
    a, b = (np.asarray(v, dtype=np.float64) for v in (velocity_a, velocity_b))
    va, vb = (np.maximum(np.asarray(v, dtype=np.float64), 1e-12)
              for v in (variance_a, variance_b))
    usable_a = np.isfinite(a) & np.isfinite(va) & (np.asarray(variance_a) > 0.0)
    usable_b = np.isfinite(b) & np.isfinite(vb) & (np.asarray(variance_b) > 0.0)
    wa = np.where(usable_a, 1.0 / np.where(usable_a, va, 1.0), 0.0)
    wb = np.where(usable_b, 1.0 / np.where(usable_b, vb, 1.0), 0.0)
    total = wa + wb
    both_missing = total == 0.0
    total = np.where(both_missing, 1.0, total)
    mean = (wa * np.nan_to_num(a) + wb * np.nan_to_num(b)) / total
    return (np.where(both_missing, np.nan, mean), np.where(both_missing, np.nan, 1.0 / total))


def ego_variance(log_variance: np.ndarray) -> np.ndarray:
    """The network's predicted ego variance from its log variance, clipped to +-20 first so
    an extreme output can neither overflow nor claim certainty."""
    return np.exp(np.clip(np.asarray(log_variance, dtype=np.float64), -20.0, 20.0))


def join_ego(velocity: np.ndarray, log_variance: np.ndarray, odometry_velocity: np.ndarray,
             odometry_variance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The network's ego (velocity and log variance, [..., 3]) joined with the lidar
    odometry by inverse variance: (velocity, variance). NaN odometry leaves the network's."""
    return fuse_inverse_variance(velocity, ego_variance(log_variance), odometry_velocity,
                                 odometry_variance)
