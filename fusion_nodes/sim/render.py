"""Pinhole camera rendering with OpenCV: textured ground, sky, shaded boxes far to near.

The camera is rigid on a flat-driving ego, so every pixel's ground point in base_link is fixed:
it is computed once, and a frame only moves those points into odom and samples the ground map
with cv2.remap. Boxes are drawn object by object from far to near (painter's algorithm); the
visible faces of one convex box never overlap, so this gives correct occlusion between
non-intersecting objects.
"""

import math

import cv2
import numpy as np

from fusion_nodes.core.config import CameraModel
from fusion_nodes.sim.ground import GroundMap
from fusion_nodes.sim.objects import box_footprints, ObjectArrays

_FOG_M = 70.0
_MAX_GROUND_M = 400.0
_HAZE = np.array([188.0, 198.0, 210.0], dtype=np.float32)
_SKY_TOP = np.array([95.0, 140.0, 205.0], dtype=np.float32)
_SUN = np.array([math.cos(0.6) * math.cos(0.9), math.sin(0.6) * math.cos(0.9), math.sin(0.9)])
_AMBIENT = 0.45
_NEAR_M = 0.05
_VIEW_RANGE_M = 90.0
_NOISE_BANK = 8
# Side faces between footprint corners i and i + 1, then the top face.
_FACES = ((0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7), (4, 5, 6, 7))


def box_corners_base(arrays: ObjectArrays, idx: np.ndarray, x: float, y: float,
                     yaw: float) -> np.ndarray:
    """(N, 8, 3) box corners in base_link: footprint at z = 0, then the same at the top."""
    foot = box_footprints(arrays.centres[idx], arrays.yaws[idx], arrays.sizes[idx, :2])
    c, s = math.cos(yaw), math.sin(yaw)
    dx, dy = foot[..., 0] - x, foot[..., 1] - y
    xb = c * dx + s * dy
    yb = -s * dx + c * dy
    n = idx.size
    corners = np.zeros((n, 8, 3))
    corners[:, :4, 0] = xb
    corners[:, :4, 1] = yb
    corners[:, 4:, 0] = xb
    corners[:, 4:, 1] = yb
    corners[:, 4:, 2] = arrays.sizes[idx, 2][:, None]
    return corners


