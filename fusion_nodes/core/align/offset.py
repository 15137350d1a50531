"""Clock-offset estimation from motion signatures: windowed DTW lag plus sub-sample refinement.

A stream's offset is (its stamp - true capture) - (reference stamp - true capture). Both
signature series are resampled on one grid in their own stamp clocks, smoothed with the same
zero-phase Gaussian (no lag is added), z-normalised and warped with a banded DTW. The median
lag along the interior of the warping path seeds a local search: the mean squared difference at
the integer lags around it, and a parabola through the best three, gives the sub-sample lag.
OffsetTracker gates what the matcher uses: a window counts only when it correlates, is not at
the band edge and has a sharp minimum; the offset is locked only when several consecutive
counted windows agree, then follows the median of the windows that agree with it, holds (with
decaying confidence) while the signals are flat, and falls back to no correction (0, raw stamps)
when the windows keep contradicting it. A wrong offset pairs worse than none, so the gate errs
towards raw stamps.
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
    # Mean rise of the z-normalised shifted MSE SHARP_STEPS grid steps either side of the
    # minimum: near 0 when the signatures are too smooth to pin the lag (NaN = not measured).
    sharpness: float = math.nan


SHARP_STEPS = 2


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
                 smooth_ns: float, flat_rel_std: float, max_gap_ns: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray] | str:
    """Resampled, smoothed, normalised (ref, stream) signals, or why there are none.

    A series with a gap over max_gap_ns in the window (a blackout, a run of missing
    signatures) is refused: interpolating across it would invent a motion profile.
    """
    span = common_window(ref_times, stream_times, end_ns, window_ns, step_ns)
    if span is None:
        return 'too little overlapping data'
    start, count = span
    if max_gap_ns is not None:
        stop = start + (count - 1) * step_ns
        for times in (ref_times, stream_times):
            inside = times[(times >= start) & (times <= stop)]
            edges = np.concatenate([[start], inside, [stop]])
            if np.max(np.diff(edges)) > max_gap_ns:
                return 'gap in the signatures'
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
    return WindowEstimate(lag * step_ns, corr, True, '', lag_sharpness(x, y, lag, band))


def lag_sharpness(x: np.ndarray, y: np.ndarray, lag: float, band: int) -> float:
    """Mean rise of the shifted MSE SHARP_STEPS steps either side of lag; -inf at the band edge.

    A minimum on the band edge is the search running out of room, not a found lag.
    """
    centre = int(round(lag))
    if abs(centre) + SHARP_STEPS > band:
        return -math.inf
    lo, hi = (band, x.size - band) if x.size - 2 * band >= 8 else (0, x.size)
    mid = shifted_mse(x, y, centre, lo, hi)
    side = 0.5 * (shifted_mse(x, y, centre - SHARP_STEPS, lo, hi)
                  + shifted_mse(x, y, centre + SHARP_STEPS, lo, hi))
    rise = side - mid
    return rise if math.isfinite(rise) else -math.inf


class OffsetTracker:
    """Gated running offset from window estimates (see the module docstring).

    history: windows in the median while locked; lock_windows: consecutive agreeing windows
    needed to lock (and contradicting ones to unlock); lock_spread_ns: how far they may lie
    apart, and how far a window may lie from the lock to count as agreeing; min_sharpness:
    least WindowEstimate.sharpness for a window to count (NaN sharpness always counts).
    """

    def __init__(self, history: int, min_correlation: float, hold_decay: float,
                 lock_windows: int = 4, lock_spread_ns: float = 10_000_000.0,
                 min_sharpness: float = 0.0) -> None:
        if lock_windows < 1 or history < 1:
            raise ValueError('history and lock_windows must be at least 1')
        self._history: deque[float] = deque(maxlen=history)
        self._correlations: deque[float] = deque(maxlen=history)
        self._recent: deque[float] = deque(maxlen=lock_windows)
        self._min_correlation = min_correlation
        self._hold_decay = hold_decay
        self._lock_windows = lock_windows
        self._spread = float(lock_spread_ns)
        self._min_sharpness = min_sharpness
        self._estimate = OffsetEstimate()
        self._locked: float | None = None
        self._contradictions = 0
        self.held = 0
        self.locks = 0
        self.unlocks = 0

    @property
    def estimate(self) -> OffsetEstimate:
        return self._estimate

    @property
    def locked(self) -> bool:
        return self._locked is not None

    def counts(self, window: WindowEstimate) -> bool:
        """Whether a window is good enough to count towards the lock."""
        return (window.ok and window.correlation >= self._min_correlation
                and not window.sharpness < self._min_sharpness)

    def update(self, window: WindowEstimate) -> bool:
        """Fold one window estimate in; returns whether it was counted."""
        est = self._estimate
        if not self.counts(window):
            self.held += 1
            if window.ok:
                # A real but unconvincing window breaks a run of agreeing ones.
                self._recent.clear()
            self._estimate = OffsetEstimate(est.offset_ns, est.confidence * self._hold_decay,
                                            est.resets, est.updates, est.valid)
            return False
        offset = float(window.offset_ns)
        self._recent.append(offset)
        if self._locked is not None and abs(offset - self._locked) <= self._spread:
            self._history.append(offset)
            self._correlations.append(window.correlation)
            self._locked = float(np.median(np.fromiter(self._history, float)))
            self._contradictions = 0
        elif self._locked is not None:
            self._contradictions += 1
        run = np.fromiter(self._recent, float)
        consensus = (run.size == self._lock_windows
                     and float(run.max() - run.min()) <= self._spread)
        if consensus and (self._locked is None
                          or abs(float(np.median(run)) - self._locked) > self._spread):
            self._history.clear()
            self._correlations.clear()
            self._history.extend(run)
            self._correlations.append(window.correlation)
            self._locked = float(np.median(run))
            self._contradictions = 0
            self.locks += 1
        elif self._locked is not None and self._contradictions >= self._lock_windows:
            # The windows keep disagreeing with the lock: raw stamps until they agree again.
            self._locked = None
            self._history.clear()
            self._correlations.clear()
            self.unlocks += 1
        self._estimate = self._current(est)
        return True

    def _current(self, est: OffsetEstimate) -> OffsetEstimate:
        if self._locked is None:
            return OffsetEstimate(0, 0.0, est.resets, est.updates + 1, False)
        values = np.fromiter(self._history, float)
        spread_ms = float(np.median(np.abs(values - self._locked))) / 1e6
        fill = len(self._history) / self._history.maxlen
        corr = float(np.median(np.fromiter(self._correlations, float)))
        confidence = float(np.clip(corr, 0.0, 1.0) * fill / (1.0 + spread_ms))
        return OffsetEstimate(int(round(self._locked)), confidence, est.resets,
                              est.updates + 1, True)

    def reset(self) -> None:
        """Forget every window estimate (after a time jump); the reset is counted.

        The matcher falls back to raw stamps (offset 0, invalid) until new windows agree:
        after a jump nothing says the old offset still holds.
        """
        self._history.clear()
        self._correlations.clear()
        self._recent.clear()
        self._locked = None
        self._contradictions = 0
        est = self._estimate
        self._estimate = OffsetEstimate(0, 0.0, est.resets + 1, est.updates, False)
