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


def _flat_scale(dim: int = 24) -> torch.Tensor:
    """Feature spreads where a few barely vary, as some of the shipped encoders' do."""
    scale = torch.full((dim,), 0.02)
    scale[:4] = 1e-4  # variance 1e-8: the precision reaches about 1e6 there
    return scale


def _tracked_with_flat_directions(dim: int = 24) -> FeatureNovelty:
    novelty = FeatureNovelty(dim)
    gen = torch.Generator().manual_seed(0)
    novelty.track(torch.randn(4096, dim, generator=gen) * _flat_scale(dim), torch.ones(4096))
    return novelty.eval()


def test_scores_are_the_quadratic_form_of_the_precision():
    novelty = _tracked_with_flat_directions().double()
    features = novelty.mean + torch.randn(64, 24, dtype=torch.float64) * _flat_scale() * 3
    centred = features - novelty.mean
    expected = torch.log1p(((centred @ novelty.precision) * centred).mean(dim=1, keepdim=True))
    assert torch.allclose(novelty(features), expected, rtol=1e-6, atol=1e-6)


def test_a_loaded_precision_brings_its_whitening():
    source = _tracked_with_flat_directions()
    loaded = FeatureNovelty(24)
    loaded.load_state_dict(source.state_dict())
    assert 'whitening' not in source.state_dict()
    assert torch.equal(loaded.whitening, source.whitening)
    features = source.mean + torch.randn(8, 24) * _flat_scale()
    assert torch.equal(loaded.eval()(features), source(features))


def test_float16_scores_stay_finite_and_close_where_the_precision_exceeds_its_range():
    novelty = _tracked_with_flat_directions()
    assert float(novelty.precision.abs().max()) > 65504  # what float16 cannot hold
    gen = torch.Generator().manual_seed(1)
    healthy = torch.randn(256, 24, generator=gen) * _flat_scale()
    far = healthy + 0.05  # a failed sensor's features, far outside the healthy cloud
    for features in (healthy, far):
        want = novelty(features)
        got = novelty.half()(features.half()).float()
        novelty.float()
        assert torch.isfinite(got).all()
        assert torch.allclose(got, want, rtol=1e-2, atol=1e-2)
    absurd = novelty.half()(torch.full((1, 24), 60000.0, dtype=torch.float16))
    assert torch.isfinite(absurd).all() and float(absurd) <= 16.2
