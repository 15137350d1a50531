"""fusion-eval's acceptance logic, table, plot and product samples, on hand-made inputs."""

from pathlib import Path
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fusion_nodes.model.evaluate import (
    acceptance, load_model, markdown, METHODS, plot_timelines, product_predict, product_samples)
from fusion_nodes.model.network import GatedFusionNet, NetworkConfig
from fusion_nodes.model.predict import with_yaw_blame
from tests.mount_scenes import occupancy, PILLARS, scene


def _result(miou: dict, failed: dict, gates: dict) -> dict:
    methods = {m: {'miou': miou[m], 'object_accuracy': 0.5, 'ego_rmse': 1.0} for m in METHODS}
    t = np.arange(10) * 0.1
    return {
        'frames': 10,
        'failure_frames': 5 if any(failed.values()) else 0,
        'failed_fraction': failed,
        'methods': methods,
        'methods_in_failure': methods if any(failed.values()) else None,
        'gates': {s: {'healthy': g[0], 'failed': g[1], 'healthy_frames': 5 if g[0] == g[0] else 0,
                      'failed_frames': 5 if g[1] == g[1] else 0} for s, g in gates.items()},
        'timeline': {'t_s': t.tolist(), 'gates': np.full((10, 3), 0.9).tolist(),
                     'failed': np.zeros((10, 3)).tolist(), 'available': np.ones((10, 3)).tolist()},
    }


NAN = float('nan')


def _results(gated_blackout: float, ungated_blackout: float, failed_gate: float,
             open_blackout: float | None = None) -> dict:
    healthy = {'camera': (0.95, NAN), 'lidar': (0.9, NAN), 'gps': (0.97, NAN)}
    nominal = _result({'gated': 0.6, 'camera_only': 0.3, 'lidar_only': 0.5, 'ungated': 0.55,
                       'gates_open': 0.58, 'late_fusion': 0.5},
                      {'camera': 0.0, 'lidar': 0.0, 'gps': 0.0}, healthy)
    if open_blackout is None:
        open_blackout = ungated_blackout
    blackout = _result({'gated': gated_blackout, 'camera_only': 0.1, 'lidar_only': 0.5,
                        'ungated': ungated_blackout, 'gates_open': open_blackout,
                        'late_fusion': 0.4},
                       {'camera': 0.5, 'lidar': 0.0, 'gps': 0.0},
                       dict(healthy, camera=(0.95, failed_gate)))
    return {'nominal': nominal, 'camera_blackout': blackout}


def test_acceptance_passes_when_gating_prevents_negative_transfer():
    checks = acceptance(_results(0.52, 0.45, 0.05))
    assert all(check['pass'] for check in checks.values())
    transfer = checks['no_negative_transfer']['scenarios']['camera_blackout']
    # Camera failed, so the best healthy single modality is lidar only.
    assert transfer['failed'] == 'camera' and transfer['best_single'] == 0.5


def test_acceptance_reports_each_miss():
    checks = acceptance(_results(0.48, 0.52, 0.3))
    assert not checks['no_negative_transfer']['pass']
    assert not checks['ungated_negative_transfer_somewhere']['pass']
    assert not checks['gates_open_negative_transfer_somewhere']['pass']
    assert not checks['gates']['pass'] and not checks['gates_single_failure']['pass']
    assert checks['gates_single_failure']['scenarios']['camera_blackout']['failed_gate'] == 0.3
    assert checks['nominal_gated_beats_all']['pass']
    table = markdown(_results(0.48, 0.52, 0.3), checks)
    assert '| camera_blackout | camera |' in table and 'no_negative_transfer: MISS' in table
    assert 'Held out' not in table


def test_markdown_names_the_held_out_scenarios():
    results = _results(0.52, 0.45, 0.05)
    results['camera_blackout']['held_out'] = True
    table = markdown(results, acceptance(results))
    assert 'Held out of training (a failure kind no training scenario contains): ' \
        'camera_blackout.' in table


