"""Lidar mount check: does the world stream past the lidar along the vehicle's x axis?

A car (or a differential-drive robot) does not slide sideways, so between two scans a short
time apart the static world moves straight back in base_link, turned at most by the yaw
between them. A lidar whose extrinsic yaw is wrong, or whose mount has turned, sees the world
move at an angle: the angle between its apparent travel and the x axis is its yaw error.
Its own health features cannot show that (the scan is dense, sharp and unique), and the
network's gate did not learn it (README, held-out kinds), so the lidar node checks it here.

Each step registers the occupancy channel of the BEV pillars against the scan about
`lag_ns` older: a search over small yaw angles about the base origin, each scored by phase
correlation, gives the yaw between the scans and the shift. Only near-straight, moving,
well-matched steps count; a two-sided CUSUM of their apparent heading (clipped, so a
parked truck's wrong match cannot trip it alone) raises the alarm.

The median of the last few counted headings is also reported, sooner than the alarm, as
evidence for fusion_node's yaw blame (core/yaw_blame.py); a registration that hits the edge
of the yaw search or matches poorly (as across a turn of the mount) voids it.
"""

from collections import deque
from dataclasses import dataclass
import math

import cv2
import numpy as np

from fusion_nodes.core.config import BevGrid


@dataclass(frozen=True)
class LidarMountConfig:
    """Thresholds in degrees and metres; the CUSUM sums clipped headings in degrees.

    Defaults measured on generator recordings of every scenario (README): healthy steps
    scatter with an interquartile range of about +-1 degree and heavy tails (moving objects,
    turns), which the clip and the drift absorb.
    """

    lag_ns: int = 500_000_000
    min_travel_m: float = 1.5
    yaw_search_deg: float = 10.0
    yaw_step_deg: float = 1.0
    max_yaw_deg: float = 3.0
    min_peak: float = 0.2
    clip_deg: float = 25.0
    drift_deg: float = 10.0
    alarm_deg: float = 100.0
    ceiling_deg: float = 120.0
    median_steps: int = 20
    # The travel heading evidence: the median of the last evidence_steps counted headings,
    # with at least evidence_min_steps of them no older than evidence_max_age_ns, all since
    # the last registration on the search edge or under min_peak.
    evidence_steps: int = 5
    evidence_min_steps: int = 3
    evidence_max_age_ns: int = 5_000_000_000

    def __post_init__(self) -> None:
        if self.lag_ns <= 0:
            raise ValueError(f'lag_ns must be positive, got {self.lag_ns}')
        if not 1 <= self.evidence_min_steps <= self.evidence_steps:
            raise ValueError('need 1 <= evidence_min_steps <= evidence_steps')
        if self.evidence_max_age_ns < 0:
            raise ValueError('evidence_max_age_ns must be >= 0')
        if not 0.0 < self.yaw_step_deg <= self.yaw_search_deg:
            raise ValueError('need 0 < yaw_step_deg <= yaw_search_deg')
        if not 0.0 <= self.max_yaw_deg <= self.yaw_search_deg:
            raise ValueError('need 0 <= max_yaw_deg <= yaw_search_deg')
        if min(self.min_travel_m, self.clip_deg, self.drift_deg, self.alarm_deg) <= 0.0:
            raise ValueError('min_travel_m, clip_deg, drift_deg and alarm_deg must be positive')
        if self.ceiling_deg < self.alarm_deg:
            raise ValueError('ceiling_deg must be >= alarm_deg')
        if self.median_steps < 1:
            raise ValueError(f'median_steps must be >= 1, got {self.median_steps}')


@dataclass(frozen=True)
class ScanMotion:
    """How the world moved from one scan to the next, in base_link.

    yaw_deg is the vehicle's yaw change (counter-clockwise positive); shift_m is the static
    world's displacement (x, y) after undoing it; peak is the phase correlation peak, 1 for
    a perfect match.
    """

    yaw_deg: float
    shift_m: tuple[float, float]
    peak: float
    on_search_edge: bool

    @property
    def travel_m(self) -> float:
        return float(np.hypot(*self.shift_m))

    @property
    def heading_deg(self) -> float:
        """Direction of the vehicle's travel from x, folded into [-90, 90) for reversing."""
        dx, dy = self.shift_m
        angle = float(np.degrees(np.arctan2(-dy, -dx)))
        return (angle + 90.0) % 180.0 - 90.0


