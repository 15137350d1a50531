"""Scenes for the mount checks: what a moving lidar and camera see, mounted right or not."""

import numpy as np

from fusion_nodes.core.config import PillarConfig, rotation_rpy
from fusion_nodes.core.lidar import pillarize

PILLARS = PillarConfig()


def scene(seed: int = 0) -> np.ndarray:
    """World points (N, 4): a few hundred poles and boxes 1 m tall, around a 200 m road."""
    rng = np.random.default_rng(seed)
    centres = np.column_stack([rng.uniform(-20, 200, 400), rng.uniform(-16, 16, 400)])
    centres = centres[np.abs(centres[:, 1]) > 2.0]
    offsets = rng.uniform(-0.3, 0.3, (len(centres), 6, 2))
    xy = (centres[:, None, :] + offsets).reshape(-1, 2)
    z = rng.uniform(0.4, 1.5, len(xy))
    return np.column_stack([xy, z, np.full(len(xy), 0.5)]).astype(np.float32)


def seen_from(world: np.ndarray, x: float, yaw_deg: float = 0.0,
              mount_yaw_deg: float = 0.0, y: float = 0.0) -> np.ndarray:
    """World points in base_link of a vehicle at (x, y, yaw), turned by mount_yaw_deg."""
    base = world.copy()
    base[:, 0] -= x
    base[:, 1] -= y
    base[:, :3] = base[:, :3] @ rotation_rpy(0.0, 0.0, np.radians(-yaw_deg)).T
    if mount_yaw_deg:
        base[:, :3] = base[:, :3] @ rotation_rpy(0.0, 0.0, np.radians(mount_yaw_deg)).T
    return base


def occupancy(world: np.ndarray, x: float, yaw_deg: float = 0.0,
              mount_yaw_deg: float = 0.0, y: float = 0.0) -> np.ndarray:
    """The occupancy channel of the pillars such a lidar gives."""
    return pillarize(seen_from(world, x, yaw_deg, mount_yaw_deg, y), PILLARS)[0]


def road_frame(t: float, speed: float = 8.0, upside_down: bool = False) -> np.ndarray:
    """A 96x128 grey frame: plain sky above the horizon, road stripes below it whose image
    rows follow a flat ground seen from 1.5 m up (focal 100 px), driven at speed."""
    rows = np.arange(96) - 39.5
    frame = np.full((96, 128), 0.7, np.float32)
    below = rows > 1.0
    distance = 1.5 * 100.0 / rows[below]          # metres to the ground seen at each row
    phase = (distance + speed * t) * 2.0 * np.pi / 1.5
    columns = np.arange(128)[None, :]
    texture = 0.5 + 0.25 * np.sin(phase)[:, None] * np.cos(columns * 0.3)
    frame[below] = texture
    return frame[::-1, ::-1].copy() if upside_down else frame
