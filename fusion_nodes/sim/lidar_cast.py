"""Spinning-lidar ray casting against the ground plane and object boxes, vectorised in numpy.

A sweep takes one scan period; column j fires at start + j / steps of it, from the ego pose at
that instant, and its points are in the lidar frame of that instant (as a real driver gives
them, not motion-compensated). Each point's ``time`` field is that offset in seconds.
"""

import math

import numpy as np

from fusion_nodes.core.config import LidarModel
from fusion_nodes.sim.ground import GROUND_MATERIALS, GroundMap
from fusion_nodes.sim.objects import ObjectArrays, REFLECTIVITY
from fusion_nodes.sim.trajectory import Trajectory

POINT_DTYPE = np.dtype({
    'names': ['x', 'y', 'z', 'intensity', 'ring', 'time'],
    'formats': ['<f4', '<f4', '<f4', '<f4', '<u2', '<f4'],
    'offsets': [0, 4, 8, 12, 16, 20],
    'itemsize': 24,
})
_GROUND_REFLECTIVITY = np.array([REFLECTIVITY[m] for m in GROUND_MATERIALS])
_INTENSITY_NOISE = 0.02


class LidarCaster:
    """Casts full sweeps of one LidarModel through the world."""

    def __init__(self, model: LidarModel, scan_period_ns: int, range_noise_m: float) -> None:
        self.model = model
        self.scan_period_ns = scan_period_ns
        self.range_noise_m = range_noise_m
        self._elev = model.elevations()
        self._az = 2.0 * np.pi * np.arange(model.azimuth_steps) / model.azimuth_steps
        self._col_offset_ns = (np.arange(model.azimuth_steps, dtype=np.int64) * scan_period_ns
                               // model.azimuth_steps)
        self._origin_z = model.translation[2]

    def cast(self, t_ns: int, trajectory: Trajectory, objects: ObjectArrays, ground: GroundMap,
             rng: np.random.Generator) -> np.ndarray:
        """One sweep starting at true time t_ns as POINT_DTYPE points (no-return rays dropped)."""
        model = self.model
        poses = trajectory.states(t_ns + self._col_offset_ns)
        tx, ty, _ = model.translation
        cos_yaw, sin_yaw = np.cos(poses['yaw']), np.sin(poses['yaw'])
        ox = poses['x'] + cos_yaw * tx - sin_yaw * ty
        oy = poses['y'] + sin_yaw * tx + cos_yaw * ty
        world_az = poses['yaw'] + self._az
        cos_el, sin_el = np.cos(self._elev), np.sin(self._elev)
        # Direction of ray (beam b, column j) in odom.
        dx = cos_el[:, None] * np.cos(world_az)[None, :]
        dy = cos_el[:, None] * np.sin(world_az)[None, :]
        dz = np.broadcast_to(sin_el[:, None], dx.shape)

        shape = (model.beams, model.azimuth_steps)
        rng_ground = np.where(sin_el < -1e-6, self._origin_z / np.maximum(-sin_el, 1e-6),
                              np.inf)
        ranges = np.broadcast_to(rng_ground[:, None], shape).copy()
        cos_incidence = np.broadcast_to(np.abs(sin_el)[:, None], shape).copy()
        hit_object = np.full(shape, -1, dtype=np.int64)

        mid = model.azimuth_steps // 2
        candidates = objects.near(float(ox[mid]), float(oy[mid]), model.max_range + 4.0)
        for k in candidates:
            self._hit_box(k, objects, ox, oy, dx, dy, dz, world_az, ranges, cos_incidence,
                          hit_object)

        valid = ranges <= model.max_range
        # Firing order: column by column, each column bottom beam to top.
        j_idx, b_idx = np.nonzero(valid.T)
        r = ranges[b_idx, j_idx]
        obj = hit_object[b_idx, j_idx]
        on_object = obj >= 0
        refl = np.empty(r.size)
        refl[on_object] = objects.reflectivity[obj[on_object]]
        on_ground = ~on_object
        gx = ox[j_idx[on_ground]] + r[on_ground] * dx[b_idx[on_ground], j_idx[on_ground]]
        gy = oy[j_idx[on_ground]] + r[on_ground] * dy[b_idx[on_ground], j_idx[on_ground]]
        refl[on_ground] = _GROUND_REFLECTIVITY[ground.material_at(gx, gy)]
        intensity = refl * (0.55 + 0.45 * cos_incidence[b_idx, j_idx])
        intensity += rng.normal(0.0, _INTENSITY_NOISE, r.size)
        r = r + rng.normal(0.0, self.range_noise_m, r.size)

        out = np.zeros(r.size, dtype=POINT_DTYPE)
        horizontal = r * cos_el[b_idx]
        out['x'] = horizontal * np.cos(self._az[j_idx])
        out['y'] = horizontal * np.sin(self._az[j_idx])
        out['z'] = r * sin_el[b_idx]
        # Drivers report 8-bit reflectivity; keep that resolution (it also compresses well).
        out['intensity'] = np.round(np.clip(intensity, 0.0, 1.0) * 255.0) / 255.0
        out['ring'] = b_idx
        out['time'] = self._col_offset_ns[j_idx] / 1e9
        return out

    def _hit_box(self, k: int, objects: ObjectArrays, ox: np.ndarray, oy: np.ndarray,
                 dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, world_az: np.ndarray,
                 ranges: np.ndarray, cos_incidence: np.ndarray, hit_object: np.ndarray) -> None:
        """Slab test of box k against the columns whose azimuth can reach it."""
        cx, cy = objects.centres[k]
        length, width, height = objects.sizes[k]
        yaw = objects.yaws[k]
        # Columns whose azimuth (seen from the first and last origin) spans the box, + margin.
        half_diag = 0.5 * math.hypot(length, width)
        rel = np.arctan2(cy - oy, cx - ox)
        dist = np.hypot(cx - ox, cy - oy)
        if dist.min() > self.model.max_range + half_diag:
            return
        half_angle = np.arcsin(np.clip(half_diag / np.maximum(dist, 1e-3), 0.0, 1.0)) + 0.01
        diff = np.angle(np.exp(1j * (world_az - rel)))
        cols = np.nonzero(np.abs(diff) <= half_angle)[0]
        if cols.size == 0:
            return
        c, s = math.cos(yaw), math.sin(yaw)
        # Ray origins and directions in the box frame (box centred, axes along its sides).
        px = ox[cols] - cx
        py = oy[cols] - cy
        lox = (c * px + s * py)[None, :]
        loy = (-s * px + c * py)[None, :]
        loz = self._origin_z
        ddx = dx[:, cols]
        ddy = dy[:, cols]
        ldx = c * ddx + s * ddy
        ldy = -s * ddx + c * ddy
        ldz = dz[:, cols]
        with np.errstate(divide='ignore', invalid='ignore'):
            t_near = np.full(ldx.shape, -np.inf)
            t_far = np.full(ldx.shape, np.inf)
            axis = np.zeros(ldx.shape, dtype=np.int8)
            for a, (o, d, lo, hi) in enumerate((
                    (lox, ldx, -0.5 * length, 0.5 * length),
                    (loy, ldy, -0.5 * width, 0.5 * width),
                    (loz, ldz, 0.0, height))):
                t1 = (lo - o) / d
                t2 = (hi - o) / d
                parallel = np.abs(d) < 1e-12
                inside = (o >= lo) & (o <= hi)
                t1 = np.where(parallel, np.where(inside, -np.inf, np.inf), t1)
                t2 = np.where(parallel, np.where(inside, np.inf, -np.inf), t2)
                t_min = np.minimum(t1, t2)
                t_max = np.maximum(t1, t2)
                later = t_min > t_near
                axis = np.where(later, a, axis)
                t_near = np.maximum(t_near, t_min)
                t_far = np.minimum(t_far, t_max)
        hit = (t_near <= t_far) & (t_near > 0.0)
        sub = ranges[:, cols]
        closer = hit & (t_near < sub)
        if not closer.any():
            return
        ranges[:, cols] = np.where(closer, t_near, sub)
        hit_object[:, cols] = np.where(closer, k, hit_object[:, cols])
        # |cos| of incidence: the ray component along the normal of the face it entered.
        normal_dot = np.abs(np.choose(axis, [ldx, ldy, ldz]))
        cos_incidence[:, cols] = np.where(closer, normal_dot, cos_incidence[:, cols])