def test_markdown_pools_the_ego_calibration_by_frames():
    results = _results(0.52, 0.45, 0.05)
    results['nominal']['ego_calibration'] = {
        'within_1_sigma': [0.5, 0.7, 0.7], 'within_2_sigma': [0.9, 0.9, 0.9],
        'mean_z2': [2.0, 1.0, 1.0], 'frames': 300}
    results['camera_blackout']['ego_calibration'] = {
        'within_1_sigma': [0.9, 0.7, 0.7], 'within_2_sigma': [1.0, 0.9, 0.9],
        'mean_z2': [1.0, 1.0, 1.0], 'frames': 100}
    table = markdown(results, acceptance(results))
    assert '| nominal | 0.50 / 0.90, 2.00 | 0.70 / 0.90, 1.00 |' in table
    assert '| pooled | 0.60 / 0.93, 1.75 |' in table


def test_trained_ungated_and_opened_gates_are_judged_apart():
    # The separately trained baseline copes with the blackout; the same weights without their
    # gates do not.
    checks = acceptance(_results(0.52, 0.51, 0.05, open_blackout=0.3))
    assert not checks['ungated_negative_transfer_somewhere']['pass']
    opened = checks['gates_open_negative_transfer_somewhere']
    assert opened['pass'] and opened['scenarios'] == ['camera_blackout']
    transfer = checks['no_negative_transfer']['scenarios']['camera_blackout']
    assert transfer['gates_open'] == 0.3 and transfer['gates_open_below']
    assert not transfer['ungated_below']


def test_gate_timeline_is_written(tmp_path):
    path = tmp_path / 'gates.png'
    plot_timelines(_results(0.52, 0.45, 0.05), path)
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and path.stat().st_size > 5000


def test_gates_are_judged_per_single_failure_scenario_and_pooled():
    results = _results(0.52, 0.45, 0.05)
    # Two sensors failing at once: left out of the per-scenario check, counted when pooled.
    results['combined'] = _result(
        {'gated': 0.5, 'camera_only': 0.3, 'lidar_only': 0.4, 'ungated': 0.5,
         'gates_open': 0.5, 'late_fusion': 0.4}, {'camera': 0.5, 'lidar': 0.0, 'gps': 0.5},
        {'camera': (0.95, 0.9), 'lidar': (0.9, NAN), 'gps': (0.97, 0.9)})
    checks = acceptance(results)
    assert checks['gates_single_failure']['pass']
    assert list(checks['gates_single_failure']['scenarios']) == ['camera_blackout']
    assert not checks['gates']['pass']
    assert abs(checks['gates']['per_sensor']['camera']['failed'] - 0.475) < 1e-9
    # A healthy sensor's gate sagging in a single-failure scenario fails that scenario.
    results['camera_blackout']['gates']['lidar']['healthy'] = 0.7
    assert not acceptance(results)['gates_single_failure']['pass']


def _driven_samples(world: np.ndarray, frames: int, mount_yaw_deg: float = 0.0) -> dict:
    """frames healthy 10 Hz samples of a lidar driven at 8 m/s past world (zero camera and
    GPS inputs), turned by mount_yaw_deg."""
    samples = {
        'camera': np.zeros((frames, 3, 96, 128), np.float32),
        'lidar': np.zeros((frames, 4, 64, 64), np.float32),
        'gps': np.zeros((frames, 8), np.float32),
        'health': np.tile(np.array([[0.5, 0.4, 0.9, 0.0], [1.0, 1.0, 0.0, 0.02],
                                    [1.0, 0.1, 0.0, 0.1]], np.float32), (frames, 1, 1)),
        'available': np.ones((frames, 3), np.float32),
        'capture_ns': (np.arange(frames) * 100_000_000).astype(np.int64),
    }
    for k in range(frames):
        samples['lidar'][k, 0] = occupancy(world, 0.8 * k, mount_yaw_deg=mount_yaw_deg)
    return samples


def test_product_samples_follow_each_nodes_mount_check_parameter():
    """A lidar turned on its mount is dropped as lidar_node would, unless its params turn
    the check off; the camera's own switch leaves the lidar alone."""
    samples = _driven_samples(scene(7), 40, mount_yaw_deg=20.0)
    model = SimpleNamespace(grid=PILLARS.grid, cfg=NetworkConfig())
    dropped = product_samples(samples, model)['available'][:, 1]
    assert dropped[-10:].sum() == 0 and dropped[:5].all()
    off = {'lidar_node': {'mount_check': False}}
    assert product_samples(samples, model, off)['available'][:, 1].all()
    camera_off = {'camera_node': {'mount_check': False}}
    np.testing.assert_array_equal(
        product_samples(samples, model, camera_off)['available'][:, 1], dropped)


