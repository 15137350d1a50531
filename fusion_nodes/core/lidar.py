"""Lidar BEV pillar pseudo-image for the network, and lidar health features."""

from dataclasses import dataclass

import numpy as np

from fusion_nodes.core.config import PillarConfig

LIDAR_HEALTH_FEATURES = ('point_ratio', 'valid_ratio', 'frozen', 'near_clutter')


def lidar_points_to_base(xyzi: np.ndarray, translation: tuple[float, float, float],
                         rotation: np.ndarray | None = None) -> np.ndarray:
    """(N, 4) x, y, z, intensity from the lidar frame into base_link."""
    if xyzi.ndim != 2 or xyzi.shape[1] != 4:
        raise ValueError(f'expected (N, 4) x, y, z, intensity, got {xyzi.shape}')
    out = np.array(xyzi, dtype=np.float32, copy=True)
    if rotation is not None:
        out[:, :3] = out[:, :3] @ np.asarray(rotation, dtype=np.float32).T
    out[:, :3] += np.asarray(translation, dtype=np.float32)
    return out


def pillarize(xyzi_base: np.ndarray, cfg: PillarConfig) -> np.ndarray:
    """(4, rows, cols) float32: obstacle occupancy, max height, mean intensity, density.

    Heights are normalised by z_max and clipped to [0, 1]; intensity is taken as [0, 1]
    reflectivity (clipped); density is log(1 + count) / log(1 + density_norm).
    """
    rows, cols = cfg.grid.shape
    out = np.zeros((4, rows, cols), dtype=np.float32)
    if xyzi_base.size == 0:
        return out
    x, y, z, intensity = xyzi_base[:, 0], xyzi_base[:, 1], xyzi_base[:, 2], xyzi_base[:, 3]
    i, j, inside = cfg.grid.cell_index(x, y)
    inside &= (z >= cfg.z_min) & (z <= cfg.z_max) & np.isfinite(intensity)
    if not inside.any():
        return out
    flat = i[inside] * cols + j[inside]
    z_in = z[inside]
    cells = rows * cols
    count = np.bincount(flat, minlength=cells).astype(np.float32)
    obstacle = np.bincount(flat, weights=(z_in >= cfg.obstacle_min_z), minlength=cells)
    intensity_sum = np.bincount(flat, weights=np.clip(intensity[inside], 0.0, 1.0),
                                minlength=cells)
    height = np.zeros(cells, dtype=np.float32)
    np.maximum.at(height, flat, np.clip(z_in / cfg.z_max, 0.0, 1.0))
    seen = count > 0
    out[0].flat[:] = obstacle > 0
    out[1].flat[:] = height
    out[2].flat[seen] = intensity_sum[seen] / count[seen]
    out[3].flat[:] = np.log1p(count) / np.log1p(cfg.density_norm)
    np.minimum(out[3], 1.0, out=out[3])
    return out


@dataclass(frozen=True)
class LidarHealthConfig:
    """expected_points is a healthy scan's valid point count (beams x azimuth steps x hit rate)."""

    expected_points: int = 24000
    near_range: float = 3.0
    frozen_repeats: int = 1
    frozen_sample: int = 512


class LidarHealthTracker:
    """Scores each scan: point ratio, valid ratio, frozen flag and near-range clutter ratio.

    Rain shows up as many returns close to the sensor; a dead or blocked lidar as a low point
    ratio; a frozen driver as scans identical to the previous one.
    """

    def __init__(self, cfg: LidarHealthConfig = LidarHealthConfig()) -> None:
        self._cfg = cfg
        self._previous_sample: np.ndarray | None = None
        self._identical_scans = 0

    def reset(self) -> None:
        self._previous_sample = None
        self._identical_scans = 0

    def update(self, xyzi: np.ndarray, total_points: int) -> np.ndarray:
        """Health of one scan: xyzi are its finite points, total_points counts NaN ones too."""
        cfg = self._cfg
        valid = xyzi.shape[0]
        stride = max(1, valid // cfg.frozen_sample)
        sample = xyzi[::stride].copy()
        if (self._previous_sample is not None and valid > 0
                and np.array_equal(sample, self._previous_sample)):
            self._identical_scans += 1
        else:
            self._identical_scans = 0
        self._previous_sample = sample
        frozen = 1.0 if self._identical_scans >= cfg.frozen_repeats else 0.0
        if valid:
            horizontal = np.hypot(xyzi[:, 0], xyzi[:, 1])
            near = float(np.count_nonzero(horizontal < cfg.near_range)) / valid
        else:
            near = 0.0
        return np.array([
            min(valid / cfg.expected_points, 1.5),
            valid / total_points if total_points else 0.0,
            frozen,
            near,
        ], dtype=np.float32)