def _subsample(minus: float, centre: float, plus: float) -> float:
    curvature = minus - 2.0 * centre + plus
    return 0.0 if curvature >= 0.0 else 0.5 * (minus - plus) / curvature


class ScanRegistration:
    """Yaw-and-shift registration of two occupancy grids of one BevGrid (phase correlation).

    Written on cv2.dft, not cv2.phaseCorrelate: that returned different peaks for equal
    inputs in this OpenCV build (measured), which a health check cannot live with.
    """

    def __init__(self, grid: BevGrid, cfg: LidarMountConfig) -> None:
        rows, cols = grid.shape
        self._resolution = grid.resolution
        # The base origin in pixel coordinates (u along columns = y, v along rows = x).
        self._origin = ((0.0 - grid.y_min) / grid.resolution - 0.5,
                        (0.0 - grid.x_min) / grid.resolution - 0.5)
        self._size = (cols, rows)
        steps = int(round(cfg.yaw_search_deg / cfg.yaw_step_deg))
        self._angles = np.arange(-steps, steps + 1) * cfg.yaw_step_deg
        self._window = np.outer(np.hanning(rows), np.hanning(cols)).astype(np.float32)

    def _whitened(self, grid: np.ndarray) -> np.ndarray:
        """The windowed grid's spectrum with every magnitude set to 1 (phase only)."""
        spectrum = cv2.dft(grid * self._window, flags=cv2.DFT_COMPLEX_OUTPUT)
        magnitude = cv2.magnitude(spectrum[..., 0], spectrum[..., 1])
        return spectrum / np.maximum(magnitude, 1e-9)[..., None]

    def __call__(self, previous: np.ndarray, current: np.ndarray) -> ScanMotion:
        previous = np.asarray(previous, dtype=np.float32)
        current = np.asarray(current, dtype=np.float32)
        if previous.shape != current.shape or previous.shape != self._size[::-1]:
            raise ValueError(f'occupancy grids must both be {self._size[::-1]}, got '
                             f'{previous.shape} and {current.shape}')
        target = self._whitened(current)
        peaks = np.empty(len(self._angles))
        surfaces = []
        for k, angle in enumerate(self._angles):
            rotation = cv2.getRotationMatrix2D(self._origin, float(angle), 1.0)
            turned = cv2.warpAffine(previous, rotation, self._size, flags=cv2.INTER_LINEAR)
            cross = cv2.mulSpectrums(target, self._whitened(turned), 0, conjB=True)
            surfaces.append(cv2.idft(cross, flags=cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE))
            peaks[k] = cv2.minMaxLoc(surfaces[-1])[1]
        best = int(np.argmax(peaks))
        angle = float(self._angles[best])
        edge = best in (0, len(self._angles) - 1)
        if not edge:
            angle += _subsample(peaks[best - 1], peaks[best], peaks[best + 1]) * (
                self._angles[1] - self._angles[0])
        surface = surfaces[best].astype(np.float64)
        rows, cols = surface.shape
        i, j = np.unravel_index(int(np.argmax(surface)), surface.shape)
        di = i + _subsample(surface[(i - 1) % rows, j], surface[i, j], surface[(i + 1) % rows, j])
        dj = j + _subsample(surface[i, (j - 1) % cols], surface[i, j], surface[i, (j + 1) % cols])
        di = (di + rows / 2) % rows - rows / 2
        dj = (dj + cols / 2) % cols - cols / 2
        # cv2 turns the image counter-clockwise on screen, where rows (x) point down and
        # columns (y) right: a counter-clockwise turn in base_link, undoing a right yaw.
        shift = (float(di) * self._resolution, float(dj) * self._resolution)
        return ScanMotion(yaw_deg=-angle, shift_m=shift, peak=float(peaks[best]),
                          on_search_edge=edge)


@dataclass(frozen=True)
class LidarMountState:
    """The check after one scan: in_error, the CUSUM level, the recent heading median, and
    the travel heading evidence for the yaw blame (NaN when there is none)."""

    in_error: bool
    cusum_deg: float
    heading_deg: float
    steps: int
    travel_heading_deg: float = math.nan


