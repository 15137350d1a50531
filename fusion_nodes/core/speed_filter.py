"""Forward speed from the lidar registrations without their lag: a constant-acceleration
Kalman filter.

A registration over span s measures the mean speed over the last s, which under an
acceleration a is the speed s / 2 ago: v - a s / 2. The median of the last few registrations
lags further (README: on the cached recordings the lidar odometry's forward speed was off by
0.3 s times the acceleration, and the generator brakes and starts at 2 m/s^2). The filter
tracks speed and acceleration, reads each registration through that model and so gives the
speed at the scan's own stamp. Its state is driven by white jerk (jerk_density); a
registration whose innovation is beyond gate_chi2 is not taken (one confident wrong match
can read 12 m/s backwards at 11 m/s forwards); the acceleration is clipped to max_accel;
and with nothing taken for max_age_ns the filter has no estimate and the next registration
starts it again. LidarOdometry also starts it again at its robust median where the two part
by more than its anchor, since a filter that has taken a run of wrong matches, or rejected
a run of right ones, does not come back by itself.
"""

from dataclasses import dataclass
import math

import numpy as np

from fusion_nodes.core.config import NS_PER_S


@dataclass(frozen=True)
class SpeedFilterConfig:
    """Sigmas in m/s and m/s^2."""

    measurement_sigma: float = 0.5  # one registration's forward speed (1 m/s cell quanta)
    jerk_density: float = 2.0  # (m/s^3)^2 s
    initial_accel_sigma: float = 2.0
    gate_chi2: float = 9.0
    max_accel: float = 8.0  # m/s^2: hard braking
    max_age_ns: int = 1_000_000_000

    def __post_init__(self) -> None:
        if min(self.measurement_sigma, self.jerk_density, self.initial_accel_sigma,
               self.gate_chi2, self.max_accel) <= 0.0:
            raise ValueError('measurement_sigma, jerk_density, initial_accel_sigma, gate_chi2 '
                             'and max_accel must be positive')
        if self.max_age_ns <= 0:
            raise ValueError('max_age_ns must be positive')


class SpeedFilter:
    """Speed and acceleration from mean speeds over known spans; time in int nanoseconds."""

    def __init__(self, cfg: SpeedFilterConfig = SpeedFilterConfig()) -> None:
        self._cfg = cfg
        self._measurement_variance = cfg.measurement_sigma ** 2
        self.rejected = 0
        self.reset()

    def reset(self) -> None:
        self._state: np.ndarray | None = None  # (speed, acceleration) at self._stamp
        self._covariance = np.zeros((2, 2))
        self._stamp = 0
        self._taken_stamp = 0

    def restart(self, stamp_ns: int, speed: float) -> None:
        """Start again at speed, acceleration unknown around 0."""
        self._state = np.array([float(speed), 0.0])
        self._covariance = np.diag([self._measurement_variance,
                                    self._cfg.initial_accel_sigma ** 2])
        self._stamp = self._taken_stamp = int(stamp_ns)

    def update(self, stamp_ns: int, mean_speed: float, span_ns: int) -> bool:
        """Take the mean speed over the span_ns ending at stamp_ns; whether it was taken."""
        stamp = int(stamp_ns)
        if not self._live(stamp):
            self.restart(stamp, mean_speed)
            return True
        self._predict(stamp)
        # The mean over the span of a constant acceleration is the speed at its middle.
        observe = np.array([1.0, -0.5 * span_ns / NS_PER_S])
        innovation_variance = float(observe @ self._covariance @ observe
                                    + self._measurement_variance)
        innovation = float(mean_speed - observe @ self._state)
        if innovation * innovation > self._cfg.gate_chi2 * innovation_variance:
            self.rejected += 1
            return False
        gain = self._covariance @ observe / innovation_variance
        self._state = self._state + gain * innovation
        self._covariance = self._covariance - np.outer(gain, observe @ self._covariance)
        self._state[1] = float(np.clip(self._state[1], -self._cfg.max_accel, self._cfg.max_accel))
        self._taken_stamp = stamp
        return True

    def estimate(self, stamp_ns: int) -> tuple[float, float]:
        """(speed, variance) at stamp_ns; NaN with nothing taken for max_age_ns."""
        stamp = int(stamp_ns)
        if not self._live(stamp):
            return math.nan, math.nan
        ahead = max(0.0, (stamp - self._stamp) / NS_PER_S)
        transition = np.array([1.0, ahead])
        variance = (transition @ self._covariance @ transition
                    + self._cfg.jerk_density * ahead ** 3 / 3.0)
        return float(transition @ self._state), float(variance)

    def _live(self, stamp: int) -> bool:
        return (self._state is not None
                and 0 <= stamp - self._taken_stamp <= self._cfg.max_age_ns)

    def _predict(self, stamp: int) -> None:
        dt = (stamp - self._stamp) / NS_PER_S
        if dt <= 0.0:
            return
        transition = np.array([[1.0, dt], [0.0, 1.0]])
        q = self._cfg.jerk_density
        noise = q * np.array([[dt ** 3 / 3.0, dt ** 2 / 2.0], [dt ** 2 / 2.0, dt]])
        self._state = transition @ self._state
        self._covariance = transition @ self._covariance @ transition.T + noise
        self._stamp = stamp
