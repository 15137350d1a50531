"""Metric ego-motion signatures: how far the car moved forward between two messages, in metres.

The clock-offset estimator compares these with the GPS track speed, so every sensor speaks
metres per second once the aligner divides by the interval. Energies (flow magnitude, occupancy
change) follow speed too, but with a gain that depends on the scene (depth, structure), and on
the generator's smooth speed profiles that gain moved the best lag by 100-300 ms.

- Camera (GroundPatchSpeed): the flat road 3.8-9 m ahead, warped to a top-down patch of 3 cm
  pixels through the calibration, matched between consecutive frames by phase correlation.
- Lidar (ObstacleDisplacement): the forward part of the rigid 2D motion (shift and yaw) that
  carries compact obstacle clusters (under 6 x 4 m, above 0.3 m) of one sweep onto the next.
  Whole-grid registration is not used: the beams' sampling pattern on a near wall is fixed to
  the sensor and pins it at zero shift. A forward shift alone is not enough: in a turn the
  clusters beside the car move along x by yaw times their offset, and the clusters far ahead
  sideways out of the match radius, which biased the shift with the yaw rate; on a validation
  drive that acted like a 24 ms lag, on a test drive like 80 ms (speed error against
  acceleration).

Both return NaN when there is nothing to compare (first message, a size change, too few
clusters); the aligner counts a NaN signature and skips it, so a signature never stops a message.
Both assume a ground vehicle driving on a locally flat road.
"""

from dataclasses import dataclass
import math

import cv2
import numpy as np

from fusion_nodes.core.config import CameraModel


@dataclass(frozen=True)
class GroundPatchConfig:
    """Road patch in base_link (m) and its top-down resolution (m per pixel)."""

    x_near: float = 3.8
    x_far: float = 9.0
    half_width: float = 2.4
    resolution: float = 0.03

    def __post_init__(self) -> None:
        if not 0.0 < self.x_near < self.x_far or self.half_width <= 0.0 \
                or self.resolution <= 0.0:
            raise ValueError('ground patch needs 0 < x_near < x_far and positive half_width '
                             'and resolution')


class GroundPatchSpeed:
    """Forward displacement (m) of the camera between frames, from the road ahead of it."""

    def __init__(self, camera: CameraModel, cfg: GroundPatchConfig = GroundPatchConfig()
                 ) -> None:
        rows = cv2.getOptimalDFTSize(int(round((cfg.x_far - cfg.x_near) / cfg.resolution)))
        cols = cv2.getOptimalDFTSize(int(round(2.0 * cfg.half_width / cfg.resolution)))
        xs = cfg.x_near + np.arange(rows) * cfg.resolution
        ys = cfg.half_width - np.arange(cols) * cfg.resolution
        gx, gy = np.meshgrid(xs, ys, indexing='ij')  # rows run forward along x
        uv, depth = camera.project(np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1))
        if not np.all(depth > 0.0):
            raise ValueError('the ground patch lies behind the camera: check its calibration')
        self.image_size = (camera.width, camera.height)
        self._map_u = uv[:, 0].reshape(gx.shape).astype(np.float32)
        self._map_v = uv[:, 1].reshape(gx.shape).astype(np.float32)
        self._resolution = cfg.resolution
        self._window = cv2.createHanningWindow((cols, rows), cv2.CV_32F)
        self._previous: np.ndarray | None = None

    def reset(self) -> None:
        self._previous = None

    def update(self, grey: np.ndarray) -> float:
        """Displacement since the previous frame from a full-size grey image; NaN if none.

        The image must have the calibration's size (a resized stream needs a scaled
        calibration); any other size, or a non-2-D input, restarts the comparison.
        """
        if grey.ndim != 2 or (grey.shape[1], grey.shape[0]) != self.image_size:
            self._previous = None
            return math.nan
        patch = cv2.remap(np.asarray(grey, dtype=np.float32), self._map_u, self._map_v,
                          cv2.INTER_LINEAR)
        previous, self._previous = self._previous, patch
        if previous is None:
            return math.nan
        (_, rows), _ = cv2.phaseCorrelate(previous, patch, self._window)
        # Driving forward, the road moves towards the car: to smaller x, fewer rows.
        value = -rows * self._resolution
        return value if math.isfinite(value) else math.nan


