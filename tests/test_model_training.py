"""Training: modality dropout and a short run on a synthetic task with a known answer."""

from dataclasses import replace
import json

import numpy as np
import pytest
import torch

from fusion_nodes.model.export import write_model
from fusion_nodes.model.features import camera_preprocess_config
from fusion_nodes.model.predict import (
    camera_mount_errors, INPUT_KEYS, lidar_mount_errors, mask_sensors, predict, without_errors,
    without_multipath_gps)
from fusion_nodes.model.train import (
    _recalibrate, healthy_novelty_ceiling, modality_dropout, train_model, TrainConfig)
from tests.models.synthetic_samples import synthetic_gate_samples
from tests.mount_scenes import occupancy, PILLARS, road_frame, scene


def _batch(size: int) -> dict[str, torch.Tensor]:
    return {'camera': torch.ones(size, 3, 96, 128), 'lidar': torch.ones(size, 4, 64, 64),
            'gps': torch.ones(size, 8), 'health': torch.ones(size, 3, 4),
            'available': torch.ones(size, 3)}


def test_modality_dropout_zeroes_whole_sensors_and_never_both_bev_sensors():
    gen = torch.Generator().manual_seed(0)
    out = modality_dropout(_batch(400), (0.5, 0.5, 0.3), gen)
    available = out['available']
    assert not ((available[:, 0] == 0) & (available[:, 1] == 0)).any()
    for k, key in enumerate(('camera', 'lidar', 'gps')):
        dropped = available[:, k] == 0
        flat = out[key].reshape(400, -1)
        assert (flat[dropped] == 0).all() and (flat[~dropped] == 1).all()
        assert (out['health'][dropped, k] == 0).all()
    # GPS drops at its own rate: 30 % of 400 within a generous binomial band.
    assert 80 <= int((available[:, 2] == 0).sum()) <= 160


def test_mask_sensors_keeps_only_the_named_ones():
    masked = mask_sensors(_batch(2), ('lidar',))
    assert masked['available'].tolist() == [[0.0, 1.0, 0.0]] * 2
    assert masked['camera'].abs().sum() == 0 and masked['lidar'].abs().sum() > 0


def test_short_training_learns_the_gates_from_failure_flags():
    # 180 steps: the gates read detached features, so only the gate MLP learns from the
    # flags; 60 steps (10 epochs of 6) left the failed gate at 0.45.
    samples = synthetic_gate_samples(48, seed=0)
    cfg = TrainConfig(epochs=30, batch_size=8, learning_rate=2e-2, seed=0,
                      dropout=(0.0, 0.0, 0.0), threads=1)
    model, history = train_model(samples, cfg, progress=False)
    assert history[-1]['total'] < history[0]['total']
    out = predict(model, synthetic_gate_samples(32, seed=1))
    lidar_gate = out['gates'][:, 1]
    assert lidar_gate[:16].mean() > 0.6 > 0.4 > lidar_gate[16:].mean()
    # Unavailable sensors stay at exactly 0 after training too.
    assert (out['gates'][:, 0] > 0).all()
    masked = predict(model, synthetic_gate_samples(8, seed=2), keep=('lidar',))
    assert (masked['gates'][:, [0, 2]] == 0).all()
    # Opened gates are the availability bits, and the noise scans then reach the fused head.
    opened = predict(model, synthetic_gate_samples(32, seed=1), open_gates=True)
    assert (opened['gates'] == 1.0).all()
    assert (opened['bev'][:16] == out['bev'][:16]).mean() > 0.99
    assert (opened['bev'][16:] != out['bev'][16:]).any()


def test_without_errors_drops_only_the_rows_and_sensors_in_error():
    samples = synthetic_gate_samples(4, seed=3)
    samples['camera'][:] = 1.0
    samples['health'][:, 0] = (0.5, 0.4, 0.9, 0.0)
    samples['health'][:, 1] = (1.0, 1.0, 0.0, 0.02)
    samples['health'][1, 0, 3] = 1.0      # frozen camera in row 1
    samples['health'][2:, 1, 0] = 0.05    # lidar dropout in rows 2 and 3
    before = {key: value.copy() for key, value in samples.items()}
    out = without_errors(samples)
    assert out['available'].tolist() == [[1, 1, 1], [0, 1, 1], [1, 0, 1], [1, 0, 1]]
    assert out['camera'][1].sum() == 0 and (out['camera'][[0, 2, 3]] == 1).all()
    assert (out['lidar'][2:] == 0).all() and (out['lidar'][:2] == samples['lidar'][:2]).all()
    assert (out['health'][1, 0] == 0).all()
    assert (out['health'][0] == samples['health'][0]).all()
    for key, value in before.items():  # the input is not modified
        np.testing.assert_array_equal(samples[key], value)


