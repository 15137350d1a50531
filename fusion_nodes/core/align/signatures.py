"""Motion signatures: one scalar per message that rises and falls with the ego motion.

Each sensor node calls one of these on its own data, and the aligner's offset estimator
cross-matches the three series in time. They are cheap (a few microseconds on the small
preprocessed inputs), never raise on the first frame, a shape change or NaN data, and return
0.0 when there is nothing to compare, so a signature never stops a message.

The camera and lidar values are differences between consecutive messages; the aligner places
them midway between the two stamps (see AlignerConfig.difference_signatures).
"""

import math

import numpy as np


def _finite_pair(prev: np.ndarray | None, current: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    if prev is None or current is None:
        return None
    a = np.asarray(prev, dtype=np.float32)
    b = np.asarray(current, dtype=np.float32)
    if a.shape != b.shape or a.size == 0:
        return None
    return a, b


def frame_difference_energy(prev_gray: np.ndarray | None, gray: np.ndarray | None) -> float:
    """Mean absolute grey-level change between consecutive small camera frames.

    Expects grey images in [0, 1] (for example the 128x96 network input back in grey). NaN
    pixels are ignored; the first frame, a size change or an all-NaN pair give 0.0.
    """
    pair = _finite_pair(prev_gray, gray)
    if pair is None:
        return 0.0
    diff = np.abs(pair[1] - pair[0])
    valid = np.isfinite(diff)
    if valid.all():
        return float(diff.mean())
    count = int(valid.sum())
    return float(diff[valid].sum() / count) if count else 0.0


def scan_change_energy(prev_occupancy: np.ndarray | None,
                       occupancy: np.ndarray | None) -> float:
    """Share of occupied BEV cells that changed state between consecutive lidar sweeps.

    Cells count as occupied above 0.5; NaN cells count as free. The change is normalised by
    the union of occupied cells so that a busy and an empty scene give comparable values.
    """
    pair = _finite_pair(prev_occupancy, occupancy)
    if pair is None:
        return 0.0
    # NaN > 0.5 is False: a broken cell reads as free rather than poisoning the sum.
    a = pair[0] > 0.5
    b = pair[1] > 0.5
    union = int(np.count_nonzero(a | b))
    if union == 0:
        return 0.0
    return float(np.count_nonzero(a ^ b)) / union


def gps_speed(prev_enu: np.ndarray | None, prev_stamp_ns: int | None,
              enu: np.ndarray | None, stamp_ns: int) -> float:
    """Horizontal speed (m/s) between two successive ENU fixes; 0.0 when it is undefined.

    Undefined means no previous fix, a non-finite position, or a stamp that did not advance.
    """
    if prev_enu is None or enu is None or prev_stamp_ns is None:
        return 0.0
    dt_ns = int(stamp_ns) - int(prev_stamp_ns)
    if dt_ns <= 0:
        return 0.0
    a = np.asarray(prev_enu, dtype=np.float64).ravel()
    b = np.asarray(enu, dtype=np.float64).ravel()
    if a.size < 2 or b.size < 2:
        return 0.0
    dx, dy = float(b[0] - a[0]), float(b[1] - a[1])
    if not (math.isfinite(dx) and math.isfinite(dy)):
        return 0.0
    return math.hypot(dx, dy) / (dt_ns * 1e-9)
