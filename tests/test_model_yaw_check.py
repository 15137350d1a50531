"""The camera-lidar yaw check and the two vetoes it drives."""

import numpy as np
import pytest
import torch

from fusion_nodes.core.config import BevGrid
from fusion_nodes.model.network import GatedFusionNet, NetworkConfig
from fusion_nodes.model.yaw_check import (
    best_turn, bev_rotation_grid, turn, yaw_agreement, yaw_angles_deg)

GRID = BevGrid()
POOL = 2
SIZE = 32


def _turn(objects: torch.Tensor, angle_deg: float) -> torch.Tensor:
    grid = torch.from_numpy(bev_rotation_grid(GRID, POOL, np.array([angle_deg])))[None]
    return torch.nn.functional.grid_sample(objects, grid, mode='bilinear',
                                           padding_mode='zeros', align_corners=False)


def _scene(seed: int) -> torch.Tensor:
    """[1, 1, 32, 32] object map: a few car-sized blobs ahead of the vehicle."""
    rng = np.random.default_rng(seed)
    objects = np.zeros((SIZE, SIZE), np.float32)
    for _ in range(6):
        row, col = int(rng.integers(4, 26)), int(rng.integers(6, 26))
        objects[row:row + 4, col:col + 2] = 1.0
    return torch.from_numpy(objects)[None, None]


def test_the_search_holds_zero_and_is_symmetric():
    angles = yaw_angles_deg(30.0, 5.0)
    assert angles.tolist() == list(range(-30, 31, 5))
    with pytest.raises(ValueError):
        yaw_angles_deg(10.0, 0.0)
    with pytest.raises(ValueError):
        yaw_angles_deg(10.0, 20.0)


def test_the_zero_angle_block_samples_the_map_as_it_is():
    objects = torch.rand(1, 1, SIZE, SIZE)
    torch.testing.assert_close(_turn(objects, 0.0), objects, rtol=0.0, atol=1e-6)


def test_a_turn_moves_an_object_about_the_base_origin():
    # Counter-clockwise seen from above: an object ahead moves towards the left (+y).
    objects = torch.zeros(1, 1, SIZE, SIZE)
    size = GRID.resolution * POOL
    row, col = 10, 18
    objects[0, 0, row, col] = 1.0
    x0, y0 = GRID.x_min + (row + 0.5) * size, GRID.y_min + (col + 0.5) * size
    angle = np.deg2rad(30.0)
    expected = (x0 * np.cos(angle) - y0 * np.sin(angle), x0 * np.sin(angle) + y0 * np.cos(angle))
    turned = _turn(objects, 30.0)[0, 0]
    r, c = np.unravel_index(int(turned.argmax()), turned.shape)
    found = (GRID.x_min + (r + 0.5) * size, GRID.y_min + (c + 0.5) * size)
    assert np.hypot(found[0] - expected[0], found[1] - expected[1]) <= size
    assert found[1] > y0 + 3.0


@pytest.mark.parametrize('seed', range(4))
def test_a_turned_lidar_agrees_best_turned_back(seed):
    angles = yaw_angles_deg(30.0, 5.0)
    zero = int(np.argmin(np.abs(angles)))
    camera = _scene(seed)
    mask = torch.ones(1, 1, SIZE, SIZE)
    grid = torch.from_numpy(bev_rotation_grid(GRID, POOL, angles))[None]

    def agreement(lidar: torch.Tensor) -> torch.Tensor:
        return yaw_agreement(camera, turn(lidar, grid, len(angles)), mask)

    aligned = agreement(camera)
    best, gain = best_turn(aligned, zero)
    assert int(aligned.argmax()) == zero and gain.item() == 0.0
    assert best.item() == pytest.approx(1.0, abs=1e-3)
    # A lidar turned by -20 degrees on its mount matches once turned by +20.
    scores = agreement(_turn(camera, -20.0))
    best, gain = best_turn(scores, zero)
    assert angles[int(scores.argmax())] == 20.0
    assert gain.item() > 0.3 and best.item() > 0.6


def _inputs(available=(1.0, 1.0, 1.0)) -> dict:
    gen = torch.Generator().manual_seed(3)
    return {'camera': torch.randn(1, 3, 96, 128, generator=gen),
            'lidar': torch.rand(1, 4, 64, 64, generator=gen),
            'gps': torch.randn(1, 8, generator=gen),
            'health': torch.rand(1, 3, 4, generator=gen),
            'available': torch.tensor([available])}


def _model(**cfg) -> GatedFusionNet:
    torch.manual_seed(0)
    model = GatedFusionNet(cfg=NetworkConfig(gate_consistency=True, gate_floor=0.1, **cfg))
    return model.eval()


def _with_yaw_check(model: GatedFusionNet, best: float, gain: float) -> GatedFusionNet:
    """The model with its yaw check replaced by fixed (best agreement, gain)."""
    model.yaw_check = lambda camera_bev, lidar_bev: (torch.tensor([[best]]),
                                                     torch.tensor([[gain]]))
    return model


def _assert_dropped_as_missing(vetoed: GatedFusionNet, plain: GatedFusionNet, sensor: int,
                               dropped: bool) -> None:
    """vetoed drops sensor (or not) exactly as plain runs with it missing (or present)."""
    inputs = _inputs()
    available = [1.0, 1.0, 1.0]
    available[sensor] = 0.0
    with torch.no_grad():
        out = vetoed(**inputs)
        reference = plain(**(_inputs(available=tuple(available)) if dropped else inputs))
    assert (out[3][0, sensor].item() == 0.0) == dropped
    for a, b in zip(out, reference):
        torch.testing.assert_close(a, b, rtol=0.0, atol=0.0)


