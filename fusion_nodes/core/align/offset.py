"""Clock-offset estimation from motion signatures: windowed DTW lag plus sub-sample refinement.

A stream's offset is (its stamp - true capture) - (reference stamp - true capture). Both
signature series are resampled on one grid in their own stamp clocks, smoothed with the same
zero-phase Gaussian (no lag is added), z-normalised and warped with a banded DTW. The median
lag along the interior of the warping path seeds a local search: the mean squared difference at
the integer lags around it, and a parabola through the best three, gives the sub-sample lag.
OffsetTracker then keeps the median of the last few accepted window estimates and holds it,
with decaying confidence, while the signals are flat or do not correlate.
"""

from collections import deque
from dataclasses import dataclass
import math

import numpy as np

from fusion_nodes.core.align.dtw import banded_dtw_path

# Warping-path lags within this many band widths of either end are boundary effects.
_EDGE_BANDS = 1


@dataclass(frozen=True)
class OffsetEstimate:
    """Current offset of one stream against the reference clock."""

    offset_ns: int = 0
    confidence: float = 0.0
    resets: int = 0
    updates: int = 0
    valid: bool = False


@dataclass(frozen=True)
class WindowEstimate:
    """One window's raw estimate; `reason` says why it is unusable when ok is False."""

    offset_ns: float
    correlation: float
    ok: bool
    reason: str = ''


def resample(times_ns: np.ndarray, values: np.ndarray, t0_ns: int, step_ns: int,
             count: int) -> np.ndarray:
    """Linear interpolation of a signature series on t0 + k * step (k < count)."""
    rel = (np.asarray(times_ns, dtype=np.int64) - t0_ns).astype(np.float64)
    grid = np.arange(count, dtype=np.float64) * step_ns
    return np.interp(grid, rel, np.asarray(values, dtype=np.float64))


def smooth(signal: np.ndarray, sigma_samples: float) -> np.ndarray:
    """Zero-phase Gaussian smoothing with edge reflection (no lag is introduced)."""
    if sigma_samples < 0.5:
        return signal
    half = int(math.ceil(3.0 * sigma_samples))
    if half >= signal.size:
        half = signal.size - 1
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma_samples) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(signal, half, mode='reflect')
    return np.convolve(padded, kernel, mode='valid')


def normalise(signal: np.ndarray, flat_rel_std: float) -> np.ndarray | None:
    """Zero-mean unit-variance copy, or None when the signal is flat."""
    mean = float(signal.mean())
    std = float(signal.std())
    if not math.isfinite(std) or std <= flat_rel_std * abs(mean) + 1e-12:
        return None
    return (signal - mean) / std


def common_window(ref_times: np.ndarray, stream_times: np.ndarray, end_ns: int,
                  window_ns: int, step_ns: int) -> tuple[int, int] | None:
    """Grid start and sample count covered by both series over the last window_ns to end_ns."""
    if ref_times.size < 4 or stream_times.size < 4:
        return None
    start = max(int(ref_times[0]), int(stream_times[0]), end_ns - window_ns)
    stop = min(int(ref_times[-1]), int(stream_times[-1]), end_ns)
    count = (stop - start) // step_ns + 1
    return (start, int(count)) if count >= 8 else None


def sub_sample_minimum(costs: np.ndarray) -> float:
    """Vertex offset (in samples, within [-1, 1]) of a parabola through three costs."""
    left, mid, right = float(costs[0]), float(costs[1]), float(costs[2])
    curvature = left - 2.0 * mid + right
    if curvature <= 0.0 or not math.isfinite(curvature):
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -1.0, 1.0))


def shifted_mse(x: np.ndarray, y: np.ndarray, lag: int, lo: int, hi: int) -> float:
    """Mean of (x[i] - y[i + lag])^2 over i in [lo, hi) where both exist."""
    a = max(lo, -lag, 0)
    b = min(hi, y.size - lag, x.size)
    if b - a < 4:
        return math.inf
    d = x[a:b] - y[a + lag:b + lag]
    return float(np.dot(d, d) / (b - a))


def refine_lag(x: np.ndarray, y: np.ndarray, seed_lag: int, max_lag: int) -> tuple[float, float]:
    """Sub-sample lag of the local MSE minimum reached downhill from seed_lag, and its correlation.

    The DTW seed lands in the right basin; walking down the shifted MSE to its local minimum
    and fitting a parabola through it and its neighbours gives the fractional lag.
    """
    lo, hi = max_lag, x.size - max_lag
    if hi - lo < 8:
        lo, hi = 0, x.size
    cache: dict[int, float] = {}

    def cost(lag: int) -> float:
        if abs(lag) > max_lag:
            return math.inf
        if lag not in cache:
            cache[lag] = shifted_mse(x, y, lag, lo, hi)
        return cache[lag]

    lag = int(np.clip(seed_lag, -max_lag, max_lag))
    for _ in range(2 * max_lag + 1):
        step = -1 if cost(lag - 1) < cost(lag) else (1 if cost(lag + 1) < cost(lag) else 0)
        if step == 0:
            break
        lag += step
    best = cost(lag)
    if not math.isfinite(best):
        return float(lag), 0.0
    frac = 0.0
    if math.isfinite(cost(lag - 1)) and math.isfinite(cost(lag + 1)):
        frac = sub_sample_minimum(np.array([cost(lag - 1), best, cost(lag + 1)]))
    # For z-normalised signals, MSE = 2 (1 - r).
    return lag + frac, float(1.0 - 0.5 * best)