def _disagreeing_model() -> GatedFusionNet:
    """A model whose yaw check always sees the lidar agree far better turned."""
    torch.manual_seed(0)
    model = GatedFusionNet(cfg=NetworkConfig(yaw_disagreement=(0.1, 0.5))).eval()
    model.yaw_check = lambda camera_bev, lidar_bev: (
        torch.full((camera_bev.shape[0], 1), 0.9), torch.full((camera_bev.shape[0], 1), 0.5))
    return model


def test_the_yaw_blame_drops_the_sensor_the_lidar_travel_points_at():
    frames = 5
    gen = np.random.default_rng(2)
    samples = {
        'camera': gen.standard_normal((frames, 3, 96, 128)).astype(np.float32),
        'lidar': gen.random((frames, 4, 64, 64)).astype(np.float32),
        'gps': gen.standard_normal((frames, 8)).astype(np.float32),
        'health': gen.random((frames, 3, 4)).astype(np.float32),
        'available': np.ones((frames, 3), np.float32),
    }
    samples['available'][4, 0] = 0.0  # no camera: nothing to disagree with
    headings = np.array([0.5, -19.0, np.nan, 6.0, 0.0])
    out = with_yaw_blame(samples, _disagreeing_model(), headings)
    np.testing.assert_array_equal(out['available'][:, :2],
                                  [[0, 1], [1, 0], [1, 1], [1, 1], [0, 1]])
    assert not out['camera'][0].any() and not out['lidar'][1].any()
    np.testing.assert_array_equal(out['camera'][2:4], samples['camera'][2:4])
    assert out['health'][0, 0].sum() == 0.0 and out['health'][0, 1].sum() > 0.0
    # Without the disagreement output set, nothing is dropped.
    plain = GatedFusionNet().eval()
    assert with_yaw_blame(samples, plain, headings) is samples


def test_load_model_gives_the_saved_weights_and_refuses_altered_files(tmp_path):
    for suffix in ('json', 'onnx', 'pt'):
        shutil.copy(Path(__file__).parents[1] / 'models' / f'gated_fusion.{suffix}', tmp_path)
    json_path, weights = tmp_path / 'gated_fusion.json', tmp_path / 'gated_fusion.pt'
    model = load_model(json_path)
    saved = torch.load(weights, weights_only=True)
    assert not model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    torch.save({k: v + 1 for k, v in saved.items()}, weights)
    with pytest.raises(ValueError, match='sha256'):
        load_model(json_path)


def test_the_products_ego_is_joined_with_the_replayed_lidar_odometry():
    """A straight drive at 8 m/s: where the replayed lidar odometry has an estimate the
    product's ego lies between the network's and 8 m/s with a smaller variance, as
    fusion_node joins them; with lidar_odometry off it is the network's."""
    samples = _driven_samples(scene(8), 20)
    samples['camera'] = np.random.default_rng(3).standard_normal(
        samples['camera'].shape).astype(np.float32)
    torch.manual_seed(0)
    model = GatedFusionNet().eval()
    network = product_predict(samples, model, {'fusion_node': {'lidar_odometry': False}})
    joined = product_predict(samples, model)
    np.testing.assert_array_equal(joined['bev'], network['bev'])
    np.testing.assert_array_equal(joined['ego'][:3], network['ego'][:3])  # no estimate yet
    late = slice(8, None)
    low = np.minimum(network['ego'][late, 0], 8.0) - 0.5
    high = np.maximum(network['ego'][late, 0], 8.0) + 0.5
    assert np.all((joined['ego'][late, 0] >= low) & (joined['ego'][late, 0] <= high))
    assert np.all(joined['ego_log_variance'][late] <= network['ego_log_variance'][late] + 1e-6)
    assert np.abs(joined['ego'][late, 0] - network['ego'][late, 0]).max() > 0.1