class LidarMountMonitor:
    """Feeds each usable scan's occupancy, reports whether the lidar's yaw looks wrong.

    update() takes the scan's stamp and occupancy; scans the node already puts in ERROR
    (frozen, dropout) should not be fed. A stamp that steps back, or a gap over four lags,
    restarts the history (bag loop, outage); the CUSUM is kept across gaps, not across a
    step back.
    """

    def __init__(self, grid: BevGrid, cfg: LidarMountConfig = LidarMountConfig()) -> None:
        self._cfg = cfg
        self._register = ScanRegistration(grid, cfg)
        self._history: deque[tuple[int, np.ndarray]] = deque()
        self._headings: deque[float] = deque(maxlen=cfg.median_steps)
        self._recent: deque[tuple[int, float]] = deque(maxlen=cfg.evidence_steps)
        self._last_stamp: int | None = None
        self._high = 0.0
        self._low = 0.0
        self.steps = 0

    def reset(self) -> None:
        self._history.clear()
        self._headings.clear()
        self._recent.clear()
        self._last_stamp = None
        self._high = self._low = 0.0
        self.steps = 0

    def state(self) -> LidarMountState:
        heading = float(np.median(self._headings)) if self._headings else 0.0
        level = max(self._high, self._low)
        return LidarMountState(in_error=level > self._cfg.alarm_deg, cusum_deg=level,
                               heading_deg=heading, steps=self.steps,
                               travel_heading_deg=self._travel_heading())

    def _travel_heading(self) -> float:
        cfg = self._cfg
        now = self._last_stamp
        if now is None:
            return math.nan
        recent = [h for stamp, h in self._recent if now - stamp <= cfg.evidence_max_age_ns]
        if len(recent) < cfg.evidence_min_steps:
            return math.nan
        return float(np.median(recent))

    def update(self, stamp_ns: int, occupancy: np.ndarray) -> LidarMountState:
        cfg = self._cfg
        if self._history and stamp_ns < self._history[-1][0]:
            self.reset()
        elif self._history and stamp_ns - self._history[-1][0] > 4 * cfg.lag_ns:
            self._history.clear()
        reference = self._reference(stamp_ns)
        self._history.append((int(stamp_ns), np.array(occupancy, dtype=np.float32)))
        while stamp_ns - self._history[0][0] > 2 * cfg.lag_ns:
            self._history.popleft()
        self._last_stamp = int(stamp_ns)
        if reference is not None:
            motion = self._register(reference, occupancy)
            if motion.on_search_edge or motion.peak < cfg.min_peak:
                # The scan turned more than a vehicle does between two scans, or matched
                # nothing: what it said before is no evidence for what it says now.
                self._recent.clear()
            elif self._counts(motion):
                self._accumulate(motion.heading_deg)
                self._recent.append((int(stamp_ns), motion.heading_deg))
        return self.state()

    def _reference(self, stamp_ns: int) -> np.ndarray | None:
        """The kept scan whose age is nearest the lag, if it is within half a lag of it."""
        best = None
        for stamp, occupancy in self._history:
            miss = abs((stamp_ns - stamp) - self._cfg.lag_ns)
            if miss <= self._cfg.lag_ns // 2 and (best is None or miss < best[0]):
                best = (miss, occupancy)
        return None if best is None else best[1]

    def _counts(self, motion: ScanMotion) -> bool:
        cfg = self._cfg
        return (not motion.on_search_edge and abs(motion.yaw_deg) <= cfg.max_yaw_deg
                and motion.peak >= cfg.min_peak and motion.travel_m >= cfg.min_travel_m)

    def _accumulate(self, heading_deg: float) -> None:
        cfg = self._cfg
        clipped = float(np.clip(heading_deg, -cfg.clip_deg, cfg.clip_deg))
        # The ceiling lets a fixed mount clear after two straight steps, however long the
        # fault lasted: the vehicle may not move much once it is fixed.
        self._high = min(cfg.ceiling_deg, max(0.0, self._high + clipped - cfg.drift_deg))
        self._low = min(cfg.ceiling_deg, max(0.0, self._low - clipped - cfg.drift_deg))
        self._headings.append(heading_deg)
        self.steps += 1
