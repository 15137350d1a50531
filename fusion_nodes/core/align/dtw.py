"""Banded dynamic time warping kernels, compiled with numba.

Two kernels with different costs and boundary rules:
- banded_dtw_path: classic Sakoe-Chiba DTW between two signals on a common grid (squared
  difference, both ends anchored); the offset estimator reads lags off its warping path.
- match_last: open-begin, open-end DTW between a short run of reference stamps and a stream's
  corrected stamps (absolute time difference, cells farther apart than a time band are
  forbidden); the aligner reads the stream sample matched to the newest reference frame.

dtaidistance's C kernel computes the same Sakoe-Chiba path as banded_dtw_path (its `window`
is our band + 1); benchmarks/alignment.py measures both.
"""

import numba
import numpy as np

_INF = np.inf


@numba.njit(cache=True, nogil=True)
def _banded_moves(x: np.ndarray, y: np.ndarray, band: int) -> tuple[float, np.ndarray]:
    """The DTW cost and, per banded cell (i, j - i + band), the step into it.

    Steps: 1 diagonal, 2 from (i - 1, j), 3 from (i, j - 1); on ties the diagonal, then
    (i - 1, j). Only two rows of costs are kept: a window of 5,000 samples in a band of 60
    needs 0.6 MB of steps instead of 4.8 MB of costs, which cost a fresh allocation (page
    faults) per estimate and evicted the aligner's data from the cache for the next update.
    """
    n, m = x.size, y.size
    width = 2 * band + 1
    moves = np.zeros((n, width), np.int8)
    # One spare column stays infinite: the cell (i - 1, j) past the band's edge.
    rows = np.full((2, width + 1), _INF)
    for i in range(n):
        cur = rows[i & 1]
        prev = rows[(i + 1) & 1]
        lo = max(0, i - band)
        hi = min(m - 1, i + band)
        for k in range(0, lo - i + band):
            cur[k] = _INF
        for k in range(hi - i + band + 1, width):
            cur[k] = _INF
        left = _INF  # the cell (i, lo - 1) lies outside the band or the signal
        for j in range(lo, hi + 1):
            k = j - i + band
            d = x[i] - y[j]
            if i == 0:
                left = d * d if j == 0 else d * d + left
                moves[0, k] = 0 if j == 0 else 3
                cur[k] = left
                continue
            diag = prev[k] if j > 0 else _INF
            up = prev[k + 1]
            if diag <= up and diag <= left:
                best = diag
                moves[i, k] = 1
            elif up <= left:
                best = up
                moves[i, k] = 2
            else:
                best = left
                moves[i, k] = 3
            left = d * d + best
            cur[k] = left
    return rows[(n - 1) & 1][m - 1 - (n - 1) + band], moves


@numba.njit(cache=True, nogil=True)
def _banded_backtrack(moves: np.ndarray, n: int, m: int, band: int) -> np.ndarray:
    path = np.empty((n + m, 2), np.int64)
    i, j = n - 1, m - 1
    count = 0
    while True:
        path[count, 0] = i
        path[count, 1] = j
        count += 1
        if i == 0 and j == 0:
            break
        step = moves[i, j - i + band]
        if step == 1:
            i -= 1
            j -= 1
        elif step == 2:
            i -= 1
        else:
            j -= 1
    return path[:count][::-1].copy()


