"""The metric-speed study's lag finder: a known lag comes back despite gross outliers."""

import numpy as np
import pytest

from fusion_nodes.tools import align_signal_study as study


def _trapezoid(t_s: np.ndarray) -> np.ndarray:
    """Stand, ramp at 2 m/s^2 to 8 m/s, hold, brake at 3 m/s^2 to 2 m/s, hold."""
    return np.clip(2.0 * (t_s - 2.0), 0.0, 8.0) - np.clip(3.0 * (t_s - 9.0), 0.0, 6.0)


@pytest.mark.parametrize('lag_ms', [0.0, 40.0, -115.0])
def test_huber_lag_recovers_a_known_shift_despite_outliers(lag_ms):
    ref_t = np.arange(0.0, 16e9, 33_333_333.0)
    ref_v = _trapezoid(ref_t / 1e9)
    ref_v[::17] += 4.0  # registration failures: far off, and the loss must shrug them off
    t = np.arange(0.0, 16e9, 100e6)
    v = _trapezoid((t - lag_ms * 1e6) / 1e9)
    lag = study.huber_lag_ns(ref_t, ref_v, t, v, 1e9, 15e9)
    assert lag / 1e6 == pytest.approx(lag_ms, abs=2.0)


def test_huber_lag_is_nan_without_overlap():
    t = np.arange(0.0, 1e9, 1e8)
    assert np.isnan(study.huber_lag_ns(t, t * 0.0, t + 5e9, t * 0.0, 0.0, 1e9))