def prepare_pair(ref_times: np.ndarray, ref_values: np.ndarray, stream_times: np.ndarray,
                 stream_values: np.ndarray, end_ns: int, window_ns: int, step_ns: int,
                 smooth_ns: float, flat_rel_std: float
                 ) -> tuple[np.ndarray, np.ndarray] | str:
    """Resampled, smoothed, normalised (ref, stream) signals, or why there are none."""
    span = common_window(ref_times, stream_times, end_ns, window_ns, step_ns)
    if span is None:
        return 'too little overlapping data'
    start, count = span
    sigma = smooth_ns / step_ns
    x = normalise(smooth(resample(ref_times, ref_values, start, step_ns, count), sigma),
                  flat_rel_std)
    y = normalise(smooth(resample(stream_times, stream_values, start, step_ns, count), sigma),
                  flat_rel_std)
    if x is None or y is None:
        return 'flat signal'
    return x, y


def dtw_offset(x: np.ndarray, y: np.ndarray, step_ns: int, max_lag: int,
               dtw=banded_dtw_path) -> WindowEstimate:
    """Offset (ns) of y against x: median DTW path lag, refined to a sub-sample lag."""
    band = min(max_lag, x.size - 1)
    _, path = dtw(x, y, band)
    lags = path[:, 1] - path[:, 0]
    edge = _EDGE_BANDS * band
    interior = (path[:, 0] >= edge) & (path[:, 0] < x.size - edge)
    if interior.sum() >= 8:
        lags = lags[interior]
    seed = int(np.round(np.median(lags)))
    # On noisy signatures the warping path can settle in a neighbouring basin; the global
    # minimum of the shifted MSE in the band is a second seed, and the lower refined MSE wins.
    lo, hi = (band, x.size - band) if x.size - 2 * band >= 8 else (0, x.size)
    costs = [shifted_mse(x, y, lag, lo, hi) for lag in range(-band, band + 1)]
    global_seed = int(np.argmin(costs)) - band
    lag, corr = refine_lag(x, y, seed, band)
    if global_seed != seed:
        alt_lag, alt_corr = refine_lag(x, y, global_seed, band)
        if alt_corr > corr:
            lag, corr = alt_lag, alt_corr
    return WindowEstimate(lag * step_ns, corr, True)


class OffsetTracker:
    """Robust running offset from window estimates: a median of the last few, held when flat."""

    def __init__(self, history: int, min_correlation: float, hold_decay: float) -> None:
        self._history: deque[float] = deque(maxlen=history)
        self._correlations: deque[float] = deque(maxlen=history)
        self._min_correlation = min_correlation
        self._hold_decay = hold_decay
        self._estimate = OffsetEstimate()
        self.held = 0

    @property
    def estimate(self) -> OffsetEstimate:
        return self._estimate

    def update(self, window: WindowEstimate) -> bool:
        """Fold one window estimate in; returns whether it was accepted."""
        est = self._estimate
        if not window.ok or window.correlation < self._min_correlation:
            self.held += 1
            self._estimate = OffsetEstimate(est.offset_ns, est.confidence * self._hold_decay,
                                            est.resets, est.updates, est.valid)
            return False
        self._history.append(window.offset_ns)
        self._correlations.append(window.correlation)
        values = np.fromiter(self._history, float)
        offset = float(np.median(values))
        # Confidence: agreement of the recent windows, their correlation, and how many there are.
        spread_ms = float(np.median(np.abs(values - offset))) / 1e6
        fill = len(self._history) / self._history.maxlen
        corr = float(np.median(np.fromiter(self._correlations, float)))
        confidence = float(np.clip(corr, 0.0, 1.0) * fill / (1.0 + spread_ms))
        self._estimate = OffsetEstimate(int(round(offset)), confidence, est.resets,
                                        est.updates + 1, True)
        return True

    def reset(self) -> None:
        """Forget every window estimate (after a time jump); the reset is counted.

        The last offset stays as the matcher's prior (a bag loop keeps the clocks' offsets),
        but it is marked invalid with zero confidence until new windows confirm it.
        """
        self._history.clear()
        self._correlations.clear()
        est = self._estimate
        self._estimate = OffsetEstimate(est.offset_ns, 0.0, est.resets + 1, est.updates, False)
