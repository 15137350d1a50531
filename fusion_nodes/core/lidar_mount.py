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

A mount that is knocked turns the scan at once, by more than the vehicle can yaw between two
sweeps. When a step looks unlike straight travel, the scan is also registered against the
sweep just before it over a wide yaw search: a clear best match far from no turn is a mount
jump. The scans before it are in another frame, so they are dropped as references, and the
jump itself is the evidence (the travel heading before it, turned by the jump) until the new
frame's own steps count. Without it the evidence took 0.7-0.9 s of sweeps after the turn.
"""

from collections import deque
from dataclasses import dataclass, replace
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
    # The mount jump: against the previous sweep (at most jump_max_gap_ns older), the best
    # yaw over +-jump_search_deg is at least jump_min_deg and its peak jump_min_ratio times
    # the best within jump_still_deg, the most a vehicle yaws in one sweep.
    jump_search_deg: float = 30.0
    jump_step_deg: float = 2.0
    jump_still_deg: float = 4.0
    jump_min_deg: float = 8.0
    jump_min_ratio: float = 1.5
    jump_max_gap_ns: int = 250_000_000

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
        if not (0.0 < self.jump_step_deg <= self.jump_still_deg < self.jump_min_deg
                <= self.jump_search_deg):
            raise ValueError('need 0 < jump_step_deg <= jump_still_deg < jump_min_deg <= '
                             'jump_search_deg')
        if self.jump_min_ratio <= 1.0 or self.jump_max_gap_ns <= 0:
            raise ValueError('jump_min_ratio must be > 1 and jump_max_gap_ns positive')


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

    @property
    def yaws_deg(self) -> np.ndarray:
        """The searched yaws, in ScanMotion.yaw_deg's sign."""
        return -self._angles

    def _correlate(self, previous: np.ndarray, current: np.ndarray
                   ) -> tuple[np.ndarray, list[np.ndarray]]:
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
        return peaks, surfaces

    def peaks(self, previous: np.ndarray, current: np.ndarray) -> np.ndarray:
        """The phase correlation peak at each of yaws_deg."""
        return self._correlate(previous, current)[0]

    def __call__(self, previous: np.ndarray, current: np.ndarray) -> ScanMotion:
        peaks, surfaces = self._correlate(previous, current)
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
class SweepTurn:
    """A scan registered against the sweep just before it over a wide yaw search.

    yaw_deg is the best match's yaw (ScanMotion.yaw_deg's sign), peak its phase correlation
    peak, and still_peak the best peak within jump_still_deg of no turn.
    """

    yaw_deg: float
    peak: float
    still_peak: float
    on_search_edge: bool

    def is_jump(self, cfg: LidarMountConfig) -> bool:
        """Turned by more than a vehicle yaws in one sweep, and plainly so."""
        return (abs(self.yaw_deg) >= cfg.jump_min_deg and not self.on_search_edge
                and self.peak >= cfg.min_peak
                and self.peak >= cfg.jump_min_ratio * self.still_peak)

    def held(self, cfg: LidarMountConfig) -> bool:
        """Best matched as the vehicle can turn in one sweep: the mount did not move."""
        return abs(self.yaw_deg) <= cfg.jump_still_deg and self.peak >= cfg.min_peak


class SweepTurnCheck:
    """Registers a scan against the sweep before it over +-jump_search_deg (SweepTurn).

    Healthy consecutive sweeps often match some turn of 10-30 degrees almost as well as no
    turn (rows of poles and walls look alike turned), so a jump is judged on the ratio of the
    best peak to the best near no turn, not on the best yaw alone (README, lidar mount check).
    """

    def __init__(self, grid: BevGrid, cfg: LidarMountConfig) -> None:
        self._register = ScanRegistration(grid, replace(
            cfg, yaw_search_deg=cfg.jump_search_deg, yaw_step_deg=cfg.jump_step_deg))
        self._still = np.abs(self._register.yaws_deg) <= cfg.jump_still_deg + 1e-9

    def __call__(self, previous: np.ndarray, current: np.ndarray) -> SweepTurn:
        peaks = self._register.peaks(previous, current)
        best = int(np.argmax(peaks))
        return SweepTurn(yaw_deg=float(self._register.yaws_deg[best]), peak=float(peaks[best]),
                         still_peak=float(peaks[self._still].max()),
                         on_search_edge=best in (0, len(peaks) - 1))


def _folded(heading_deg: float) -> float:
    return (heading_deg + 90.0) % 180.0 - 90.0


