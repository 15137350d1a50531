"""The GPS motion signature, and the dense flow the camera mount check uses.

gps_node sends the speed of a short track of fixes at the track's middle, half a span before
the newest stamp (AlignerConfig.signature_delay_ns carries that -GPS_SPAN_NS / 2). A quadratic
fit over 1 s follows the ego speed closely (r ~ 0.98 on the generator); the speed between two
successive fixes carries ~6 m/s of noise at 10 Hz. The camera and lidar signatures, forward
displacements in metres, are in ego_speed.py.
"""

from collections import deque
import math

import cv2
import numpy as np

FLOW_SIZE = (64, 48)  # (width, height) the camera frames are reduced to for optical flow
GPS_SPAN_NS = 1_000_000_000


def _finite_pair(prev: np.ndarray | None, current: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    if prev is None or current is None:
        return None
    a = np.asarray(prev, dtype=np.float32)
    b = np.asarray(current, dtype=np.float32)
    if a.shape != b.shape or a.size == 0:
        return None
    return a, b


def _as_u8(gray: np.ndarray) -> np.ndarray:
    # NaN pixels read as black; the flow smooths over a few of them.
    img = np.nan_to_num(gray, nan=0.0, posinf=1.0, neginf=0.0)
    if img.shape[1] != FLOW_SIZE[0] or img.shape[0] != FLOW_SIZE[1]:
        img = cv2.resize(img, FLOW_SIZE, interpolation=cv2.INTER_AREA)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def dense_flow(prev_gray: np.ndarray | None, gray: np.ndarray | None) -> np.ndarray | None:
    """Farneback flow (48, 64, 2), in pixels of the 64x48 reduction, between two grey frames.

    None for the first frame, a size change or a non-2-D input; NaN pixels count as black.
    """
    pair = _finite_pair(prev_gray, gray)
    if pair is None or pair[0].ndim != 2 or min(pair[0].shape) < 8:
        return None
    a, b = _as_u8(pair[0]), _as_u8(pair[1])
    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 2, 9, 2, 5, 1.1, 0)


def gps_track_speed(stamps_ns: np.ndarray, enu: np.ndarray, end_ns: int,
                    span_ns: int = GPS_SPAN_NS) -> float:
    """Horizontal speed (m/s) at end_ns - span_ns / 2 from the fixes stamped in the span.

    A least-squares quadratic in time (a line with fewer than 4 fixes) through the finite
    east/north fixes with end_ns - span_ns <= stamp <= end_ns, differentiated at the span's
    middle. Evaluating at a fixed time rather than at the fixes' mean keeps the value's time
    unbiased when fixes are dropped. 0.0 with fewer than 2 usable fixes.
    """
    t = np.asarray(stamps_ns, dtype=np.int64).ravel()
    p = np.asarray(enu, dtype=np.float64).reshape(t.size, -1)[:, :2] if t.size else None
    if p is None or p.shape[1] < 2 or span_ns <= 0:
        return 0.0
    keep = (t >= end_ns - span_ns) & (t <= end_ns) & np.isfinite(p).all(axis=1)
    if np.count_nonzero(keep) < 2:
        return 0.0
    # Seconds from the span's middle, so the linear coefficient is the velocity there.
    x = (t[keep] - (end_ns - span_ns // 2)).astype(np.float64) * 1e-9
    if np.ptp(x) <= 0.0:
        return 0.0
    degree = 2 if x.size >= 4 else 1
    design = np.vander(x, degree + 1, increasing=True)
    coef, *_ = np.linalg.lstsq(design, p[keep], rcond=None)
    speed = math.hypot(float(coef[1, 0]), float(coef[1, 1]))
    return speed if math.isfinite(speed) else 0.0


class GpsSpeedTrack:
    """Per-fix GPS signature: keeps the last span of fixes and returns gps_track_speed."""

    def __init__(self, span_ns: int = GPS_SPAN_NS) -> None:
        if span_ns <= 0:
            raise ValueError(f'span_ns must be positive, got {span_ns}')
        self.span_ns = int(span_ns)
        self._fixes: deque[tuple[int, float, float]] = deque()

    def update(self, stamp_ns: int, enu: np.ndarray | None) -> float:
        """Add one fix (None or NaN for no position) and return the speed signature."""
        stamp_ns = int(stamp_ns)
        if self._fixes and stamp_ns <= self._fixes[-1][0]:
            # Out of order or a clock step back: start the track over.
            self._fixes.clear()
        e = n = math.nan
        if enu is not None:
            flat = np.asarray(enu, dtype=np.float64).ravel()
            if flat.size >= 2:
                e, n = float(flat[0]), float(flat[1])
        self._fixes.append((stamp_ns, e, n))
        while self._fixes[0][0] < stamp_ns - self.span_ns:
            self._fixes.popleft()
        arr = np.array(self._fixes, dtype=np.float64)
        return gps_track_speed(np.array([f[0] for f in self._fixes], np.int64), arr[:, 1:],
                               stamp_ns, self.span_ns)