def test_gps_in_a_multipath_episode_gives_way_where_the_lidar_odometry_can():
    samples = synthetic_gate_samples(4, seed=4)
    samples['available'][:] = 1.0
    samples['health'][:, 2] = (1.0, 0.1, 0.0, 0.1)
    samples['health'][1:, 2, 2] = 0.4          # multipath episode in rows 1-3
    samples['available'][3, 1] = 0.0           # row 3: no lidar
    odometry = np.full((4, 3), 8.0)
    odometry[2] = np.nan                       # row 2: no odometry
    out = without_multipath_gps(samples, odometry)
    assert out['available'][:, 2].tolist() == [1, 0, 1, 1]
    assert (out['gps'][1] == 0).all() and (out['gps'][2] == samples['gps'][2]).all()


def test_without_errors_replays_the_lidar_mount_check_per_recording():
    """A lidar turned 20 degrees is dropped once the check has seen it drive; a straight one
    in the other recording, interleaved with it, is not."""
    world = scene(4)
    frames = 40
    samples = synthetic_gate_samples(2 * frames, seed=5)
    samples['health'][:, 1] = (1.0, 1.0, 0.0, 0.02)
    samples['recording'] = np.tile([0, 1], frames)
    samples['capture_ns'] = np.repeat(np.arange(frames) * 100_000_000, 2).astype(np.int64)
    for k in range(2 * frames):
        turned = 20.0 if samples['recording'][k] == 1 else 0.0
        samples['lidar'][k, 0] = occupancy(world, 8.0 * (k // 2) / 10.0, mount_yaw_deg=turned)
    errors = lidar_mount_errors(samples, PILLARS.grid)
    assert not errors[samples['recording'] == 0].any()
    assert errors[samples['recording'] == 1][-10:].all()
    out = without_errors(samples, lidar_mount=errors)
    np.testing.assert_array_equal(out['available'][:, 1], (~errors).astype(np.float32))
    assert (out['lidar'][errors] == 0).all()
    assert without_errors(samples)['available'][:, 1].all()


def test_without_errors_replays_the_camera_mount_check_per_recording():
    """An upside-down camera is dropped once it has been seen driving; an upright one in
    the other recording is not."""
    frames = 30
    camera_input = camera_preprocess_config()
    samples = synthetic_gate_samples(2 * frames, seed=6)
    samples['health'][:, 0] = (0.5, 0.4, 0.9, 0.0)
    samples['recording'] = np.repeat([0, 1], frames)
    samples['capture_ns'] = np.tile(np.arange(frames) * 100_000_000, 2).astype(np.int64)
    for k in range(2 * frames):
        grey = road_frame(0.1 * (k % frames), upside_down=bool(k >= frames))
        mean, std = camera_input.mean[0], camera_input.std[0]
        samples['camera'][k] = (grey - mean) / std
    errors = camera_mount_errors(samples, camera_input)
    assert not errors[:frames].any() and errors[-10:].all()
    out = without_errors(samples, camera_mount=errors)
    np.testing.assert_array_equal(out['available'][:, 0], (~errors).astype(np.float32))


def test_absent_code_training_builds_and_learns_the_codes():
    samples = synthetic_gate_samples(16, seed=4)
    cfg = TrainConfig(epochs=2, batch_size=8, learning_rate=1e-2, seed=0,
                      dropout=(0.5, 0.5, 0.0), threads=1, absent_code=True)
    model, _ = train_model(samples, cfg, progress=False)
    assert model.cfg.absent_code
    # Dropout sends whole sensors to their codes, so the codes get gradients and move off 0.
    assert model.lidar_absent_bias.abs().sum() > 0
    assert model.camera_absent_bias.abs().sum() > 0


def test_novelty_training_tracks_healthy_features_and_scores_the_failed_ones_higher():
    samples = synthetic_gate_samples(32, seed=5)
    cfg = TrainConfig(epochs=3, batch_size=8, learning_rate=1e-2, seed=0,
                      dropout=(0.0, 0.0, 0.0), threads=1, gate_novelty=True)
    model, _ = train_model(samples, cfg, progress=False)
    assert model.cfg.gate_novelty
    # At most one update per step (4 steps per epoch); a step with fewer than two healthy
    # scans skips it.
    assert 0 < int(model.lidar_novelty.batches_tracked) <= 12
    test = synthetic_gate_samples(32, seed=6)
    with torch.no_grad():
        out = model.forward_all(**{key: torch.from_numpy(test[key]) for key in INPUT_KEYS})
        scores = model.lidar_novelty(out['lidar_pooled'])[:, 0]
    # The noise scans (the failed half) were never folded in, so they lie far off.
    assert scores[16:].min() > scores[:16].max()


def test_novelty_veto_is_the_highest_healthy_score_and_drops_only_beyond_it():
    samples = synthetic_gate_samples(32, seed=5)
    cfg = TrainConfig(epochs=2, batch_size=8, learning_rate=1e-2, seed=0,
                      dropout=(0.0, 0.0, 0.0), threads=1, gate_novelty=True)
    model, _ = train_model(samples, cfg, progress=False)
    # A missing camera frame does not count either, however novel what it holds.
    samples['camera'][3] = 5.0
    samples['available'][3, 0] = 0.0
    with torch.no_grad():
        out = model.forward_all(**{key: torch.from_numpy(samples[key]) for key in INPUT_KEYS})
        camera = model.camera_novelty(out['camera_pooled'])[:, 0].numpy()
        lidar = model.lidar_novelty(out['lidar_pooled'])[:, 0].numpy()
    ceiling = healthy_novelty_ceiling(model, samples, batch_size=5)
    assert ceiling[0] == pytest.approx(float(np.delete(camera, 3).max()), rel=1e-6)
    assert camera[3] > ceiling[0] + 0.1
    # The failed half of the scans lies beyond every healthy one and sets no ceiling.
    assert ceiling[1] == pytest.approx(float(lidar[:16].max()), rel=1e-6)
    assert lidar[16:].min() > ceiling[1]
    model.cfg = replace(model.cfg, gate_floor=0.0, novelty_veto=ceiling)
    gates = predict(model, samples)['gates']
    assert (gates[16:, 1] == 0.0).all() and (gates[:16, 1] > 0.0).all()
    with pytest.raises(ValueError, match='no novelty input'):
        healthy_novelty_ceiling(train_model(samples, TrainConfig(epochs=1, threads=1),
                                            progress=False)[0], samples)


def test_recalibrate_sets_the_chosen_vetoes_from_the_data_the_model_learned(tmp_path, capsys):
    samples = synthetic_gate_samples(24, seed=5)
    cfg = TrainConfig(epochs=1, batch_size=8, seed=0, threads=1, gate_novelty=True)
    model, _ = train_model(samples, cfg, progress=False)
    json_path = write_model(model, tmp_path, 'net', '1.0.0',
                            {'data_sha256': 'abc', 'seeds': [1], 'epochs': 1})
    weights = (tmp_path / 'net.pt').read_bytes()
    assert _recalibrate(json_path, '1.0.1', samples, 'other', ['camera']) == 2
    assert 'trained on data abc' in capsys.readouterr().err
    assert _recalibrate(json_path, '1.0.1', samples, 'abc', ['camera']) == 0
    metadata = json.loads(json_path.read_text())
    camera_ceiling = healthy_novelty_ceiling(model, samples)[0]
    assert metadata['version'] == '1.0.1' and (tmp_path / 'net.pt').read_bytes() == weights
    assert metadata['architecture']['novelty_veto'] == [pytest.approx(camera_ceiling), 0.0]


@pytest.mark.parametrize('device, message', [
    ('gpu', "device must be 'cpu' or 'cuda"),
    pytest.param('cuda', 'torch sees no CUDA device', marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason='a GPU is present')),
])
def test_a_device_that_cannot_train_is_refused_before_any_work(device, message, capsys):
    with pytest.raises(ValueError, match=message):
        TrainConfig(device=device)
    from fusion_nodes.model.train import main
    with pytest.raises(SystemExit) as exited:
        main(['--device', device, '--data-dir', '/nonexistent'])
    assert exited.value.code == 2 and message in capsys.readouterr().err
