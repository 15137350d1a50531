"""The GPU benchmark's measures and inputs; its CUDA part runs where a GPU is (make bench)."""

import numpy as np
import pytest
import torch

from fusion_nodes.benchmarks import gpu
from fusion_nodes.inference.metadata import load_metadata


@pytest.fixture(scope='module')
def metadata():
    return load_metadata(gpu.MODEL)


def test_errors_are_infinite_when_an_output_is_not_finite():
    want = {'gates': np.array([[0.2, 0.9, 1.0]]), 'bev_logits': np.zeros((1, 2, 2, 2))}
    got = {'gates': np.array([[0.25, np.nan, 1.0]]), 'bev_logits': np.zeros((1, 2, 2, 2))}
    bad = gpu.errors(got, want)
    assert not bad['finite'] and bad['max_abs'] == np.inf and bad['gates_max_abs'] == np.inf
    got['gates'] = np.array([[0.25, 0.9, 1.0]])
    got['bev_logits'][0, 1, 0, 0] = 1.0  # one cell of four changes class
    good = gpu.errors(got, want)
    assert good['finite'] and good['gates_max_abs'] == pytest.approx(0.05)
    assert good['max_abs'] == 1.0 and good['bev_argmax_disagree'] == 0.25


def test_saved_inputs_split_into_checked_single_frame_feeds(metadata):
    rng = np.random.default_rng(0)
    batch = {spec['name']: rng.standard_normal([3, *spec['shape'][1:]])
             for spec in metadata.inputs}
    feeds = gpu.split_feeds(batch, metadata)
    assert len(feeds) == 3
    for spec in metadata.inputs:
        assert feeds[2][spec['name']].shape == tuple(spec['shape'])
        assert feeds[2][spec['name']].dtype == np.dtype(spec['dtype'])
    np.testing.assert_allclose(feeds[1]['gps'][0], batch['gps'][1].astype(np.float32))
    del batch['lidar']
    with pytest.raises(ValueError, match="lack \\['lidar'\\]"):
        gpu.split_feeds(batch, metadata)


def test_the_float64_reference_is_the_network_the_cpu_backend_runs(metadata):
    from fusion_nodes.inference.registry import make_backend
    feed = gpu.fixed_feed(metadata, 3)
    reference = gpu.network_in(gpu.MODEL, torch.float64, 'cpu')(feed)
    with make_backend('torch', metadata, device='cpu') as backend:
        errors = gpu.errors({k: v.astype(np.float64) for k, v in backend.infer(feed).items()},
                            reference)
    assert errors['finite'] and errors['max_abs'] < 1e-4


@pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is present: make bench times it')
def test_without_a_gpu_it_says_so_and_times_nothing(capsys):
    assert gpu.run() is None
    assert 'skipped: torch sees no CUDA device' in capsys.readouterr().out


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU to read --feeds')
def test_a_missing_feeds_file_is_a_clear_error(tmp_path, capsys):
    assert gpu.main(['--feeds', str(tmp_path / 'absent.npz')]) == 2
    assert 'error:' in capsys.readouterr().err


def test_feeds_that_cannot_be_written_are_a_clear_error(tmp_path, capsys):
    assert gpu.main(['--save-feeds', str(tmp_path / 'absent' / 'feeds.npz')]) == 2
    assert 'error:' in capsys.readouterr().err


def test_saving_feeds_without_the_bag_readers_says_what_is_missing(monkeypatch, tmp_path, capsys):
    def no_rosbags():
        raise ModuleNotFoundError("No module named 'rosbags'")
    monkeypatch.setattr(gpu, 'demo_bag_inputs', no_rosbags)
    assert gpu.main(['--save-feeds', str(tmp_path / 'feeds.npz')]) == 2
    assert "No module named 'rosbags'; --save-feeds reads the demo bag" in capsys.readouterr().err