@dataclass(frozen=True)
class ObstacleClusterConfig:
    """Clustering grid (m) and what counts as a compact, matchable obstacle."""

    half_extent: float = 30.0
    resolution: float = 0.2
    min_height: float = 0.3
    max_length: float = 6.0
    max_width: float = 4.0
    min_points: int = 5
    max_shift: float = 2.5
    shift_step: float = 0.05
    match_radius: float = 0.25
    # Of the smaller sweep's clusters; on validation drives, a shift that matched fewer was
    # wrong by over 0.5 m/s in most cases (every one of the 5 % such sweeps).
    min_match_share: float = 0.5
    max_clusters: int = 80
    # Yaw between sweeps (rad) tried for the first match: 0.04 rad in 0.1 s is 23 deg/s.
    max_yaw: float = 0.04
    yaw_step: float = 0.02
    refine_iterations: int = 4

    def __post_init__(self) -> None:
        if min(self.half_extent, self.resolution, self.max_shift, self.shift_step,
               self.match_radius, self.yaw_step) <= 0.0 or self.min_points < 1 \
                or self.max_clusters < 2 or self.max_yaw < 0.0 \
                or self.refine_iterations < 1 or not 0.0 <= self.min_match_share <= 1.0:
            raise ValueError('obstacle cluster sizes, counts and steps must be positive, '
                             'max_yaw non-negative and min_match_share in [0, 1]')


