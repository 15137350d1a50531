"""DTW kernels, signatures and the offset estimator on synthetic signals."""

import numpy as np
import pytest

from fusion_nodes.core.align.dtw import banded_dtw_path, match_last
from fusion_nodes.core.align.offset import dtw_offset, OffsetTracker, WindowEstimate
from fusion_nodes.core.align.period import PeriodFit
from fusion_nodes.core.align.signatures import (
    frame_difference_energy, gps_speed, scan_change_energy)


def _smooth_noise(n: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.convolve(rng.normal(0, 1, n + width), np.ones(width) / width, 'valid')[:n]


@pytest.mark.parametrize('band', [0, 3, 17])
def test_dtw_path_is_monotone_continuous_and_in_band(band):
    rng = np.random.default_rng(band)
    x, y = rng.normal(size=200), rng.normal(size=200)
    cost, path = banded_dtw_path(x, y, band)
    steps = np.diff(path, axis=0)
    assert path[0].tolist() == [0, 0] and path[-1].tolist() == [199, 199]
    assert ((steps >= 0) & (steps <= 1)).all() and (steps.sum(axis=1) >= 1).all()
    assert (np.abs(path[:, 0] - path[:, 1]) <= band).all()
    # The cost is the sum of squared differences along the path.
    assert cost == pytest.approx(float(((x[path[:, 0]] - y[path[:, 1]]) ** 2).sum()))


def test_dtw_band_zero_is_euclidean_and_bad_input_raises():
    x, y = np.arange(5.0), np.arange(5.0) + 1.0
    cost, _ = banded_dtw_path(x, y, 0)
    assert cost == pytest.approx(5.0)
    with pytest.raises(ValueError, match='band'):
        banded_dtw_path(np.zeros(10), np.zeros(20), 3)
    with pytest.raises(ValueError, match='finite'):
        banded_dtw_path(np.array([0.0, np.nan]), np.zeros(2), 1)


def test_match_last_picks_nearest_in_band_or_none():
    refs = np.arange(6) * 33.3
    cand = np.arange(-2, 3) * 100.0 + 7.0
    j = match_last(refs, cand, 250.0)
    assert j == int(np.argmin(np.abs(cand - refs[-1])))
    assert match_last(refs, cand + 10_000.0, 250.0) == -1


@pytest.mark.parametrize('lag_ms', [-120.0, 0.0, 37.5, 150.0])
def test_known_offset_recovered_to_a_millisecond(lag_ms):
    step_ns = 5_000_000
    signal = _smooth_noise(4000, 60, seed=int(lag_ms) + 500)
    shift = lag_ms / 5.0
    grid = np.arange(1600, dtype=float) + 600
    x = np.interp(grid, np.arange(signal.size), signal)
    y = np.interp(grid - shift, np.arange(signal.size), signal)
    x, y = (x - x.mean()) / x.std(), (y - y.mean()) / y.std()
    est = dtw_offset(x, y, step_ns, 60)
    assert est.ok and est.correlation > 0.9
    assert abs(est.offset_ns / 1e6 - lag_ms) < 1.0


def test_tracker_holds_on_flat_and_low_correlation():
    tracker = OffsetTracker(history=5, min_correlation=0.5, hold_decay=0.9)
    tracker.update(WindowEstimate(80e6, 0.95, True))
    before = tracker.estimate
    assert before.valid and before.offset_ns == 80_000_000
    tracker.update(WindowEstimate(0.0, 0.0, False, 'flat signal'))
    tracker.update(WindowEstimate(-200e6, 0.1, True))
    after = tracker.estimate
    assert after.offset_ns == before.offset_ns
    assert after.confidence == pytest.approx(before.confidence * 0.81)
    tracker.reset()
    assert tracker.estimate.resets == 1 and not tracker.estimate.valid


def test_period_fit_removes_jitter_and_counts_drops():
    rng = np.random.default_rng(3)
    idx = np.arange(400)
    idx = idx[rng.random(idx.size) > 0.1]
    true = 1_000_000_000 + idx * 100_000_000
    stamps = true + np.round(rng.normal(0, 5e6, idx.size)).astype(np.int64)
    fit = PeriodFit()
    out = np.array([fit.push(int(s)) for s in stamps])
    raw_err = np.abs(stamps - true)[100:]
    fit_err = np.abs(out - true)[100:]
    assert np.sqrt(np.mean(fit_err.astype(float) ** 2)) < 0.5 * np.sqrt(
        np.mean(raw_err.astype(float) ** 2))


def test_signatures_robust_and_measure_change():
    a = np.zeros((96, 128), np.float32)
    b = a.copy()
    b[:, :64] = 1.0
    assert frame_difference_energy(None, a) == 0.0
    assert frame_difference_energy(a, np.zeros((10, 10))) == 0.0
    assert frame_difference_energy(a, b) == pytest.approx(0.5)
    b[0, 0] = np.nan
    assert np.isfinite(frame_difference_energy(a, b))
    occ_a = np.zeros((64, 64))
    occ_b = occ_a.copy()
    occ_a[:10] = 1
    occ_b[5:15] = 1
    # 15 rows in the union, 10 changed.
    assert scan_change_energy(occ_a, occ_b) == pytest.approx(10 / 15)
    assert scan_change_energy(None, occ_b) == 0.0
    assert scan_change_energy(occ_a * 0, occ_b * 0) == 0.0
    assert gps_speed(np.array([0.0, 0.0]), 0, np.array([3.0, 4.0]), 500_000_000) == 10.0
    assert gps_speed(None, None, np.array([1.0, 1.0]), 1) == 0.0
    assert gps_speed(np.array([0.0, np.nan]), 0, np.array([1.0, 1.0]), 10) == 0.0
    assert gps_speed(np.array([0.0, 0.0]), 5, np.array([1.0, 1.0]), 5) == 0.0
