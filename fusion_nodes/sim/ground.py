"""Top-down ground map in odom: grass, asphalt with lane markings, crossroads where the ego stops.

One raster serves the camera (colour, looked up per pixel with cv2.remap) and the lidar
(material, hence intensity). Its speckle texture is fixed in the world, so camera frame
differences follow ego motion.
"""

import math

import cv2
import numpy as np

from fusion_nodes.sim.scenario import WorldParams
from fusion_nodes.sim.trajectory import DS_M, Trajectory

GRASS, ASPHALT, MARKING = 0, 1, 2
GROUND_MATERIALS = ('grass', 'asphalt', 'marking')
_BASE_COLOUR = np.array([[72, 112, 52], [88, 88, 92], [228, 228, 222]], dtype=np.float32)
_SPECKLE = np.array([14.0, 7.0, 4.0], dtype=np.float32)
_MARGIN_M = 70.0
_MAX_PIXELS = 3000
_DASH_M, _GAP_M = 3.0, 6.0
_LINE_M = 0.15


class GroundMap:
    """Material and colour rasters of the ground around the whole drive."""

    def __init__(self, params: WorldParams, trajectory: Trajectory,
                 rng: np.random.Generator) -> None:
        lane = params.lane_width_m
        arcs = np.arange(0.0, trajectory.path_length, 0.5)
        px, py, heading = trajectory.at_arc(arcs)
        self.x0 = float(px.min()) - _MARGIN_M
        self.y0 = float(py.min()) - _MARGIN_M
        extent = max(px.max() - px.min(), py.max() - py.min()) + 2.0 * _MARGIN_M
        # Finer is sharper lane markings; the cap bounds memory on very long drives.
        self.resolution = max(0.1, float(extent) / _MAX_PIXELS)
        width = int(math.ceil((px.max() - self.x0 + _MARGIN_M) / self.resolution))
        height = int(math.ceil((py.max() - self.y0 + _MARGIN_M) / self.resolution))
        classes = np.full((height, width), GRASS, dtype=np.uint8)

        nx, ny = -np.sin(heading), np.cos(heading)

        def polyline(offset: float, mask: np.ndarray | None = None) -> list[np.ndarray]:
            pts = self._fixed(px + offset * nx, py + offset * ny)
            if mask is None:
                return [pts]
            runs = np.split(np.arange(arcs.size), np.nonzero(np.diff(mask.astype(int)))[0] + 1)
            return [pts[r] for r in runs if r.size > 1 and mask[r[0]]]

        def thick(metres: float) -> int:
            return max(1, int(round(metres / self.resolution)))

        centre = 0.5 * lane
        shift = 4
        cv2.polylines(classes, polyline(centre), False, ASPHALT, thick(2.0 * lane), cv2.LINE_8,
                      shift)
        for s_stop in trajectory.stop_arcs:
            self._crossroad(classes, trajectory, s_stop, lane, thick)
        for offset in (centre - lane, centre + lane):
            cv2.polylines(classes, polyline(offset), False, MARKING, thick(_LINE_M),
                          cv2.LINE_8, shift)
        dashes = np.mod(arcs, _DASH_M + _GAP_M) < _DASH_M
        cv2.polylines(classes, polyline(centre, dashes), False, MARKING, thick(_LINE_M),
                      cv2.LINE_8, shift)
        self.classes = classes
        self.colour = self._texture(classes, rng)

    def _fixed(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Sub-pixel integer points (4 fractional bits) for cv2 drawing."""
        col = (x - self.x0) / self.resolution * 16.0
        row = (y - self.y0) / self.resolution * 16.0
        return np.stack([col, row], axis=1).round().astype(np.int32)

    def _crossroad(self, classes: np.ndarray, trajectory: Trajectory, s_stop: float,
                   lane: float, thick) -> None:
        """A side road crossing where the ego stopped, and a stop line before it."""
        s_cross = min(s_stop + 2.0 + lane, trajectory.path_length - DS_M)
        cx, cy, h = (float(v[0]) for v in trajectory.at_arc(np.array([s_cross])))
        cx -= 0.5 * lane * math.sin(h)
        cy += 0.5 * lane * math.cos(h)
        ends = np.array([[cx - 60.0 * math.sin(h), cy + 60.0 * math.cos(h)],
                         [cx + 60.0 * math.sin(h), cy - 60.0 * math.cos(h)]])
        pts = self._fixed(ends[:, 0], ends[:, 1])
        cv2.polylines(classes, [pts], False, ASPHALT, thick(2.0 * lane), cv2.LINE_8, 4)
        sx, sy, sh = (float(v[0]) for v in trajectory.at_arc(np.array([s_stop + 0.8])))
        line = np.array([[sx + 0.5 * lane * math.sin(sh), sy - 0.5 * lane * math.cos(sh)],
                         [sx - 0.5 * lane * math.sin(sh), sy + 0.5 * lane * math.cos(sh)]])
        cv2.polylines(classes, [self._fixed(line[:, 0], line[:, 1])], False, MARKING,
                      thick(0.4), cv2.LINE_8, 4)

    @staticmethod
    def _texture(classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Per-material colour, fixed speckle and slow blotches (worn asphalt, patchy grass)."""
        height, width = classes.shape
        blotch_small = rng.normal(0.0, 1.0, (max(2, height // 40), max(2, width // 40)))
        blotch = cv2.resize(blotch_small.astype(np.float32), (width, height),
                            interpolation=cv2.INTER_CUBIC)
        blotch = 1.0 + 0.08 * blotch
        speckle = rng.integers(-128, 128, (height, width), dtype=np.int16).astype(np.float32)
        speckle *= (_SPECKLE / 128.0)[classes]
        out = np.empty((height, width, 3), dtype=np.uint8)
        # Channel by channel keeps the float temporaries to one plane of the map.
        for c in range(3):
            plane = _BASE_COLOUR[:, c][classes] * blotch + speckle
            out[..., c] = np.clip(plane, 0.0, 255.0)
        return out

    def material_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Ground material index (GRASS, ASPHALT, MARKING) at odom points; grass off the map."""
        col = np.floor((x - self.x0) / self.resolution).astype(np.int64)
        row = np.floor((y - self.y0) / self.resolution).astype(np.int64)
        h, w = self.classes.shape
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        out = np.full(col.shape, GRASS, dtype=np.uint8)
        out[inside] = self.classes[row[inside], col[inside]]
        return out