def banded_dtw_path(x: np.ndarray, y: np.ndarray, band: int) -> tuple[float, np.ndarray]:
    """Squared-difference DTW cost and warping path (K x 2 of i, j) with |i - j| <= band."""
    a = np.ascontiguousarray(x, dtype=np.float64)
    b = np.ascontiguousarray(y, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.size == 0 or b.size == 0:
        raise ValueError(f'DTW needs two non-empty 1-D signals, got {a.shape} and {b.shape}')
    if band < 0 or abs(a.size - b.size) > band:
        raise ValueError(f'band {band} cannot join signals of length {a.size} and {b.size}')
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError('DTW signals must be finite')
    cost, moves = _banded_moves(a, b, int(band))
    return float(cost), _banded_backtrack(moves, a.size, b.size, int(band))


@numba.njit(cache=True, nogil=True)
def _match_last(ref: np.ndarray, cand: np.ndarray, band: float) -> int:
    n, m = ref.size, cand.size
    acc = np.full((n, m), _INF)
    move = np.zeros((n, m), np.int8)  # 0 start, 1 diagonal, 2 from above, 3 from the left
    for i in range(n):
        for j in range(m):
            d = abs(ref[i] - cand[j])
            if d > band:
                continue
            if i == 0:
                # Open begin: the window may start on any stream sample.
                acc[i, j] = d
                continue
            best = _INF
            step = 0
            if j > 0 and acc[i - 1, j - 1] < best:
                best = acc[i - 1, j - 1]
                step = 1
            if acc[i - 1, j] < best:
                best = acc[i - 1, j]
                step = 2
            if j > 0 and acc[i, j - 1] < best:
                best = acc[i, j - 1]
                step = 3
            if best == _INF:
                # A reference frame with no path to it (a gap): restart the warp here.
                best = 0.0
                step = 0
            acc[i, j] = d + best
            move[i, j] = step
    # Open end: the newest reference frame may end on any stream sample.
    end = -1
    best = _INF
    for j in range(m):
        if acc[n - 1, j] < best:
            best = acc[n - 1, j]
            end = j
    if end < 0:
        return -1
    # The newest frame's row of the path runs leftwards from `end`; keep its closest sample.
    chosen = end
    j = end
    while j > 0 and move[n - 1, j] == 3:
        j -= 1
        if abs(ref[n - 1] - cand[j]) < abs(ref[n - 1] - cand[chosen]):
            chosen = j
    return chosen


def match_last(ref_times: np.ndarray, cand_times: np.ndarray, band: float) -> int:
    """Index of the candidate matched to the last reference time, or -1 if none is in band.

    Both inputs are sorted times in one clock (float, any unit); band is in the same unit.
    """
    ref = np.ascontiguousarray(ref_times, dtype=np.float64)
    cand = np.ascontiguousarray(cand_times, dtype=np.float64)
    if ref.ndim != 1 or cand.ndim != 1:
        raise ValueError('match_last takes 1-D time arrays')
    if ref.size == 0 or cand.size == 0:
        return -1
    return int(_match_last(ref, cand, float(band)))


def match_newest_ns(earlier_refs: np.ndarray, newest_ref: int, stamps: np.ndarray,
                    offset: int, band: int) -> int:
    """match_last on int ns times, as the aligner calls it on every frame.

    earlier_refs (sorted, before newest_ref) and newest_ref are reference-clock stamps;
    stamps are a stream's sorted stamps in its own clock, offset ahead of the reference
    (stamp - offset is reference time). Returns the index into stamps matched to newest_ref,
    or -1. One compiled call: the stamps farther than the band from every reference can be
    on no path and are skipped, and times are made relative in int64 (float64 is exact for
    differences, not for epoch nanoseconds).
    """
    refs, times = _int64_vector(earlier_refs), _int64_vector(stamps)
    if band < 0:
        raise ValueError(f'band must be >= 0, got {band}')
    if times.size == 0:
        return -1
    return int(_match_newest_ns(refs, int(newest_ref), times, int(offset), int(band)))


def _int64_vector(values: np.ndarray) -> np.ndarray:
    # The aligner's own int64 views pass untouched: this runs on every frame.
    if not (isinstance(values, np.ndarray) and values.dtype == np.int64
            and values.flags.c_contiguous):
        values = np.ascontiguousarray(values, dtype=np.int64)
    if values.ndim != 1:
        raise ValueError(f'match_newest_ns takes 1-D stamp arrays, got shape {values.shape}')
    return values


@numba.njit(cache=True, nogil=True)
def _match_newest_ns(earlier: np.ndarray, newest: int, stamps: np.ndarray, offset: int,
                     band: int) -> int:
    oldest = earlier[0] if earlier.size else newest
    lo = np.searchsorted(stamps, oldest + offset - band, 'left')
    hi = np.searchsorted(stamps, newest + offset + band, 'right')
    if lo >= hi:
        return -1
    ref = np.empty(earlier.size + 1, np.float64)
    for i in range(earlier.size):
        ref[i] = float(earlier[i] - newest)
    ref[earlier.size] = 0.0
    cand = np.empty(hi - lo, np.float64)
    for j in range(hi - lo):
        cand[j] = float(stamps[lo + j] - offset - newest)
    j = _match_last(ref, cand, float(band))
    return j + lo if j >= 0 else -1


def match_path(ref_times: np.ndarray, cand_times: np.ndarray, band: float) -> np.ndarray:
    """Candidate index matched to every reference time (-1 where none), via match_last.

    A test and evaluation helper: each prefix is matched as the aligner would see it online.
    """
    ref = np.asarray(ref_times, dtype=np.float64)
    return np.array([match_last(ref[:i + 1], cand_times, band) for i in range(ref.size)],
                    dtype=np.int64)


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel now.

    The first call of a numba kernel in a process costs about 0.5 s even from the on-disk
    cache; an online aligner must pay that at startup, not on its first offset estimate.
    """
    signal = np.linspace(0.0, 1.0, 8)
    banded_dtw_path(signal, signal, 2)
    match_last(signal, signal, 1.0)
    stamps = np.arange(8, dtype=np.int64)
    match_newest_ns(stamps[:-1], 7, stamps, 0, 1)
