"""DTW kernels, signatures and the offset estimator on synthetic signals."""

import numpy as np
import pytest

from fusion_nodes.core.align.dtw import banded_dtw_path, match_last, match_newest_ns
from fusion_nodes.core.align.offset import (
    dtw_offset, OffsetTracker, prepare_pair, WindowEstimate)
from fusion_nodes.core.align.period import PeriodFit
from fusion_nodes.core.align.series import StampRing
from fusion_nodes.core.align.signatures import GPS_SPAN_NS, gps_track_speed, GpsSpeedTrack

MS = 1_000_000


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


def _reference_banded_dtw_cost(x: np.ndarray, y: np.ndarray, band: int) -> float:
    """The textbook full-matrix recurrence, cells outside the band forbidden."""
    acc = np.full((x.size + 1, y.size + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, x.size + 1):
        for j in range(max(1, i - band), min(y.size, i + band) + 1):
            acc[i, j] = (x[i - 1] - y[j - 1]) ** 2 + min(acc[i - 1, j - 1], acc[i - 1, j],
                                                         acc[i, j - 1])
    return float(acc[x.size, y.size])


@pytest.mark.parametrize('seed', range(30))
def test_dtw_cost_is_the_banded_optimum_and_the_path_attains_it(seed):
    # Unequal lengths, tight bands and integer signals (many tied steps) included: the kernel
    # keeps two rows of costs and one byte of step per cell.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    m = int(rng.integers(max(1, n - 6), n + 7))
    band = abs(n - m) + int(rng.integers(0, 8))
    if seed % 2:
        x, y = rng.integers(0, 3, n).astype(float), rng.integers(0, 3, m).astype(float)
    else:
        x, y = rng.normal(size=n), rng.normal(size=m)
    cost, path = banded_dtw_path(x, y, band)
    assert cost == pytest.approx(_reference_banded_dtw_cost(x, y, band), rel=1e-12, abs=1e-12)
    assert path[0].tolist() == [0, 0] and path[-1].tolist() == [n - 1, m - 1]
    assert (np.abs(path[:, 0] - path[:, 1]) <= band).all()
    assert float(((x[path[:, 0]] - y[path[:, 1]]) ** 2).sum()) == pytest.approx(cost)


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


@pytest.mark.parametrize('seed', range(40))
def test_match_newest_ns_equals_match_last_on_the_whole_buffer(seed):
    # The aligner's kernel skips stamps out of every reference's band and works in int64 ns
    # at epoch scale; the pick must be match_last's on the full, relative float buffer.
    rng = np.random.default_rng(seed)
    epoch = 1_750_000_000 * 10 ** 9 + int(rng.integers(0, 10 ** 9))
    refs = epoch + np.cumsum(rng.integers(20, 50, 8)) * MS
    period = int(rng.choice([50, 100, 200]))
    stamps = epoch + np.cumsum(rng.integers(period // 2, 2 * period, 64)) * MS
    stamps -= int(rng.integers(0, 3000)) * MS  # sometimes nothing is in band
    offset = int(rng.integers(-200, 200)) * MS
    band = int(rng.choice([60, 150, 600])) * MS
    newest = int(refs[-1])
    expected = match_last((refs - newest).astype(float),
                          (stamps - offset - newest).astype(float), float(band))
    assert match_newest_ns(refs[:-1], newest, stamps, offset, band) == expected


def test_match_newest_ns_edges():
    stamps = np.array([0, 100, 200], np.int64) * MS
    assert match_newest_ns(np.array([], np.int64), 190 * MS, stamps, 0, 50 * MS) == 2
    assert match_newest_ns(np.array([], np.int64), 190 * MS, stamps[:0], 0, 50 * MS) == -1
    assert match_newest_ns([150 * MS], 190 * MS, [0, 100 * MS, 200 * MS], 0, 50 * MS) == 2
    with pytest.raises(ValueError, match='1-D'):
        match_newest_ns(np.zeros((2, 2), np.int64), 0, stamps, 0, 1)
    with pytest.raises(ValueError, match='band'):
        match_newest_ns(stamps[:1], 0, stamps, 0, -1)


def test_stamp_ring_keeps_the_newest_in_order():
    ring = StampRing(4)
    assert len(ring) == 0 and ring.view().size == 0
    for k in range(1, 23):
        ring.append(k)
        expected = list(range(max(1, k - 3), k + 1))
        assert ring.view().tolist() == expected and ring.newest() == k
    ring.drop_oldest()
    assert ring.view().tolist() == [20, 21, 22]
    ring.clear()
    with pytest.raises(ValueError, match='empty'):
        ring.newest()
    with pytest.raises(ValueError, match='capacity'):
        StampRing(0)


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
    tracker = OffsetTracker(history=5, min_correlation=0.5, hold_decay=0.9, lock_windows=1)
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


def test_gps_track_speed_is_the_speed_at_the_span_middle():
    # Accelerating at 2 m/s^2 along east: the speed half a span before the newest fix.
    rng = np.random.default_rng(0)
    track = GpsSpeedTrack()
    value = 0.0
    for k in range(40):
        t = k * 100 * MS
        if k == 25:
            value = track.update(t, None)  # no fix: skipped, the track goes on
            continue
        s = t / 1e9
        value = track.update(t, np.array([s * s, 0.0]) + rng.normal(0.0, 0.02, 2))
    middle = (39 * 100 * MS - GPS_SPAN_NS // 2) / 1e9
    assert value == pytest.approx(2.0 * middle, abs=0.3)
    assert gps_track_speed(np.array([0]), np.zeros((1, 2)), 0) == 0.0
    # A stamp going back starts the track over.
    assert track.update(0, np.array([0.0, 0.0])) == 0.0


def test_tracker_locks_only_on_agreement_and_falls_back_to_raw_stamps():
    tracker = OffsetTracker(5, 0.6, 0.9, lock_windows=4, lock_spread_ns=10 * MS,
                            min_sharpness=2.5e-4)

    def window(off_ms: float, corr: float = 0.9, sharp: float = 1e-3) -> WindowEstimate:
        return WindowEstimate(off_ms * MS, corr, True, '', sharp)

    for off in (120.0, -80.0, 40.0, 200.0, -150.0):
        tracker.update(window(off))
    assert not tracker.estimate.valid and tracker.estimate.offset_ns == 0
    # Agreeing but blunt (the generator's smooth speed profiles) or weakly correlated: no lock.
    for _ in range(6):
        tracker.update(window(50.0, sharp=1e-4))
        tracker.update(window(50.0, corr=0.3))
    assert not tracker.estimate.valid
    for off in (51.0, 49.0, 55.0, 50.0):
        tracker.update(window(off))
    assert tracker.estimate.valid and abs(tracker.estimate.offset_ns / MS - 50.5) < 1.0
    # Flat windows hold the lock with decaying confidence.
    before = tracker.estimate
    tracker.update(WindowEstimate(0.0, 0.0, False, 'flat signal'))
    assert tracker.estimate.offset_ns == before.offset_ns
    assert tracker.estimate.confidence < before.confidence
    # Windows that keep contradicting the lock, and not each other: back to raw stamps.
    for off in (150.0, -100.0, 250.0, -20.0):
        tracker.update(window(off))
    assert not tracker.estimate.valid and tracker.estimate.offset_ns == 0
    assert tracker.unlocks == 1


def test_a_window_with_a_signature_gap_is_refused():
    t = np.arange(0, 20_000_000_000, 33_333_333)
    v = np.sin(t / 1e9)
    gappy = (t < 8_000_000_000) | (t > 9_500_000_000)  # 1.5 s without signatures
    args = (20_000_000_000, 15_000_000_000, 5_000_000, 100e6, 1e-3)
    assert prepare_pair(t, v, t[gappy], v[gappy], *args, 1_000_000_000) == \
        'gap in the signatures'
    assert prepare_pair(t[gappy], v[gappy], t, v, *args, 1_000_000_000) == \
        'gap in the signatures'
    x, y = prepare_pair(t, v, t[gappy], v[gappy], *args, 2_000_000_000)
    assert x.size == y.size > 2000
    assert not isinstance(prepare_pair(t, v, t, v, *args, 1_000_000_000), str)
