"""Sensor failures applied to clean camera frames and lidar sweeps.

Frozen frames and scans are not here: the world replays the data of the window's start, which
keeps them byte-identical as a stuck driver's would be.
"""

import math

import cv2
import numpy as np

from fusion_nodes.sim.lidar_cast import POINT_DTYPE
from fusion_nodes.sim.scenario import FailureWindow


def camera_failure(img: np.ndarray, window: FailureWindow, seed: int,
                   t_ns: int) -> np.ndarray:
    """The frame a failed camera delivers instead of the clean (H, W, 3) uint8 img."""
    kind, params = window.kind, window.params
    noise_rng = np.random.default_rng([seed, 51, t_ns])
    # Features fixed for the whole window (sun position, dirt blobs) seed on its start.
    window_rng = np.random.default_rng([seed, 53, round(window.start_s * 1e3)])
    if kind == 'blackout':
        dark = img.astype(np.float32) * float(params.get('residual', 0.02))
        dark += noise_rng.normal(0.0, 1.5, img.shape)
        return np.clip(dark, 0, 255).astype(np.uint8)
    if kind == 'glare':
        h, w = img.shape[:2]
        u0 = window_rng.uniform(0.2, 0.8) * w
        v0 = window_rng.uniform(0.05, 0.4) * h
        vv, uu = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((uu - u0) ** 2 + (vv - v0) ** 2) / (0.3 * w) ** 2
        bloom = 255.0 * np.exp(-r2)[..., None]
        streak = 120.0 * np.exp(-((uu - u0) / 6.0) ** 2)[..., None]
        out = img.astype(np.float32) * float(params.get('gain', 2.5)) + bloom + streak
        return np.clip(out, 0, 255).astype(np.uint8)
    if kind == 'blur':
        k = int(params.get('kernel', 21)) | 1
        return cv2.GaussianBlur(img, (k, k), 0)
    if kind == 'dirt':
        return _dirt(img, window_rng, int(params.get('blobs', 6)))
    if kind == 'channel_swap':
        # A driver that labels bgr8 data rgb8: a sharp, well-exposed image in wrong colours.
        return np.ascontiguousarray(img[..., ::-1])
    if kind == 'upside_down':
        # A camera remounted rotated by 180 degrees: sharp, well exposed, right colours.
        return np.ascontiguousarray(img[::-1, ::-1])
    raise ValueError(f'camera failure {kind!r} is not applied to frames')


def _dirt(img: np.ndarray, rng: np.random.Generator, blobs: int) -> np.ndarray:
    """Mud splashes: soft dark-brown blobs fixed on the lens for the window."""
    h, w = img.shape[:2]
    alpha = np.zeros((h, w), dtype=np.float32)
    for _ in range(blobs):
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (int(rng.uniform(0.05, 0.14) * w), int(rng.uniform(0.04, 0.12) * h))
        cv2.ellipse(alpha, centre, axes, float(rng.uniform(0, 180)), 0, 360,
                    float(rng.uniform(0.75, 0.97)), -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 9.0)[..., None]
    mud = np.array([62.0, 48.0, 34.0], dtype=np.float32)
    return np.clip(img * (1.0 - alpha) + mud * alpha, 0, 255).astype(np.uint8)


def lidar_failure(points: np.ndarray, window: FailureWindow, seed: int, t_ns: int,
                  elevations: np.ndarray, max_range: float, scan_period_s: float) -> np.ndarray:
    """The sweep a failed lidar delivers instead of the clean POINT_DTYPE points."""
    kind, params = window.kind, window.params
    rng = np.random.default_rng([seed, 61, t_ns])
    if kind == 'dropout':
        keep = rng.random(points.size) < float(params.get('keep_fraction', 0.003))
        return points[keep]
    if kind == 'sparse':
        stride = int(params.get('beam_stride', 4))
        keep = (points['ring'] % stride == 0) & (rng.random(points.size) >= 0.3)
        return points[keep]
    if kind == 'rain':
        return _rain(points, rng, params, elevations, max_range, scan_period_s)
    if kind == 'crosstalk':
        # Another lidar's pulses taken for echoes: ghost returns at any range, all around.
        n = int(params.get('ghost_points', 6000))
        ghosts = _spurious_returns(rng, rng.uniform(1.0, max_range, n), elevations,
                                   scan_period_s, intensity=(0.02, 0.4))
        return _merged_by_time(points, ghosts)
    if kind == 'yaw_misaligned':
        # A sensor turned on a loose mount: every return kept, the whole scan rotated.
        yaw = math.radians(float(params.get('yaw_deg', 20.0)))
        turned = points.copy()
        turned['x'] = points['x'] * math.cos(yaw) - points['y'] * math.sin(yaw)
        turned['y'] = points['x'] * math.sin(yaw) + points['y'] * math.cos(yaw)
        return turned
    raise ValueError(f'lidar failure {kind!r} is not applied to sweeps')


def _rain(points: np.ndarray, rng: np.random.Generator, params, elevations: np.ndarray,
          max_range: float, scan_period_s: float) -> np.ndarray:
    """Drops hit close to the sensor, far returns fade, and range noise grows."""
    xyz = np.stack([points['x'], points['y'], points['z']], axis=1).astype(np.float64)
    r = np.linalg.norm(xyz, axis=1)
    far_loss = float(params.get('far_loss', 0.5))
    kept = points[rng.random(points.size) >= far_loss * np.clip(r / max_range, 0, 1) * 2.0]
    kept = kept.copy()
    scale = 1.0 + rng.normal(0.0, 0.01, kept.size)
    for f in ('x', 'y', 'z'):
        kept[f] = kept[f] * scale
    kept['intensity'] *= 0.7
    n = int(params.get('clutter_points', 2500))
    clutter = _spurious_returns(rng, 0.4 + rng.exponential(2.0, n), elevations, scan_period_s,
                                intensity=(0.0, 0.08))
    return _merged_by_time(kept, clutter)


def _spurious_returns(rng: np.random.Generator, ranges: np.ndarray, elevations: np.ndarray,
                      scan_period_s: float, intensity: tuple[float, float]) -> np.ndarray:
    """Returns at the given ranges, random azimuths and beams, timed by azimuth."""
    n = ranges.size
    points = np.zeros(n, dtype=POINT_DTYPE)
    az = rng.uniform(0.0, 2.0 * math.pi, n)
    ring = rng.integers(0, elevations.size, n)
    el = elevations[ring]
    points['x'] = ranges * np.cos(el) * np.cos(az)
    points['y'] = ranges * np.cos(el) * np.sin(az)
    points['z'] = ranges * np.sin(el)
    points['intensity'] = rng.uniform(intensity[0], intensity[1], n)
    points['ring'] = ring
    points['time'] = az / (2.0 * math.pi) * scan_period_s
    return points


def _merged_by_time(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # np.concatenate would drop the padding byte layout; keep the wire dtype explicitly.
    merged = np.empty(a.size + b.size, dtype=POINT_DTYPE)
    merged[:a.size] = a
    merged[a.size:] = b
    return merged[np.argsort(merged['time'], kind='stable')]
