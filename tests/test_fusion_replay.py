"""The shipped demo bag through the live nodes (separate processes over DDS), end to end.

One replay, several assertions: fused output for nearly every camera frame, gates that
respond to the bag's camera blackout, BEV quality against /gt close to the offline figure of
the same model on the same bag, and /diagnostics naming the failed sensor.
"""

from pathlib import Path

import numpy as np
import pytest

from fusion_nodes.core.config import SENSORS
from fusion_nodes.tools.bag_truth import (
    load_bag_truth, score_ego, score_ego_calibration, score_semantic)
from fusion_nodes.tools.live_run import find_demo_bag, LiveRunConfig, run_live

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / 'models' / 'gated_fusion.json'
MIN_COVERAGE = 0.98
# Live mIoU may trail the offline figure a little: the aligner pairs by estimated clock offset
# instead of true capture time, and frames around a blackout edge differ by one message.
MIOU_TOLERANCE = 0.05

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture(scope='module')
def bag() -> Path:
    return find_demo_bag()


@pytest.fixture(scope='module')
def truth(bag):
    return load_bag_truth(bag)


@pytest.fixture(scope='module')
def live(bag, tmp_path_factory):
    if not MODEL.is_file():
        pytest.fail(f'the shipped model {MODEL} is missing')
    run = run_live(LiveRunConfig(bag=bag), log_dir=tmp_path_factory.mktemp('live'))
    assert run.nodes_alive_at_end, f'a node died: {run.node_returncodes}'
    assert run.replay_returncode == 0
    return run


def _gates_by_stamp(run) -> dict[int, np.ndarray]:
    return {stamp: gates for stamp, gates in run.observer.gates}


def test_fused_output_for_nearly_every_camera_frame(live, truth):
    fused = set(_gates_by_stamp(live))
    covered = sum(1 for stamp in truth.camera_stamps if stamp in fused)
    coverage = covered / len(truth.camera_stamps)
    print(f'fused {covered} of {len(truth.camera_stamps)} camera frames ({coverage:.3f})')
    assert coverage >= MIN_COVERAGE


def test_camera_gate_follows_the_blackout(live, truth):
    gates = _gates_by_stamp(live)
    k = SENSORS.index('camera')
    failed = truth.failed_stamps('camera')
    assert failed, 'the demo bag should hold a camera failure window'
    during = [gates[s][k] for s in failed if s in gates]
    outside = [g[k] for s, g in gates.items() if s in truth.failed and s not in failed]
    print(f'camera gate: {np.mean(during):.3f} during the blackout ({len(during)} frames), '
          f'{np.mean(outside):.3f} outside ({len(outside)} frames)')
    assert len(during) > 0.9 * len(failed)
    assert np.mean(during) < 0.2
    assert np.mean(outside) > 0.8
    # The other sensors stay trusted through the camera's failure.
    for sensor in ('lidar', 'gps'):
        j = SENSORS.index(sensor)
        assert np.mean([gates[s][j] for s in failed if s in gates]) > 0.5


def test_bev_quality_matches_the_offline_figure(live, truth, bag):
    from fusion_nodes.model.evaluate import evaluate_bag, load_model
    offline = evaluate_bag(load_model(MODEL), bag)
    online, frames = score_semantic(live.observer.semantic, truth)
    print(f'BEV mIoU live {online:.3f} over {frames} frames, offline {offline["miou"]:.3f} '
          f'over {offline["frames"]} frames')
    assert frames >= MIN_COVERAGE * len(truth.camera_stamps)
    assert online >= offline['miou'] - MIOU_TOLERANCE


def test_ego_is_joined_with_the_lidar_odometry(live, truth):
    """The bag's lidar is healthy throughout, so most fused frames carry its odometry, and
    the ego twist beats the network's own on this bag (make demo, 2026-12-05: RMSE 0.66
    joined, 0.89 with lidar_odometry off; 0.53 with the odometry's speed filter). Its
    covariance covers the vx errors (with the speed filter 84 % within two sigma, without it
    46 %)."""
    values = live.observer.diagnostics['fusion_nodes: fusion_node'][2]
    assert int(values['ego_with_lidar_odometry']) >= 0.8 * len(truth.camera_stamps)
    error, frames = score_ego(live.observer.ego, truth)
    print(f'ego RMSE live {error:.2f} over {frames} frames')
    assert frames >= MIN_COVERAGE * len(truth.camera_stamps)
    assert error < 0.8
    coverage = score_ego_calibration(live.observer.ego, live.observer.ego_variance, truth)
    print(f"ego vx within 1 / 2 sigma {coverage['within_1_sigma'][0]:.2f} / "
          f"{coverage['within_2_sigma'][0]:.2f}")
    assert coverage['frames'] == frames and coverage['within_2_sigma'][0] > 0.7


def test_diagnostics_name_the_failed_sensor(live):
    history = live.observer.diagnostic_history
    fusion_camera = [values.get('status') for _, name, _, _, values in history
                     if name == 'fusion_nodes: fusion/camera']
    camera_node = [level for _, name, level, _, _ in history if name == 'fusion_nodes: camera']
    print(f'fusion/camera statuses: {fusion_camera}; camera node levels: {camera_node}')
    assert 'DROPPED' in fusion_camera and 'OK' in fusion_camera
    assert 'OK' in camera_node and ('WARN' in camera_node or 'ERROR' in camera_node)
    for sensor in ('lidar', 'gps'):
        statuses = [values.get('status') for _, name, _, _, values in history
                    if name == f'fusion_nodes: fusion/{sensor}']
        active = [s for s in statuses if s != 'STALE']
        # Healthy sensors stay trusted nearly throughout. (The shipped model briefly distrusts
        # the demo's light lidar where walls stand close to the car: README, limitations.)
        assert active and active.count('OK') >= 0.8 * len(active)


def test_composed_stack_fuses_nearly_every_camera_frame(bag, truth, tmp_path):
    """The composed mode (one process, one executor) keeps up at camera rate too."""
    run = run_live(LiveRunConfig(bag=bag, composed=True), log_dir=tmp_path)
    assert run.nodes_alive_at_end, f'fusion_stack died; see {tmp_path}'
    fused = set(_gates_by_stamp(run))
    coverage = sum(1 for s in truth.camera_stamps if s in fused) / len(truth.camera_stamps)
    assert coverage >= MIN_COVERAGE, f'{coverage:.3f} of camera frames fused'
