"""Static world objects placed along the road, with class, box geometry, colour and material.

Identity needs geometry and colour together: red and blue cubes share size and material (so
lidar cannot tell them apart), while cars and pedestrians also come in red and blue (so colour
alone cannot either).
"""

from dataclasses import dataclass
import math

import numpy as np

from fusion_nodes.core.config import SEMANTIC_CLASSES
from fusion_nodes.sim.scenario import WorldParams
from fusion_nodes.sim.trajectory import Trajectory

# Lidar reflectivity in [0, 1] (905 nm): retroreflective cone collars are bright, cloth dull.
REFLECTIVITY = {
    'asphalt': 0.08, 'marking': 0.55, 'grass': 0.2,
    'car_paint': 0.32, 'cloth': 0.14, 'cone_plastic': 0.85, 'cube_plastic': 0.45,
}
CUBE_SIZE_M = 0.8
_RED = (200, 32, 30)
_BLUE = (30, 60, 205)
_CAR_COLOURS = (_RED, _BLUE, (205, 40, 45), (40, 70, 190), (225, 225, 220), (120, 122, 126),
                (25, 25, 30), (40, 120, 60), (220, 190, 40))
_CLOTH_COLOURS = (_RED, _BLUE, (180, 40, 40), (40, 50, 140), (60, 60, 60), (200, 180, 140),
                  (90, 140, 80), (230, 230, 230))
_CONE_ORANGE = (245, 110, 20)
# Keep-out half-width around the ego path so that the ego never drives through an object.
_EGO_CLEARANCE_M = 1.5
_LATERAL_MAX_M = 13.0


@dataclass(frozen=True)
class SimObject:
    """A box on the ground: centre (x, y) in odom, yaw, size (length, width, height)."""

    object_id: int
    class_name: str
    x: float
    y: float
    yaw: float
    size: tuple[float, float, float]
    colour: tuple[int, int, int]
    material: str

    @property
    def class_id(self) -> int:
        return SEMANTIC_CLASSES.index(self.class_name)

    def footprint(self) -> np.ndarray:
        """(4, 2) ground corners in odom, counter-clockwise."""
        return box_footprints(np.array([[self.x, self.y]]), np.array([self.yaw]),
                              np.array([self.size[:2]]))[0]


def box_footprints(centres: np.ndarray, yaws: np.ndarray, lw: np.ndarray) -> np.ndarray:
    """(N, 4, 2) counter-clockwise footprint corners of N boxes."""
    signs = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]]) * 0.5
    local = signs[None, :, :] * lw[:, None, :]
    c, s = np.cos(yaws)[:, None], np.sin(yaws)[:, None]
    x = centres[:, None, 0] + c * local[..., 0] - s * local[..., 1]
    y = centres[:, None, 1] + s * local[..., 0] + c * local[..., 1]
    return np.stack([x, y], axis=-1)


def _draw_object(class_name: str, rng: np.random.Generator,
                 lane_width: float) -> tuple[tuple[float, float, float], tuple[int, int, int],
                                             str, float, float]:
    """Size, colour, material, lateral offset from the ego path and yaw relative to the road."""
    side = 1.0 if rng.random() < 0.5 else -1.0
    if class_name == 'car':
        size = (rng.uniform(3.9, 4.8), rng.uniform(1.7, 1.95), rng.uniform(1.4, 1.7))
        colour = _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))]
        # Oncoming lane, parked on the right shoulder, or parked further out.
        spot = rng.integers(3)
        offset = (lane_width, -0.95 * lane_width, side * rng.uniform(8.0, 12.0))[spot]
        yaw = (math.pi if spot == 0 else 0.0) + rng.normal(0.0, 0.05)
        return size, colour, 'car_paint', offset + rng.normal(0.0, 0.2), yaw
    if class_name == 'pedestrian':
        size = (rng.uniform(0.35, 0.5), rng.uniform(0.45, 0.6), rng.uniform(1.6, 1.9))
        colour = _CLOTH_COLOURS[rng.integers(len(_CLOTH_COLOURS))]
        offset = side * rng.uniform(2.6, 9.0) if side < 0 else rng.uniform(6.0, 10.0)
        return size, colour, 'cloth', offset, rng.uniform(-math.pi, math.pi)
    if class_name == 'cone':
        size = (0.36, 0.36, rng.uniform(0.6, 0.75))
        offset = side * rng.uniform(2.0, 4.5) if side < 0 else rng.uniform(1.9, 6.0)
        return size, _CONE_ORANGE, 'cone_plastic', offset, rng.uniform(-math.pi, math.pi)
    colour = _RED if class_name == 'red_cube' else _BLUE
    offset = side * rng.uniform(2.2, _LATERAL_MAX_M)
    return ((CUBE_SIZE_M,) * 3, colour, 'cube_plastic', offset,
            rng.uniform(-math.pi, math.pi))


