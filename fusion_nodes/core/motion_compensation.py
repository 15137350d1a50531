"""Ego-motion compensation of the lidar BEV pseudo-image to the camera's capture time.

A scan fused with a later camera frame was taken from where the car was earlier: at 10 m/s a
scan 150 ms old puts every static cell 1.5 m (three 0.5 m cells) too far ahead. Moving the
pillars by the ego motion over that interval puts them where the camera frame sees them, so
a frame can be fused with the newest scan at once instead of waiting for a closer one.
"""

from dataclasses import dataclass
import math

import cv2
import numpy as np

from fusion_nodes.core.config import BevGrid


@dataclass(frozen=True)
class PlanarVelocity:
    """Ego twist in base_link: forward and left speed (m/s) and yaw rate (rad/s)."""

    vx: float
    vy: float
    yaw_rate: float


@dataclass(frozen=True)
class VelocitySourceConfig:
    """When a remembered ego velocity is still good enough to move a scan with."""

    max_age_ns: int = 500_000_000
    # m/s: model 1.3.0 predicts 1.0-1.4 (5-95 %) with GPS, 3.2 without (its prior alone);
    # 1.2.0 predicted 0.8-1.2 and 3.3, 1.1.0 0.9-1.7 and 3.3.
    max_speed_std: float = 2.0
    max_interval_ns: int = 400_000_000  # longer gaps are not extrapolated

    def __post_init__(self) -> None:
        if self.max_age_ns <= 0 or self.max_interval_ns <= 0 or self.max_speed_std <= 0.0:
            raise ValueError('motion compensation limits must be positive')


def bev_warp_matrix(grid: BevGrid, velocity: PlanarVelocity, dt_s: float) -> np.ndarray:
    """2x3 map from a cell (col, row) at the later time to where it was dt_s earlier.

    Constant twist over dt_s: the car turns by yaw = yaw_rate * dt and moves along the chord
    of its arc, so a point p seen later was at R(yaw) p + t in the earlier base_link.
    """
    yaw = velocity.yaw_rate * dt_s
    half = 0.5 * yaw
    # Chord of the arc: the mean heading over the interval, length ~ speed * dt.
    tx = (velocity.vx * math.cos(half) - velocity.vy * math.sin(half)) * dt_s
    ty = (velocity.vx * math.sin(half) + velocity.vy * math.cos(half)) * dt_s
    c, s = math.cos(yaw), math.sin(yaw)
    r = grid.resolution
    x0 = grid.x_min + 0.5 * r
    y0 = grid.y_min + 0.5 * r
    # Cell (col j, row i) -> metres: x = x0 + r i, y = y0 + r j (rows along x, see BevGrid).
    to_metres = np.array([[0.0, r, x0], [r, 0.0, y0], [0.0, 0.0, 1.0]])
    motion = np.array([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]])
    to_cells = np.array([[0.0, 1.0 / r, -y0 / r], [1.0 / r, 0.0, -x0 / r], [0.0, 0.0, 1.0]])
    return (to_cells @ motion @ to_metres)[:2]


def compensate_bev(bev: np.ndarray, grid: BevGrid, velocity: PlanarVelocity,
                   dt_s: float) -> np.ndarray:
    """The (C, rows, cols) pseudo-image as seen dt_s later (dt_s < 0: earlier).

    Nearest-cell resampling keeps each pillar's values as they were (no blending of
    occupancy); cells that come into the grid from outside it are empty.
    """
    if bev.ndim != 3 or bev.shape[1:] != grid.shape:
        raise ValueError(f'expected a (C, {grid.shape[0]}, {grid.shape[1]}) BEV image, '
                         f'got {bev.shape}')
    if not all(math.isfinite(v) for v in (velocity.vx, velocity.vy, velocity.yaw_rate, dt_s)):
        raise ValueError(f'motion must be finite, got {velocity} over {dt_s} s')
    matrix = bev_warp_matrix(grid, velocity, dt_s)
    rows, cols = grid.shape
    out = np.empty_like(bev, dtype=np.float32)
    for k in range(bev.shape[0]):
        cv2.warpAffine(np.ascontiguousarray(bev[k], dtype=np.float32), matrix, (cols, rows),
                       dst=out[k], flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return out


class EgoVelocityHold:
    """The latest trusted ego velocity and when it was valid.

    Fed with the fused ego estimate after every frame; velocity_at() hands it out only while
    it is fresh and its predicted speed std is small (the ego head's variance grows when the
    GPS gate closes, so a guessed speed never moves a scan).
    """

    def __init__(self, cfg: VelocitySourceConfig = VelocitySourceConfig()) -> None:
        self._cfg = cfg
        self._velocity: PlanarVelocity | None = None
        self._stamp_ns: int | None = None

    def reset(self) -> None:
        self._velocity = None
        self._stamp_ns = None

    def update(self, stamp_ns: int, velocity: PlanarVelocity, speed_std: float) -> None:
        """Remember velocity at stamp_ns if trusted; an untrusted one forgets the last."""
        finite = all(math.isfinite(v) for v in (velocity.vx, velocity.vy, velocity.yaw_rate))
        if finite and math.isfinite(speed_std) and speed_std <= self._cfg.max_speed_std:
            self._velocity, self._stamp_ns = velocity, int(stamp_ns)
        else:
            self.reset()

    def velocity_at(self, stamp_ns: int) -> PlanarVelocity | None:
        if self._stamp_ns is None or abs(int(stamp_ns) - self._stamp_ns) > self._cfg.max_age_ns:
            return None
        return self._velocity

    def usable_interval(self, dt_ns: int) -> bool:
        return abs(int(dt_ns)) <= self._cfg.max_interval_ns
