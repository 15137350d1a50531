"""Camera-lidar yaw check: do the two single-sensor BEV heads see the objects at one bearing?

A lidar turned on its mount still sends a dense, sharp, plausible scan, so its own health
features, its novelty score and the learned gate all pass it (README, held-out kinds), and
the lidar node's motion check needs 1.5-2 s of driving to trip. Against the camera it shows
at once: the camera places each object at its bearing through its calibration, the turned
lidar at that bearing plus the mount's yaw. This compares the object probability (1 - p(free))
of the two auxiliary heads in the camera footprint, with the lidar map turned about the base
origin by each angle of a search: a lidar whose map agrees with the camera much better turned
than as mounted is dropped (NetworkConfig.lidar_yaw_veto).

The idea is the one of online camera-lidar calibration checks (Levinson and Thrun, RSS
2013: score the current extrinsic against perturbed ones), on the network's own BEV maps.
Ops: AveragePool, Conv, Softmax, Slice, Sub, GridSample, Reshape, Mul, ReduceMean, ReduceMax,
Sqrt, Div.
"""

import math

import numpy as np
import torch
from torch import nn

from fusion_nodes.core.config import BevGrid

# Cells pooled per side before the search (64x64 -> 32x32): a fourth of the GridSample work,
# and 20 degrees at 10 m is still 3.5 m, two pooled cells.
YAW_POOL = 2
# Keeps the normalised correlation finite where a map is empty.
_EPS = 1e-6


def yaw_angles_deg(search_deg: float, step_deg: float) -> np.ndarray:
    """Search angles from -search to +search in steps, 0 included."""
    if not 0.0 < step_deg <= search_deg:
        raise ValueError(f'need 0 < step <= search, got step {step_deg}, search {search_deg}')
    steps = int(math.floor(search_deg / step_deg + 1e-9))
    return np.arange(-steps, steps + 1, dtype=np.float64) * step_deg


def bev_rotation_grid(grid: BevGrid, pool: int, angles_deg: np.ndarray) -> np.ndarray:
    """GridSample grid (h, K * w, 2), float32: each pooled cell's source, turned by each angle.

    Sampling a map with block k of it gives the map turned by angles_deg[k] counter-clockwise
    (seen from above) about the base origin. Normalised for align_corners=False; sources off
    the grid read 0.
    """
    rows, cols = grid.shape
    if pool < 1 or rows % pool or cols % pool:
        raise ValueError(f'pool {pool} must divide the grid {grid.shape}')
    h, w = rows // pool, cols // pool
    size = grid.resolution * pool
    x = grid.x_min + (np.arange(h) + 0.5) * size
    y = grid.y_min + (np.arange(w) + 0.5) * size
    xx, yy = np.meshgrid(x, y, indexing='ij')
    blocks = []
    for angle in np.deg2rad(np.asarray(angles_deg, dtype=np.float64)):
        c, s = math.cos(angle), math.sin(angle)
        # Where the turned map's cell comes from: the point turned back by the angle.
        x_src = c * xx + s * yy
        y_src = -s * xx + c * yy
        u = 2.0 * (y_src - grid.y_min) / (grid.y_max - grid.y_min) - 1.0
        v = 2.0 * (x_src - grid.x_min) / (grid.x_max - grid.x_min) - 1.0
        blocks.append(np.stack([u, v], axis=-1))
    return np.concatenate(blocks, axis=1).astype(np.float32)


def turn(objects: torch.Tensor, rotation_grid: torch.Tensor, angles: int) -> torch.Tensor:
    """[B, 1, h, K, w]: objects ([B, 1, h, w]) turned by each angle of rotation_grid
    ([B, h, K * w, 2], bev_rotation_grid)."""
    batch, _, h, w = objects.shape
    turned = nn.functional.grid_sample(objects, rotation_grid, mode='bilinear',
                                       padding_mode='zeros', align_corners=False)
    return turned.reshape(batch, 1, h, angles, w)


def object_map(head: nn.Module, features: torch.Tensor, pool: int) -> torch.Tensor:
    """[B, 1, h, w] probability of anything but free space, from a 1x1 head on pooled features.

    The head is linear, so on pooled features it gives the pooled logits exactly.
    """
    logits = head(nn.functional.avg_pool2d(features, pool))
    return 1.0 - torch.softmax(logits, dim=1)[:, :1]


def yaw_agreement(camera_objects: torch.Tensor, turned: torch.Tensor, mask: torch.Tensor
                  ) -> torch.Tensor:
    """[B, K] normalised correlation, in the mask, of the camera map and the turned lidar map.

    camera_objects is [B, 1, h, w], turned the lidar's [B, 1, h, K, w] (turn_by_taps), mask
    [1, 1, h, w].
    """
    batch, _, h, angles, w = turned.shape
    weight = mask.reshape(1, 1, h, 1, w)
    camera = (camera_objects * mask).reshape(batch, 1, h, 1, w)
    cross = (camera * turned).mean(dim=(2, 4))
    camera_energy = (camera_objects * camera_objects * mask).mean(dim=(2, 3)).reshape(
        batch, 1, 1)
    lidar_energy = (turned * turned * weight).mean(dim=(2, 4))
    return (cross / torch.sqrt(camera_energy * lidar_energy + _EPS)).reshape(batch, angles)


def best_turn(scores: torch.Tensor, zero_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, 1] best agreement over the angles, [B, 1] its gain over the mounted yaw)."""
    best = scores.max(dim=1, keepdim=True).values
    return best, best - scores[:, zero_index:zero_index + 1]
