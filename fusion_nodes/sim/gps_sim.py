"""GPS receiver model: ENU truth to WGS84 with time-correlated and white noise, and its faults.

The error is a slowly wandering part (sum of sinusoids with random periods of 10 to 120 s, a
deterministic stand-in for a Gauss-Markov process) plus white noise per fix. The stated
covariance is the honest total variance; multipath jumps and bias drift are not reflected in
it, as with a real receiver that does not know it is being fooled.
"""

from dataclasses import dataclass
import math

import numpy as np

from fusion_nodes.core.config import NS_PER_S
from fusion_nodes.core.geodesy import EnuFrame
from fusion_nodes.sim.scenario import FailureWindow, WorldParams

STATUS_NO_FIX = -1
STATUS_FIX = 0
COVARIANCE_TYPE_UNKNOWN = 0
COVARIANCE_TYPE_DIAGONAL_KNOWN = 2
_SINUSOIDS = 6
_CORRELATED_SHARE = 0.7  # of the variance; the rest is white
_MULTIPATH_SLOT_NS = round(1.5 * NS_PER_S)


@dataclass(frozen=True)
class GpsFix:
    """One NavSatFix worth of data (NaN position when there is no fix)."""

    latitude: float
    longitude: float
    altitude: float
    status: int
    covariance: tuple[float, ...]
    covariance_type: int


class GpsSimulator:
    """Noisy fixes of the base_link position for one seed."""

    def __init__(self, origin: tuple[float, float, float], params: WorldParams,
                 seed: int) -> None:
        self.frame = EnuFrame(*origin)
        self.seed = seed
        self.sigma = np.array([params.gps_sigma_h_m, params.gps_sigma_h_m, params.gps_sigma_v_m])
        rng = np.random.default_rng([seed, 31])
        self._freq = 1.0 / rng.uniform(10.0, 120.0, (3, _SINUSOIDS))
        self._phase = rng.uniform(0.0, 2.0 * np.pi, (3, _SINUSOIDS))
        # Each sinusoid of amplitude a has variance a^2 / 2.
        self._amp = self.sigma[:, None] * math.sqrt(2.0 * _CORRELATED_SHARE / _SINUSOIDS)
        self._white = self.sigma * math.sqrt(1.0 - _CORRELATED_SHARE)

    def error_enu(self, t_ns: int) -> np.ndarray:
        """Nominal receiver error (east, north, up) in metres at true time t_ns."""
        t = t_ns / NS_PER_S
        wander = (self._amp * np.sin(2.0 * np.pi * self._freq * (t % 1e5) + self._phase)).sum(1)
        white = np.random.default_rng([self.seed, 37, t_ns]).normal(0.0, 1.0, 3) * self._white
        return wander + white

    def fix(self, t_ns: int, east: float, north: float, window: FailureWindow | None,
            window_start_ns: int = 0) -> GpsFix | None:
        """The fix at true time t_ns for a true ENU position; None when the receiver is silent."""
        kind = window.kind if window is not None else None
        if kind == 'outage':
            return None
        if kind == 'no_fix':
            return GpsFix(math.nan, math.nan, math.nan, STATUS_NO_FIX, (0.0,) * 9,
                          COVARIANCE_TYPE_UNKNOWN)
        enu = np.array([east, north, 0.0]) + self.error_enu(t_ns)
        if kind == 'multipath':
            enu += self._multipath(window, window_start_ns, t_ns)
        elif kind == 'drift':
            rate = float(window.params.get('rate_mps', 0.5))
            direction = np.random.default_rng([self.seed, 43, window_start_ns]).normal(
                0.0, 1.0, 3) * np.array([1.0, 1.0, 0.3])
            direction /= np.linalg.norm(direction)
            enu += direction * rate * (t_ns - window_start_ns) / NS_PER_S
        lat, lon, alt = self.frame.to_geodetic(enu)
        var = self.sigma ** 2
        cov = (var[0], 0.0, 0.0, 0.0, var[1], 0.0, 0.0, 0.0, var[2])
        return GpsFix(lat, lon, alt, STATUS_FIX, tuple(float(v) for v in cov),
                      COVARIANCE_TYPE_DIAGONAL_KNOWN)

    def corrupts(self, window: FailureWindow | None, window_start_ns: int, t_ns: int) -> bool:
        """Whether the fix at t_ns differs from a healthy receiver's.

        A multipath slot without a reflection delivers healthy fixes, so it is not a failure.
        """
        if window is None:
            return False
        if window.kind == 'multipath':
            return bool(np.any(self._multipath(window, window_start_ns, t_ns)))
        return True

    @staticmethod
    def change_times_ns(window: FailureWindow, window_start_ns: int,
                        window_end_ns: int) -> list[int]:
        """Times inside a window at which corrupts() may change: multipath slot edges."""
        if window.kind != 'multipath':
            return []
        return list(range(window_start_ns + _MULTIPATH_SLOT_NS, window_end_ns,
                          _MULTIPATH_SLOT_NS))

    def _multipath(self, window: FailureWindow, window_start_ns: int, t_ns: int) -> np.ndarray:
        """Piecewise-constant reflections: each 1.5 s slot jumps (or not) to its own offset."""
        slot = int((t_ns - window_start_ns) // _MULTIPATH_SLOT_NS)
        rng = np.random.default_rng([self.seed, 41, window_start_ns, slot])
        if rng.random() < 0.25:
            return np.zeros(3)
        jump = float(window.params.get('jump_m', 10.0)) * rng.uniform(0.5, 1.5)
        heading = rng.uniform(0.0, 2.0 * np.pi)
        return np.array([jump * math.cos(heading), jump * math.sin(heading),
                         rng.normal(0.0, 0.5 * jump)])
