"""Shared geometry and settings: the BEV grid, semantic classes, sensor models.

Frames follow REP 103/105: base_link is x forward, y left, z up; the camera optical frame is
z forward, x right, y down. Every other module reads its geometry from here so that the
generator, the preprocessing, the network and the fusion node agree cell by cell.
"""

from dataclasses import dataclass, field
import math

import numpy as np

SEMANTIC_CLASSES = ('free', 'car', 'pedestrian', 'cone', 'red_cube', 'blue_cube')
SENSORS = ('camera', 'lidar', 'gps')
NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class BevGrid:
    """Ego-centred bird's-eye grid in base_link; row i is x, column j is y."""

    x_min: float = 0.0
    x_max: float = 32.0
    y_min: float = -16.0
    y_max: float = 16.0
    resolution: float = 0.5

    def __post_init__(self) -> None:
        if self.resolution <= 0.0:
            raise ValueError(f'BEV resolution must be positive, got {self.resolution}')
        for lo, hi, axis in ((self.x_min, self.x_max, 'x'), (self.y_min, self.y_max, 'y')):
            cells = (hi - lo) / self.resolution
            if hi <= lo or abs(cells - round(cells)) > 1e-6:
                raise ValueError(
                    f'BEV {axis} range [{lo}, {hi}) is not a positive whole number of '
                    f'{self.resolution} m cells')

    @property
    def shape(self) -> tuple[int, int]:
        """(rows along x, columns along y)."""
        return (round((self.x_max - self.x_min) / self.resolution),
                round((self.y_max - self.y_min) / self.resolution))

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """x and y of every cell centre, each shaped like the grid."""
        rows, cols = self.shape
        xs = self.x_min + (np.arange(rows) + 0.5) * self.resolution
        ys = self.y_min + (np.arange(cols) + 0.5) * self.resolution
        return np.meshgrid(xs, ys, indexing='ij')

    def cell_index(self, x: np.ndarray,
                   y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row, column and an in-grid mask for points in base_link."""
        rows, cols = self.shape
        i = np.floor((np.asarray(x) - self.x_min) / self.resolution).astype(np.int64)
        j = np.floor((np.asarray(y) - self.y_min) / self.resolution).astype(np.int64)
        inside = (i >= 0) & (i < rows) & (j >= 0) & (j < cols)
        return i, j, inside


def rotation_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Rotation matrix R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx


# base_link-axes (x fwd, y left, z up) -> optical axes (x right, y down, z fwd)
_BODY_TO_OPTICAL = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


@dataclass(frozen=True)
class CameraModel:
    """Pinhole camera: intrinsics plus its pose in base_link (pitch > 0 looks down)."""

    width: int = 640
    height: int = 480
    fx: float = 320.0
    fy: float = 320.0
    cx: float = 320.0
    cy: float = 240.0
    translation: tuple[float, float, float] = (1.5, 0.0, 1.6)
    rpy: tuple[float, float, float] = (0.0, 0.08, 0.0)

    @property
    def k(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def base_to_optical(self) -> tuple[np.ndarray, np.ndarray]:
        """Rotation and translation taking base_link points into the optical frame."""
        r_base_cam = rotation_rpy(*self.rpy)
        rot = _BODY_TO_OPTICAL @ r_base_cam.T
        trans = -rot @ np.asarray(self.translation, dtype=np.float64)
        return rot, trans

    def project(self, points_base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel (u, v) and depth for N x 3 base_link points."""
        rot, trans = self.base_to_optical()
        cam = np.asarray(points_base, dtype=np.float64) @ rot.T + trans
        depth = cam[:, 2]
        safe = np.where(depth > 1e-6, depth, np.nan)
        u = self.fx * cam[:, 0] / safe + self.cx
        v = self.fy * cam[:, 1] / safe + self.cy
        return np.stack([u, v], axis=1), depth


@dataclass(frozen=True)
class LidarModel:
    """Spinning lidar: beams spread over a vertical field of view, mounted in base_link."""

    beams: int = 32
    azimuth_steps: int = 1024
    min_elevation_deg: float = -25.0
    max_elevation_deg: float = 5.0
    max_range: float = 60.0
    translation: tuple[float, float, float] = (0.0, 0.0, 1.8)

    def elevations(self) -> np.ndarray:
        return np.deg2rad(np.linspace(self.min_elevation_deg, self.max_elevation_deg, self.beams))


@dataclass(frozen=True)
class CameraPreprocessConfig:
    """Network input for the camera: resized RGB, normalised per channel."""

    width: int = 128
    height: int = 96
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)


@dataclass(frozen=True)
class PillarConfig:
    """Lidar BEV pseudo-image: occupancy, max height, mean intensity, density.

    Occupancy counts only returns above obstacle_min_z, so flat ground reads as free.
    """

    grid: BevGrid = field(default_factory=BevGrid)
    z_min: float = -0.5
    z_max: float = 3.0
    obstacle_min_z: float = 0.25
    density_norm: float = 16.0
    channels: tuple[str, ...] = ('occupancy', 'max_height', 'mean_intensity', 'density')