def place_objects(params: WorldParams, trajectory: Trajectory,
                  rng: np.random.Generator) -> list[SimObject]:
    """Objects every ~object_spacing_m of road, beside the ego lane, never overlapping."""
    names = [n for n in params.class_weights if params.class_weights[n] > 0.0]
    unknown = set(names) - set(SEMANTIC_CLASSES[1:])
    if unknown:
        raise ValueError(f'world.class_weights has unknown classes {sorted(unknown)}')
    weights = np.array([params.class_weights[n] for n in names], dtype=np.float64)
    weights /= weights.sum()
    placed: list[SimObject] = []
    centres: list[tuple[float, float, float]] = []
    s = 4.0
    end = trajectory.path_length - 2.0
    while s < end:
        s += 0.5 + rng.exponential(params.object_spacing_m - 0.5)
        class_name = names[rng.choice(len(names), p=weights)]
        size, colour, material, offset, rel_yaw = _draw_object(class_name, rng,
                                                               params.lane_width_m)
        radius = 0.5 * math.hypot(size[0], size[1])
        lateral = 0.5 * (abs(size[0] * math.sin(rel_yaw)) + abs(size[1] * math.cos(rel_yaw)))
        if abs(offset) < _EGO_CLEARANCE_M + lateral:
            offset = math.copysign(_EGO_CLEARANCE_M + lateral + 0.1, offset)
        px, py, heading = (float(v[0]) for v in trajectory.at_arc(np.array([s])))
        x = px - offset * math.sin(heading)
        y = py + offset * math.cos(heading)
        if _too_close(x, y, radius, centres) or _near_path(x, y, lateral, s, trajectory):
            continue
        centres.append((x, y, radius))
        placed.append(SimObject(len(placed), class_name, x, y, heading + rel_yaw,
                                tuple(float(v) for v in size), tuple(int(v) for v in colour),
                                material))
    return placed


def _too_close(x: float, y: float, radius: float,
               centres: list[tuple[float, float, float]]) -> bool:
    for cx, cy, cr in centres[-60:]:
        if math.hypot(x - cx, y - cy) < radius + cr + 0.3:
            return True
    return False


def _near_path(x: float, y: float, lateral: float, s: float, trajectory: Trajectory) -> bool:
    """True when a curve brings another part of the ego path within reach of the object."""
    lo = max(0.0, s - 60.0)
    arcs = np.arange(lo, min(trajectory.path_length, s + 60.0), 0.5)
    px, py, _ = trajectory.at_arc(arcs)
    return bool(np.min(np.hypot(px - x, py - y)) < _EGO_CLEARANCE_M + lateral)


@dataclass(frozen=True)
class ObjectArrays:
    """The objects as arrays, for vectorised rendering, ray casting and rasterising."""

    centres: np.ndarray
    yaws: np.ndarray
    sizes: np.ndarray
    colours: np.ndarray
    reflectivity: np.ndarray
    class_ids: np.ndarray

    @classmethod
    def from_objects(cls, objects: list[SimObject]) -> 'ObjectArrays':
        return cls(
            centres=np.array([[o.x, o.y] for o in objects], dtype=np.float64).reshape(-1, 2),
            yaws=np.array([o.yaw for o in objects], dtype=np.float64),
            sizes=np.array([o.size for o in objects], dtype=np.float64).reshape(-1, 3),
            colours=np.array([o.colour for o in objects], dtype=np.float64).reshape(-1, 3),
            reflectivity=np.array([REFLECTIVITY[o.material] for o in objects]),
            class_ids=np.array([o.class_id for o in objects], dtype=np.uint8))

    def near(self, x: float, y: float, radius: float) -> np.ndarray:
        """Indices of objects whose centre lies within radius of (x, y)."""
        d = np.hypot(self.centres[:, 0] - x, self.centres[:, 1] - y)
        return np.nonzero(d < radius)[0]
