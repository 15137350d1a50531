"""Lidar BEV ego-motion compensation: cells move as a static world seen from a moving car."""

import math

import numpy as np
import pytest

from fusion_nodes.core.config import BevGrid
from fusion_nodes.core.motion_compensation import (
    bev_warp_matrix, compensate_bev, EgoVelocityHold, PlanarVelocity, VelocitySourceConfig)

GRID = BevGrid()


def _one_cell(i: int, j: int, channels: int = 4) -> np.ndarray:
    bev = np.zeros((channels,) + GRID.shape, np.float32)
    bev[:, i, j] = np.arange(1, channels + 1)
    return bev


def _cell_of(x: float, y: float) -> tuple[int, int]:
    return (int(math.floor((x - GRID.x_min) / GRID.resolution)),
            int(math.floor((y - GRID.y_min) / GRID.resolution)))


def test_no_motion_is_the_identity():
    bev = np.random.default_rng(0).random((4,) + GRID.shape).astype(np.float32)
    assert np.array_equal(compensate_bev(bev, GRID, PlanarVelocity(0.0, 0.0, 0.0), 0.15), bev)
    assert np.array_equal(compensate_bev(bev, GRID, PlanarVelocity(12.0, 1.0, 0.3), 0.0), bev)


def test_driving_forward_brings_static_cells_closer():
    """10 m/s for 150 ms: a pillar 20.25 m ahead is 18.75 m ahead at the frame's time."""
    i, j = _cell_of(20.25, 0.25)
    moved = compensate_bev(_one_cell(i, j), GRID, PlanarVelocity(10.0, 0.0, 0.0), 0.15)
    assert np.argwhere(moved[0]).tolist() == [[i - 3, j]]
    # Every channel moves together, its values untouched (nearest cell, no blending).
    assert moved[:, i - 3, j].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert np.count_nonzero(moved) == 4


def test_a_scan_newer_than_the_frame_moves_the_other_way():
    i, j = _cell_of(20.25, 0.25)
    moved = compensate_bev(_one_cell(i, j), GRID, PlanarVelocity(10.0, 0.0, 0.0), -0.1)
    assert np.argwhere(moved[0]).tolist() == [[i + 2, j]]


def test_turning_left_swings_cells_to_the_right_as_a_rigid_motion():
    """Against the exact pose change: rotation by the yaw and the arc's chord."""
    velocity, dt = PlanarVelocity(8.0, 0.0, 0.4), 0.5
    yaw = velocity.yaw_rate * dt
    radius = velocity.vx / velocity.yaw_rate
    # Where the car is after dt on its circle, in its starting frame.
    tx, ty = radius * math.sin(yaw), radius * (1.0 - math.cos(yaw))
    for x, y in ((20.25, 0.25), (10.25, 6.25), (25.75, -8.25)):
        # The same world point, seen from the later pose.
        dx, dy = x - tx, y - ty
        later = (math.cos(yaw) * dx + math.sin(yaw) * dy, -math.sin(yaw) * dx + math.cos(yaw) * dy)
        i, j = _cell_of(x, y)
        moved = compensate_bev(_one_cell(i, j, 1), GRID, velocity, dt)
        hits = np.argwhere(moved[0])
        # Under rotation nearest-cell resampling may copy a pillar into a neighbour too.
        assert 1 <= len(hits) <= 2, (x, y, hits)
        for row, col in hits:
            centre = (GRID.x_min + (row + 0.5) * GRID.resolution,
                      GRID.y_min + (col + 0.5) * GRID.resolution)
            assert math.dist(centre, later) <= GRID.resolution, (x, y, centre, later)
            assert centre[1] < y  # turning left, what was ahead now lies to the right


def test_cells_from_outside_the_grid_are_empty():
    bev = np.ones((4,) + GRID.shape, np.float32)
    moved = compensate_bev(bev, GRID, PlanarVelocity(10.0, 0.0, 0.0), 0.2)
    assert np.all(moved[:, -4:, :] == 0.0)  # the far 2 m were beyond the scan's grid
    assert np.all(moved[:, :-4, :] == 1.0)


def test_the_matrix_maps_cell_centres_through_the_motion():
    matrix = bev_warp_matrix(GRID, PlanarVelocity(5.0, 0.0, 0.0), 0.1)
    col, row = matrix @ np.array([32.0, 40.0, 1.0])
    assert (col, row) == pytest.approx((32.0, 41.0))  # 0.5 m further ahead one cell earlier


@pytest.mark.parametrize('bad', [np.zeros((64, 64), np.float32),
                                 np.zeros((4, 32, 64), np.float32)])
def test_a_wrong_shape_is_a_value_error(bad):
    with pytest.raises(ValueError, match='BEV image'):
        compensate_bev(bad, GRID, PlanarVelocity(1.0, 0.0, 0.0), 0.1)


def test_non_finite_motion_is_a_value_error():
    with pytest.raises(ValueError, match='finite'):
        compensate_bev(_one_cell(3, 3), GRID, PlanarVelocity(math.nan, 0.0, 0.0), 0.1)


def test_the_velocity_hold_hands_out_only_fresh_trusted_velocities():
    hold = EgoVelocityHold(VelocitySourceConfig(max_age_ns=500_000_000, max_speed_std=2.0,
                                                max_interval_ns=400_000_000))
    assert hold.velocity_at(0) is None
    hold.update(1_000_000_000, PlanarVelocity(5.0, 0.0, 0.1), speed_std=1.2)
    assert hold.velocity_at(1_033_000_000) == PlanarVelocity(5.0, 0.0, 0.1)
    assert hold.velocity_at(1_600_000_000) is None  # too old
    assert hold.velocity_at(0) is None  # the clock went back (bag loop)
    # The ego head's prior without GPS (std ~3.3 m/s) must not move scans: it forgets.
    hold.update(1_100_000_000, PlanarVelocity(4.0, 0.0, 0.0), speed_std=3.3)
    assert hold.velocity_at(1_100_000_000) is None
    hold.update(1_200_000_000, PlanarVelocity(math.inf, 0.0, 0.0), speed_std=1.0)
    assert hold.velocity_at(1_200_000_000) is None
    assert hold.usable_interval(-400_000_000) and not hold.usable_interval(400_000_001)


def test_bad_limits_are_rejected():
    with pytest.raises(ValueError):
        VelocitySourceConfig(max_speed_std=0.0)