def _clip_near(poly: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clip of an optical-frame polygon against the plane z = _NEAR_M."""
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        a_in, b_in = a[2] >= _NEAR_M, b[2] >= _NEAR_M
        if a_in:
            out.append(a)
        if a_in != b_in:
            t = (_NEAR_M - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out).reshape(-1, 3)


class CameraRenderer:
    """Renders RGB frames of the world for one CameraModel."""

    def __init__(self, camera: CameraModel, ground: GroundMap, noise_std: float,
                 rng: np.random.Generator) -> None:
        self.camera = camera
        self.ground = ground
        self._rot, self._trans = camera.base_to_optical()
        self._origin = np.asarray(camera.translation, dtype=np.float64)
        h, w = camera.height, camera.width
        u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        rays = np.stack([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy,
                         np.ones_like(u)], axis=-1) @ self._rot
        down = rays[..., 2] < -1e-9
        t = np.where(down, -self._origin[2] / np.where(down, rays[..., 2], -1.0), np.inf)
        dist = t * np.linalg.norm(rays, axis=-1)
        ground = down & (dist < _MAX_GROUND_M)
        rows = np.nonzero(ground.any(axis=1))[0]
        self._row0 = int(rows[0]) if rows.size else h
        sl = slice(self._row0, h)
        self._gx = (self._origin[0] + t[sl] * rays[sl][..., 0]).astype(np.float32)
        self._gy = (self._origin[1] + t[sl] * rays[sl][..., 1]).astype(np.float32)
        self._gx[~ground[sl]] = 0.0
        self._gy[~ground[sl]] = 0.0
        weight = np.where(ground[sl], np.exp(-np.minimum(dist[sl], _MAX_GROUND_M) / _FOG_M),
                          0.0).astype(np.float32)
        self._weight = weight[..., None]
        # Sky: a vertical gradient from deep blue to the haze colour at the horizon.
        horizon = max(1.0, float(self._row0))
        frac = np.clip(np.arange(h, dtype=np.float32) / horizon, 0.0, 1.0)[:, None]
        sky_rows = _SKY_TOP * (1.0 - frac) + _HAZE * frac
        self._sky = np.repeat(sky_rows[:, None, :], w, axis=1).astype(np.uint8)
        self._haze_part = ((1.0 - weight)[..., None] * _HAZE).astype(np.float32)
        self._noise = rng.normal(0.0, noise_std, (_NOISE_BANK, h, w, 3)).clip(
            -40, 40).astype(np.int16)

    def render(self, x: float, y: float, yaw: float, objects: ObjectArrays,
               frame_index: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB seen from ego pose (x, y, yaw); frame_index picks sensor noise."""
        img = self._sky.copy()
        c, s = math.cos(yaw), math.sin(yaw)
        res = self.ground.resolution
        map_x = (x + c * self._gx - s * self._gy - self.ground.x0) / res
        map_y = (y + s * self._gx + c * self._gy - self.ground.y0) / res
        tex = cv2.remap(self.ground.colour, map_x.astype(np.float32),
                        map_y.astype(np.float32), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
        img[self._row0:] = (tex * self._weight + self._haze_part).astype(np.uint8)
        self._draw_boxes(img, x, y, yaw, objects)
        noisy = img.astype(np.int16)
        noisy += self._noise[frame_index % _NOISE_BANK]
        return np.clip(noisy, 0, 255).astype(np.uint8)

    def _draw_boxes(self, img: np.ndarray, x: float, y: float, yaw: float,
                    objects: ObjectArrays) -> None:
        idx = objects.near(x, y, _VIEW_RANGE_M)
        if idx.size == 0:
            return
        corners = box_corners_base(objects, idx, x, y, yaw)
        optical = corners @ self._rot.T + self._trans
        in_front = (optical[..., 2] > _NEAR_M).any(axis=1)
        centre = corners.mean(axis=1)
        dist = np.hypot(centre[:, 0] - self._origin[0], centre[:, 1] - self._origin[1])
        order = [k for k in np.argsort(-dist, kind='stable') if in_front[k]]
        sun_base = np.array([math.cos(yaw) * _SUN[0] + math.sin(yaw) * _SUN[1],
                             -math.sin(yaw) * _SUN[0] + math.cos(yaw) * _SUN[1], _SUN[2]])
        cam = self.camera
        for k in order:
            box = corners[k]
            colour = objects.colours[idx[k]]
            for face in _FACES:
                pts = box[list(face)]
                normal = np.cross(pts[1] - pts[0], pts[3] - pts[0])
                normal /= np.linalg.norm(normal)
                if normal @ (self._origin - pts[0]) <= 0.0:
                    continue  # back face
                poly = _clip_near(optical[k][list(face)])
                if len(poly) < 3:
                    continue
                uv = np.stack([cam.fx * poly[:, 0] / poly[:, 2] + cam.cx,
                               cam.fy * poly[:, 1] / poly[:, 2] + cam.cy], axis=1)
                if (uv[:, 0].max() < 0 or uv[:, 0].min() >= cam.width or uv[:, 1].max() < 0
                        or uv[:, 1].min() >= cam.height):
                    continue
                shade = _AMBIENT + (1.0 - _AMBIENT) * max(0.0, float(normal @ sun_base))
                fill = tuple(float(v) for v in np.clip(colour * shade, 0, 255))
                pix = np.round(np.clip(uv, -1e5, 1e5) * 16.0).astype(np.int32)
                cv2.fillConvexPoly(img, pix, fill, cv2.LINE_AA, 4)