@pytest.mark.parametrize('best, gain, dropped', [(0.9, 0.5, True), (0.9, 0.01, False),
                                                 (0.2, 0.5, False)])
def test_the_veto_drops_the_lidar_exactly_as_if_it_were_missing(best, gain, dropped):
    vetoed = _with_yaw_check(_model(lidar_yaw_veto=(0.1, 0.5)), best, gain)
    _assert_dropped_as_missing(vetoed, _model(), 1, dropped)


def test_the_veto_needs_a_camera_to_check_against():
    vetoed = _with_yaw_check(_model(lidar_yaw_veto=(0.1, 0.5)), 0.9, 0.5)
    inputs = _inputs(available=(0.0, 1.0, 1.0))
    with torch.no_grad():
        gates = vetoed(**inputs)[3][0]
        reference = _model()(**inputs)[3][0]
    assert gates[1].item() > 0.0
    torch.testing.assert_close(gates, reference, rtol=0.0, atol=0.0)


def test_the_yaw_check_runs_batched_as_frame_by_frame():
    model = _model()
    gen = torch.Generator().manual_seed(4)
    camera = torch.randn(3, 3, 96, 128, generator=gen)
    lidar = torch.rand(3, 4, 64, 64, generator=gen)
    with torch.no_grad():
        best, gain = model.yaw_check_of(camera, lidar)
        for k in range(3):
            b, g = model.yaw_check_of(camera[k:k + 1], lidar[k:k + 1])
            torch.testing.assert_close(best[k:k + 1], b, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(gain[k:k + 1], g, rtol=1e-5, atol=1e-6)
    assert (gain >= 0.0).all()


def _novelty_model(**cfg) -> GatedFusionNet:
    model = _model(gate_novelty=True, **cfg)
    for novelty in (model.camera_novelty, model.lidar_novelty):
        novelty.track(torch.randn(64, novelty.dim) * 0.5 + 0.2, torch.ones(64))
    return model


@pytest.mark.parametrize('best, lidar_novel, dropped', [(0.2, False, True), (0.6, False, False),
                                                        (0.2, True, False)])
def test_a_camera_no_turn_of_a_healthy_lidar_agrees_with_is_dropped(best, lidar_novel,
                                                                    dropped):
    inputs = _inputs()
    plain = _novelty_model()
    with torch.no_grad():
        out = plain.forward_all(**inputs)
        lidar_novelty = plain.lidar_novelty(out['lidar_pooled']).item()
    # The veto trusts the lidar only while its novelty is within the healthy bound.
    bound = lidar_novelty * (0.5 if lidar_novel else 2.0)
    vetoed = _with_yaw_check(_novelty_model(camera_disagreement_veto=(0.4, bound)), best, 0.0)
    _assert_dropped_as_missing(vetoed, plain, 0, dropped)


def test_a_low_agreement_drops_the_camera_not_the_lidar_whatever_the_gain():
    # An agreement below the camera bound is below the lidar veto's least agreement too.
    both = _with_yaw_check(_novelty_model(lidar_yaw_veto=(0.1, 0.5),
                                          camera_disagreement_veto=(0.4, 1e6)), 0.3, 0.3)
    with torch.no_grad():
        gates = both(**_inputs())[3][0]
    assert gates[0].item() == 0.0 and gates[1].item() > 0.0


def test_a_bad_veto_setting_is_refused():
    with pytest.raises(ValueError, match='lidar_yaw_veto'):
        NetworkConfig(lidar_yaw_veto=(0.1,))
    with pytest.raises(ValueError, match='lidar_yaw_veto'):
        NetworkConfig(lidar_yaw_veto=(0.0, 0.5))
    with pytest.raises(ValueError, match='camera_disagreement_veto'):
        NetworkConfig(camera_disagreement_veto=(0.4, 1.0))  # needs the novelty input
    with pytest.raises(ValueError):
        NetworkConfig(yaw_search_deg=5.0, yaw_step_deg=10.0)


@pytest.mark.parametrize('best, gain, available, expected', [
    ((0.9, 0.5, (1.0, 1.0, 1.0), 1.0)), ((0.9, 0.01, (1.0, 1.0, 1.0), 0.0)),
    ((0.2, 0.5, (1.0, 1.0, 1.0), 0.0)), ((0.9, 0.5, (0.0, 1.0, 1.0), 0.0)),
    ((0.9, 0.5, (1.0, 0.0, 1.0), 0.0))])
def test_the_yaw_disagreement_output_reports_the_lidar_veto_test_without_acting(
        best, gain, available, expected):
    reporting = _with_yaw_check(_model(yaw_disagreement=(0.1, 0.5)), best, gain)
    inputs = _inputs(available=available)
    with torch.no_grad():
        out = reporting(**inputs)
        reference = _model()(**inputs)
    assert out[4].shape == (1, 1) and out[4].item() == expected
    # Reporting drops nothing: every other output is the plain model's.
    for a, b in zip(out[:4], reference[:4]):
        torch.testing.assert_close(a, b, rtol=0.0, atol=0.0)
    assert reference[4].item() == 0.0


def test_a_bad_yaw_disagreement_setting_is_refused():
    with pytest.raises(ValueError, match='yaw_disagreement'):
        NetworkConfig(yaw_disagreement=(0.1, 0.0))