@dataclass(frozen=True)
class LidarMountState:
    """The check after one scan: in_error, the CUSUM level, the recent heading median, the
    travel heading evidence for the yaw blame (NaN when there is none), how many mount jumps
    were seen, the last one's yaw while it is the evidence (else NaN), and this scan's
    registration and the time it spans (for lidar_odometry; None from state() and when the
    scan was not registered)."""

    in_error: bool
    cusum_deg: float
    heading_deg: float
    steps: int
    travel_heading_deg: float = math.nan
    jumps: int = 0
    jump_deg: float = math.nan
    motion: ScanMotion | None = None
    motion_span_ns: int = 0


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
        self._sweep_turn = SweepTurnCheck(grid, cfg)
        self._history: deque[tuple[int, np.ndarray]] = deque()
        self._headings: deque[float] = deque(maxlen=cfg.median_steps)
        self._recent: deque[tuple[int, float]] = deque(maxlen=cfg.evidence_steps)
        self._last_stamp: int | None = None
        self._high = 0.0
        self._low = 0.0
        self.steps = 0
        self.jumps = 0
        # The last mount jump while it stands as evidence: (stamp, yaw, heading after it).
        self._jump: tuple[int, float, float] | None = None

    def reset(self) -> None:
        self._history.clear()
        self._headings.clear()
        self._recent.clear()
        self._last_stamp = None
        self._high = self._low = 0.0
        self.steps = 0
        self._jump = None

    def state(self) -> LidarMountState:
        heading = float(np.median(self._headings)) if self._headings else 0.0
        level = max(self._high, self._low)
        jump = self._fresh_jump()
        return LidarMountState(in_error=level > self._cfg.alarm_deg, cusum_deg=level,
                               heading_deg=heading, steps=self.steps,
                               travel_heading_deg=self._travel_heading(), jumps=self.jumps,
                               jump_deg=math.nan if jump is None else jump[1])

    def _steps_evidence(self) -> float:
        cfg = self._cfg
        now = self._last_stamp
        if now is None:
            return math.nan
        recent = [h for stamp, h in self._recent if now - stamp <= cfg.evidence_max_age_ns]
        if len(recent) < cfg.evidence_min_steps:
            return math.nan
        return float(np.median(recent))

    def _fresh_jump(self) -> tuple[int, float, float] | None:
        if self._jump is None or self._last_stamp - self._jump[0] > self._cfg.evidence_max_age_ns:
            return None
        return self._jump

    def _travel_heading(self) -> float:
        heading = self._steps_evidence()
        jump = self._fresh_jump()
        if math.isfinite(heading) or jump is None:
            return heading
        return jump[2]

    def update(self, stamp_ns: int, occupancy: np.ndarray) -> LidarMountState:
        cfg = self._cfg
        if self._history and stamp_ns < self._history[-1][0]:
            self.reset()
        elif self._history and stamp_ns - self._history[-1][0] > 4 * cfg.lag_ns:
            self._history.clear()
        reference = self._reference(stamp_ns)
        previous = self._history[-1] if self._history else None
        occupancy = np.array(occupancy, dtype=np.float32)
        self._history.append((int(stamp_ns), occupancy))
        while stamp_ns - self._history[0][0] > 2 * cfg.lag_ns:
            self._history.popleft()
        prior = self._travel_heading()
        self._last_stamp = int(stamp_ns)
        if reference is None:
            return self.state()
        reference_stamp, reference = reference
        motion = self._register(reference, occupancy)
        straight = (not motion.on_search_edge and motion.peak >= cfg.min_peak
                    and abs(motion.yaw_deg) <= cfg.max_yaw_deg)
        held = False
        if not straight and previous is not None \
                and stamp_ns - previous[0] <= cfg.jump_max_gap_ns:
            turn = self._sweep_turn(previous[1], occupancy)
            if turn.is_jump(cfg):
                self._on_jump(int(stamp_ns), turn.yaw_deg, prior)
                return self.state()
            held = turn.held(cfg)
        if motion.on_search_edge or motion.peak < cfg.min_peak:
            # The scan turned more than a vehicle does between two scans, or matched
            # nothing: unless the sweep before shows the mount held, what it said before is
            # no evidence for what it says now.
            if not held:
                self._recent.clear()
        elif self._counts(motion):
            self._accumulate(motion.heading_deg)
            self._recent.append((int(stamp_ns), motion.heading_deg))
            if math.isfinite(self._steps_evidence()):
                self._jump = None
        return replace(self.state(), motion=motion,
                       motion_span_ns=int(stamp_ns) - reference_stamp)

    def _on_jump(self, stamp_ns: int, yaw_deg: float, prior_heading_deg: float) -> None:
        """The mount turned by yaw_deg at stamp_ns: the older scans are another frame."""
        self.jumps += 1
        while len(self._history) > 1:
            self._history.popleft()
        self._recent.clear()
        # Unknown before: taken as mounted straight, as calibrated.
        before = prior_heading_deg if math.isfinite(prior_heading_deg) else 0.0
        self._jump = (stamp_ns, yaw_deg, _folded(before - yaw_deg))

    def _reference(self, stamp_ns: int) -> tuple[int, np.ndarray] | None:
        """The kept scan (stamp, occupancy) whose age is nearest the lag, if it is within
        half a lag of it."""
        best = None
        for stamp, occupancy in self._history:
            miss = abs((stamp_ns - stamp) - self._cfg.lag_ns)
            if miss <= self._cfg.lag_ns // 2 and (best is None or miss < best[0]):
                best = (miss, stamp, occupancy)
        return None if best is None else best[1:]

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
