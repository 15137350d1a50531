"""Feature novelty for the gates: running healthy statistics and the distance from them."""

import math

import pytest
import torch

from fusion_nodes.model.network import build_model
from fusion_nodes.model.novelty import FeatureNovelty


def _gaussian(rows: int, dim: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.5, 2.0, dim)
    return torch.randn(rows, dim, generator=gen) * scale + 3.0


def test_running_statistics_converge_to_the_healthy_distribution():
    novelty = FeatureNovelty(6)
    for step in range(600):
        novelty.track(_gaussian(32, 6, step), torch.ones(32))
    assert torch.allclose(novelty.mean, torch.full((6,), 3.0), atol=0.1)
    expected = torch.diag(torch.linspace(0.5, 2.0, 6) ** 2)
    assert torch.allclose(novelty.covariance, expected, atol=0.15)
    # Healthy rows score about log(1 + 1): their squared distance averages D.
    healthy = novelty(_gaussian(2000, 6, 9999)).mean()
    assert healthy.item() == pytest.approx(math.log(2.0), abs=0.1)


def test_far_features_score_far_above_healthy_ones():
    novelty = FeatureNovelty(4)
    for step in range(200):
        novelty.track(_gaussian(32, 4, step), torch.ones(32))
    near = novelty(_gaussian(500, 4, 5000)).quantile(0.99)
    # 13 standard deviations off along one axis, as a failure moves the pooled features.
    far = novelty(_gaussian(500, 4, 5001) + torch.tensor([0.0, 0.0, 20.0, 0.0]))
    assert far.median() > near + 1.0


def test_only_healthy_rows_move_the_statistics():
    novelty = FeatureNovelty(3)
    novelty.track(_gaussian(32, 3, 0), torch.ones(32))
    mean = novelty.mean.clone()
    failed = torch.full((32, 3), 50.0)
    novelty.track(failed, torch.zeros(32))
    assert torch.equal(novelty.mean, mean)
    assert int(novelty.batches_tracked) == 1
    mixed = torch.cat([_gaussian(16, 3, 1), failed[:16]])
    novelty.track(mixed, torch.cat([torch.ones(16), torch.zeros(16)]))
    assert (novelty.mean - mean).abs().max() < 0.1


def test_the_network_gates_see_novelty_only_with_the_option_and_only_when_present():
    torch.manual_seed(0)
    inputs = {'camera': torch.rand(2, 3, 96, 128), 'lidar': torch.rand(2, 4, 64, 64),
              'gps': torch.rand(2, 8), 'health': torch.rand(2, 3, 4),
              'available': torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])}
    plain = build_model({'architecture': {}}).eval()
    assert not hasattr(plain, 'camera_novelty')
    model = build_model({'architecture': {'gate_novelty': True}}).eval()
    out = model.forward_all(**inputs)
    before = out['gate_logits'].detach().clone()
    with torch.no_grad():
        model.camera_novelty.mean += 100.0  # the same frames now lie far from 'healthy'
    after = model.forward_all(**inputs)['gate_logits']
    assert after[0, 0] != before[0, 0]
    # A missing camera contributes no novelty, so its gate logit does not move.
    assert after[1, 0] == before[1, 0]
    assert torch.equal(after[:, 1:], before[:, 1:])


def test_training_tracks_only_healthy_present_sensors():
    model = build_model({'architecture': {'gate_novelty': True}}).train()
    out = {'camera_pooled': _gaussian(8, 24, 0), 'lidar_pooled': _gaussian(8, 16, 1)}
    healthy = torch.zeros(8, 3)
    healthy[:, 1] = 1.0
    model.track_healthy_features(out, healthy)
    assert int(model.camera_novelty.batches_tracked) == 0
    assert int(model.lidar_novelty.batches_tracked) == 1
