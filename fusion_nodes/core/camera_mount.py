"""Camera mount check: is the ground at the bottom of the image?

A forward-looking camera on a ground vehicle sees the road close below it at the bottom of
the image and sky or distant things at the top, so while the vehicle moves the bottom of the
image streams past far faster than the top. A camera mounted upside down, or an image turned
by a wrong driver setting, shows the reverse. Its brightness, contrast and sharpness stay
those of a healthy frame, and the network's gate and novelty score did not catch it on the
held-out recordings (README), so the camera node checks it here.

Every `lag_ns` the check takes the optical flow between the frame and the one it last used
(the 64x48 Farneback flow of align/signatures.dense_flow) and, when the image moved enough
to tell, the log ratio of the mean flow in the bottom band to that in the top band. A
one-sided CUSUM of that ratio falling short of healthy raises the alarm.
"""

from collections import deque
from dataclasses import dataclass

import numpy as np

from fusion_nodes.core.align.signatures import dense_flow


@dataclass(frozen=True)
class CameraMountConfig:
    """Flow in pixels of the 64x48 reduction; the CUSUM sums clipped log ratios.

    Measured on generator recordings of every scenario (README): a moving healthy camera's
    log(bottom / top) has a median near +3 and a 10th percentile above +1.8.
    """

    lag_ns: int = 100_000_000
    min_flow_px: float = 0.3
    band_fraction: float = 1.0 / 3.0
    clip: float = 4.0
    drift: float = 1.0
    alarm: float = 8.0
    ceiling: float = 12.0
    median_steps: int = 20

    def __post_init__(self) -> None:
        if self.lag_ns <= 0:
            raise ValueError(f'lag_ns must be positive, got {self.lag_ns}')
        if not 0.0 < self.band_fraction <= 0.5:
            raise ValueError(f'band_fraction must be in (0, 0.5], got {self.band_fraction}')
        if min(self.min_flow_px, self.clip, self.drift, self.alarm) <= 0.0:
            raise ValueError('min_flow_px, clip, drift and alarm must be positive')
        if self.ceiling < self.alarm:
            raise ValueError('ceiling must be >= alarm')
        if self.median_steps < 1:
            raise ValueError(f'median_steps must be >= 1, got {self.median_steps}')


@dataclass(frozen=True)
class CameraMountState:
    """The check after one frame: in_error, the CUSUM level and the recent ratio median."""

    in_error: bool
    cusum: float
    log_ratio: float
    steps: int


def bottom_to_top_log_ratio(flow: np.ndarray, band_fraction: float) -> tuple[float, float]:
    """log(mean flow of the bottom band / of the top band), and the mean flow of the image."""
    magnitude = np.hypot(flow[..., 0], flow[..., 1])
    band = max(1, int(round(magnitude.shape[0] * band_fraction)))
    eps = 1e-3  # a featureless sky has no flow at all
    ratio = np.log((magnitude[-band:].mean() + eps) / (magnitude[:band].mean() + eps))
    return float(ratio), float(magnitude.mean())


class CameraMountMonitor:
    """Feeds each usable frame's grey image, reports whether the camera looks upside down.

    Frames the node already puts in ERROR (frozen, dark, glare) should not be fed. A stamp
    that steps back restarts the check (bag loop); a gap over four lags only restarts the
    frame pair.
    """

    def __init__(self, cfg: CameraMountConfig = CameraMountConfig()) -> None:
        self._cfg = cfg
        self._reference: tuple[int, np.ndarray] | None = None
        self._ratios: deque[float] = deque(maxlen=cfg.median_steps)
        self._level = 0.0
        self.steps = 0

    def reset(self) -> None:
        self._reference = None
        self._ratios.clear()
        self._level = 0.0
        self.steps = 0

    def state(self) -> CameraMountState:
        ratio = float(np.median(self._ratios)) if self._ratios else 0.0
        return CameraMountState(in_error=self._level > self._cfg.alarm, cusum=self._level,
                                log_ratio=ratio, steps=self.steps)

    def update(self, stamp_ns: int, grey: np.ndarray) -> CameraMountState:
        cfg = self._cfg
        reference = self._reference
        if reference is not None and stamp_ns < reference[0]:
            self.reset()
            reference = None
        if reference is None or stamp_ns - reference[0] > 4 * cfg.lag_ns:
            self._reference = (int(stamp_ns), np.array(grey, dtype=np.float32))
            return self.state()
        # Three quarters of a lag: frames come at a fixed rate with jitter; waiting for a full
        # lag would skip to the next frame half the time.
        if stamp_ns - reference[0] < cfg.lag_ns * 3 // 4:
            return self.state()
        flow = dense_flow(reference[1], grey)
        self._reference = (int(stamp_ns), np.array(grey, dtype=np.float32))
        if flow is None:
            return self.state()
        ratio, mean_flow = bottom_to_top_log_ratio(flow, cfg.band_fraction)
        if mean_flow >= cfg.min_flow_px:
            clipped = float(np.clip(ratio, -cfg.clip, cfg.clip))
            # The ceiling lets a fixed camera clear within a step or two.
            self._level = min(cfg.ceiling, max(0.0, self._level - clipped - cfg.drift))
            self._ratios.append(ratio)
            self.steps += 1
        return self.state()