def obstacle_centroids(points_base: np.ndarray,
                       cfg: ObstacleClusterConfig = ObstacleClusterConfig()) -> np.ndarray:
    """(N, 2) x, y centroids of compact obstacle clusters in (M, >=3) base_link points."""
    pts = np.asarray(points_base, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f'expected (N, >=3) points, got {pts.shape}')
    half = cfg.half_extent
    keep = (np.all(np.isfinite(pts[:, :3]), axis=1) & (np.abs(pts[:, 0]) < half)
            & (np.abs(pts[:, 1]) < half) & (pts[:, 2] > cfg.min_height))
    xy = pts[keep, :2]
    n = int(math.ceil(2.0 * half / cfg.resolution))
    ix = np.minimum(((xy[:, 0] + half) / cfg.resolution).astype(np.int64), n - 1)
    iy = np.minimum(((xy[:, 1] + half) / cfg.resolution).astype(np.int64), n - 1)
    grid = np.zeros((n, n), np.uint8)
    grid[ix, iy] = 1
    # One dilation joins the returns of one object across the beams' gaps.
    grid = cv2.dilate(grid, np.ones((3, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(grid, connectivity=8)
    if count <= 1:
        return np.zeros((0, 2))
    label = labels[ix, iy]
    points = np.bincount(label, minlength=count)
    sums_x = np.bincount(label, weights=xy[:, 0], minlength=count)
    sums_y = np.bincount(label, weights=xy[:, 1], minlength=count)
    compact = ((stats[:, cv2.CC_STAT_HEIGHT] * cfg.resolution < cfg.max_length)
               & (stats[:, cv2.CC_STAT_WIDTH] * cfg.resolution < cfg.max_width)
               & (points >= cfg.min_points))
    compact[0] = False  # background
    centroids = np.stack([sums_x[compact], sums_y[compact]], axis=1) / points[compact, None]
    # Matching costs clusters squared: keep the nearest, which the lidar sees best.
    order = np.argsort(np.hypot(centroids[:, 0], centroids[:, 1]), kind='stable')
    return centroids[order[:cfg.max_clusters]]


def cluster_displacement(previous: np.ndarray, current: np.ndarray,
                         cfg: ObstacleClusterConfig = ObstacleClusterConfig()) -> float:
    """Forward ego displacement (m) between two sweeps' (N, 2) cluster centroids; NaN if none.

    The static world moves back by the displacement and turns by minus the yaw. The (yaw,
    shift) on a grid that matches most clusters within match_radius seeds a few rounds of
    nearest-cluster association and a least-squares rigid fit (2D Kabsch); the forward
    displacement is the fitted ego translation's x. NaN when fewer than min_match_share of the
    smaller set's clusters match.
    """
    if len(previous) < 2 or len(current) < 2:
        return math.nan
    previous = np.asarray(previous, dtype=np.float64)
    current = np.asarray(current, dtype=np.float64)
    need = max(2.0, cfg.min_match_share * min(len(previous), len(current)))
    matched, yaw, shift = _best_grid_motion(previous, current, cfg)
    if matched < need:
        return math.nan
    rotation = _rotation(yaw)
    translation = np.array([-shift, 0.0])
    for _ in range(cfg.refine_iterations):
        moved = previous @ rotation.T + translation
        dist = np.linalg.norm(moved[:, None, :] - current[None, :, :], axis=2)
        partner = dist.argmin(axis=1)
        pairs = dist[np.arange(len(previous)), partner] < 1.4 * cfg.match_radius
        if np.count_nonzero(pairs) < need:
            return math.nan
        rotation, translation = _rigid_fit(previous[pairs], current[partner[pairs]])
    # current = R p + t with R = rot(-yaw) and t = -R d: the ego moved d = -R^T t.
    return float(-(rotation.T @ translation)[0])


def _rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _best_grid_motion(previous: np.ndarray, current: np.ndarray,
                      cfg: ObstacleClusterConfig) -> tuple[int, float, float]:
    """(clusters matched, yaw, shift) of the grid motion that matches most previous clusters.

    Only cluster pairs whose sideways gap is under the radius can match at any shift, so the
    count runs over those pairs instead of every shift times every pair.
    """
    shifts = np.arange(-2.0 * cfg.shift_step, cfg.max_shift + 1e-9, cfg.shift_step)
    steps = int(round(cfg.max_yaw / cfg.yaw_step))
    radius2 = cfg.match_radius ** 2
    best = (0, 0.0, 0.0)
    # Zero first, so ties keep the straight motion.
    for yaw in sorted(np.arange(-steps, steps + 1) * cfg.yaw_step, key=abs):
        turned = previous @ _rotation(float(yaw)).T
        dx = turned[:, None, 0] - current[None, :, 0]
        dy2 = (turned[:, None, 1] - current[None, :, 1]) ** 2
        i, j = np.nonzero(dy2 < radius2)
        if i.size == 0:
            continue
        within = (dx[i, j][None, :] - shifts[:, None]) ** 2 + dy2[i, j][None, :] < radius2
        hit = np.zeros((shifts.size, len(previous)), bool)
        rows, cols = np.nonzero(within)
        hit[rows, i[cols]] = True
        counts = hit.sum(axis=1)
        k = int(np.argmax(counts))
        if counts[k] > best[0]:
            best = (int(counts[k]), float(yaw), float(shifts[k]))
    return best


def _rigid_fit(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R and translation t minimising sum |R source + t - target|^2 (2D Kabsch)."""
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    h = (source - source_mean).T @ (target - target_mean)
    rotation = _rotation(math.atan2(h[0, 1] - h[1, 0], h[0, 0] + h[1, 1]))
    return rotation, target_mean - rotation @ source_mean


class ObstacleDisplacement:
    """Per-sweep signature: keeps the last sweep's clusters and returns cluster_displacement."""

    def __init__(self, cfg: ObstacleClusterConfig = ObstacleClusterConfig()) -> None:
        self._cfg = cfg
        self._previous: np.ndarray | None = None

    def reset(self) -> None:
        self._previous = None

    def update(self, points_base: np.ndarray) -> float:
        """Displacement since the previous sweep from (N, >=3) base_link points; NaN if none."""
        current = obstacle_centroids(points_base, self._cfg)
        previous, self._previous = self._previous, current
        if previous is None:
            return math.nan
        return cluster_displacement(previous, current, self._cfg)
