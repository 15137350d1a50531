"""fusion-eval: gated fusion against single modalities, ungated and late fusion, per scenario.

Every method runs on the same test samples (the test seeds of each catalogue scenario):
- gated: the product: the shipped model, with a sensor whose own node says ERROR (its health,
  or the camera's and lidar's mount checks) fused as missing (fusion_node's
  drop_sensor_on_error); its gates are the published ones (0 there);
- camera only / lidar only: the shipped model with the other sensors missing (zero input,
  availability 0), i.e. what it does from that sensor alone;
- ungated: the same architecture trained the same way but with every gate pinned to the
  availability bit (1 whenever the sensor delivered) and no gate supervision;
- gates open: the shipped model itself with every gate pinned to the availability bit and no
  sensor dropped for ERROR, i.e. what its gates are worth to it (an ablation of the same
  weights, where ungated is a separately trained baseline);
- late fusion: the shipped model's single-sensor BEV heads averaged in probability, with ego
  velocity from the GPS branch alone.
"""

import argparse
import json
from pathlib import Path
import sys
from typing import Iterator

import numpy as np
import torch

from fusion_nodes.core.config import NS_PER_S, SEMANTIC_CLASSES, SENSORS
from fusion_nodes.core.lidar_odometry import ODOMETRY_FIELDS
from fusion_nodes.core.yaw_blame import YawBlameConfig
from fusion_nodes.model import dataset
from fusion_nodes.model.export import json_finite, load_trained_model
from fusion_nodes.model.features import camera_preprocess_config
from fusion_nodes.model.metrics import (
    confusion, ego_calibration, gate_means, mean_iou, object_hits, rmse)
from fusion_nodes.model.network import GatedFusionNet
from fusion_nodes.model.predict import (
    camera_mount_errors, lidar_mount_replay, LidarReplay, predict, with_lidar_odometry,
    with_yaw_blame, without_errors, without_multipath_gps)
from fusion_nodes.nodes.params import FUSION_PARAMS, sensor_params_in_force
from fusion_nodes.sim.scenario import load_scenario

METHODS = ('gated', 'camera_only', 'lidar_only', 'ungated', 'gates_open', 'late_fusion')
# Fusion without its gates: each is judged for negative transfer against the gated model.
UNGATED = ('ungated', 'gates_open')
SINGLE = {'camera_only': 'camera', 'lidar_only': 'lidar'}
GATE_FAILED_MAX = 0.2
GATE_HEALTHY_MIN = 0.8


def load_model(metadata_path: Path) -> GatedFusionNet:
    """The eval-mode torch model a metadata JSON describes, its files checked against their
    sha256 (export.load_trained_model)."""
    return load_trained_model(Path(metadata_path))[0]


def _scores(bev_pred: np.ndarray, ego_pred: np.ndarray, samples: dict) -> dict[str, float]:
    matrix = confusion(bev_pred, samples['bev'], len(SEMANTIC_CLASSES))
    correct = total = 0
    for pred, truth in zip(bev_pred, samples['bev']):
        c, t = object_hits(pred, truth)
        correct += c
        total += t
    return {'miou': mean_iou(matrix),
            'object_accuracy': correct / total if total else float('nan'),
            'ego_rmse': rmse(ego_pred, samples['ego'])}


def product_samples(samples: dict[str, np.ndarray], model: GatedFusionNet,
                    node_params: dict | None = None) -> dict[str, np.ndarray]:
    """samples as fusion_node fuses them: every sensor its node puts in ERROR made missing,
    mount checks included, and the sensor it blames for a camera-lidar yaw disagreement,
    where the nodes' parameters (defaults, or node_params over them) turn those on."""
    return _product(samples, model, node_params)[0]


def product_predict(samples: dict[str, np.ndarray], model: GatedFusionNet,
                    node_params: dict | None = None) -> dict[str, np.ndarray]:
    """predict() on product_samples, with ego joined with the lidar odometry as fusion_node
    joins them (lidar_odometry on, and the lidar kept in that frame)."""
    product, replay, fusion_params = _product(samples, model, node_params)
    out = predict(model, product)
    if replay is not None and fusion_params['lidar_odometry']:
        kept = product['available'][:, SENSORS.index('lidar')] > 0
        velocity, variance = with_lidar_odometry(
            out['ego'], out['ego_log_variance'], replay.odometry_velocity,
            replay.odometry_variance, kept)
        out['ego'] = velocity.astype(np.float32)
        out['ego_log_variance'] = np.log(variance).astype(np.float32)
    return out


def _product(samples: dict[str, np.ndarray], model: GatedFusionNet,
             node_params: dict | None) -> tuple[dict[str, np.ndarray], LidarReplay | None, dict]:
    """(product samples, the lidar node's replayed mount check or None, fusion params)."""
    camera_params = sensor_params_in_force('camera_node', node_params)
    lidar_params = sensor_params_in_force('lidar_node', node_params)
    fusion_params = {**FUSION_PARAMS, **(node_params or {}).get('fusion_node', {})}
    # One replay of the lidar check serves its ERROR, the yaw blame and the odometry.
    replay = lidar_mount_replay(samples, model.grid) if lidar_params['mount_check'] else None
    camera_errors = (camera_mount_errors(samples, camera_preprocess_config(camera_params))
                     if camera_params['mount_check'] else None)
    product = without_errors(samples, None if replay is None else replay.errors,
                             camera_errors)
    if replay is None:
        return product, replay, fusion_params
    if fusion_params['yaw_blame'] and model.cfg.yaw_disagreement:
        cfg = YawBlameConfig(float(fusion_params['yaw_blame_steady_deg']),
                             float(fusion_params['yaw_blame_turned_deg']))
        product = with_yaw_blame(product, model, replay.travel_headings, cfg)
    if fusion_params['lidar_odometry'] and fusion_params['drop_gps_on_multipath']:
        # After the blame: the odometry must come from a lidar the frame keeps. The yaw
        # check reads camera and lidar alone, so dropping the GPS after it changes nothing.
        product = without_multipath_gps(product, replay.odometry_velocity)
    return product, replay, fusion_params


def evaluate_scenario(gated: GatedFusionNet, ungated: GatedFusionNet,
                      samples: dict[str, np.ndarray]) -> dict:
    """Scores of every method, gate statistics and the gate timeline of one scenario."""
    product = product_predict(samples, gated)
    full = predict(gated, samples)
    runs = {
        'gated': (product['bev'], product['ego']),
        'late_fusion': (full['late'], full['late_ego']),
    }
    for method, sensor in SINGLE.items():
        out = predict(gated, samples, keep=(sensor,))
        runs[method] = (out['bev'], out['ego'])
    plain = predict(ungated, samples)
    runs['ungated'] = (plain['bev'], plain['ego'])
    opened = predict(gated, samples, open_gates=True)
    runs['gates_open'] = (opened['bev'], opened['ego'])
    first = samples['recording'] == samples['recording'][0]
    in_failure = samples['failed'].any(axis=1)
    failure_scores = None
    if in_failure.any():
        subset = {key: samples[key][in_failure] for key in ('bev', 'ego')}
        failure_scores = {m: _scores(runs[m][0][in_failure], runs[m][1][in_failure], subset)
                          for m in METHODS}
    return {
        'frames': int(samples['camera'].shape[0]),
        'failure_frames': int(in_failure.sum()),
        'failed_fraction': {s: float(samples['failed'][:, k].mean())
                            for k, s in enumerate(SENSORS)},
        'methods': {m: _scores(*runs[m], samples) for m in METHODS},
        'ego_calibration': ego_calibration(product['ego'], product['ego_log_variance'],
                                           samples['ego']),
        'methods_in_failure': failure_scores,
        'gates': gate_means(product['gates'], samples['failed'], samples['available'],
                            SENSORS),
        'timeline': {
            't_s': ((samples['capture_ns'][first] - samples['capture_ns'][first][0])
                    / NS_PER_S).tolist(),
            'gates': product['gates'][first].tolist(),
            'failed': samples['failed'][first].tolist(),
            'available': samples['available'][first].tolist(),
        },
    }


def evaluate_bag(model: GatedFusionNet, bag: Path, camera_stride: int = 1,
                 node_params: dict | None = None) -> dict:
    """The gated model on one bag, offline: mIoU overall, healthy and failed, and gates.

    This is the figure a live replay of the same bag is held to: the same model and the same
    node preprocessing (node_params: the robot's values over the node defaults), but sensors
    paired in true capture time instead of by the aligner.
    """
    from fusion_nodes.model.bag_samples import extract_bag_samples, PairingConfig
    samples = extract_bag_samples(Path(bag), PairingConfig(camera_stride=camera_stride),
                                  node_params=node_params)
    out = product_predict(samples, model, node_params)
    in_failure = samples['failed'].any(axis=1)

    def miou(mask: np.ndarray) -> float:
        if not mask.any():
            return float('nan')
        matrix = confusion(out['bev'][mask], samples['bev'][mask], len(SEMANTIC_CLASSES))
        return mean_iou(matrix)
    return {'frames': int(in_failure.size), 'miou': miou(np.ones_like(in_failure)),
            'miou_healthy': miou(~in_failure), 'miou_failed': miou(in_failure),
            'gates': gate_means(out['gates'], samples['failed'], samples['available'],
                                SENSORS)}


def failed_sensors(result: dict) -> list[str]:
    return [s for s, f in result['failed_fraction'].items() if f > 0.0]


def single_failures(results: dict[str, dict]) -> Iterator[tuple[str, dict, str]]:
    """(name, result, failed sensor) of each scenario where exactly one sensor fails."""
    for name, result in results.items():
        failed = failed_sensors(result)
        if len(failed) == 1:
            yield name, result, failed[0]


def acceptance(results: dict[str, dict]) -> dict:
    """The issue's acceptance checks, each with the figures it was decided on."""
    checks = {}
    if 'nominal' in results:
        m = results['nominal']['methods']
        others = {k: m[k]['miou'] for k in ('camera_only', 'lidar_only', 'ungated')}
        checks['nominal_gated_beats_all'] = {
            'pass': all(m['gated']['miou'] > v for v in others.values()),
            'gated': m['gated']['miou'], 'others': others}
    transfer = {}
    for name, result, failed in single_failures(results):
        # Judged while the sensor is failed: that is where negative transfer can happen; over
        # the whole run the healthy half would flatter any fusion.
        m = result['methods_in_failure']
        healthy_single = {k: m[k]['miou'] for k, s in SINGLE.items() if s != failed}
        best = max(healthy_single.values())
        transfer[name] = {'failed': failed, 'best_single': best,
                          'gated': m['gated']['miou'], 'gated_ok': m['gated']['miou'] >= best}
        for method in UNGATED:
            transfer[name][method] = m[method]['miou']
            transfer[name][f'{method}_below'] = m[method]['miou'] < best
    checks['no_negative_transfer'] = {
        'pass': bool(transfer) and all(t['gated_ok'] for t in transfer.values()),
        'scenarios': transfer}
    for method in UNGATED:
        below = [n for n, t in transfer.items() if t[f'{method}_below']]
        checks[f'{method}_negative_transfer_somewhere'] = {'pass': bool(below),
                                                           'scenarios': below}
    pooled = {}
    for k, sensor in enumerate(SENSORS):
        healthy_sum = failed_sum = 0.0
        healthy_n = failed_n = 0
        for result in results.values():
            g = result['gates'][sensor]
            if g['healthy_frames']:
                healthy_sum += g['healthy'] * g['healthy_frames']
                healthy_n += g['healthy_frames']
            if g['failed_frames']:
                failed_sum += g['failed'] * g['failed_frames']
                failed_n += g['failed_frames']
        pooled[sensor] = {'healthy': healthy_sum / healthy_n if healthy_n else float('nan'),
                          'failed': failed_sum / failed_n if failed_n else float('nan'),
                          'healthy_frames': healthy_n, 'failed_frames': failed_n}
    checks['gates'] = {
        'pass': all((v['failed_frames'] == 0 or v['failed'] < GATE_FAILED_MAX)
                    and (v['healthy_frames'] == 0 or v['healthy'] > GATE_HEALTHY_MIN)
                    for v in pooled.values()),
        'per_sensor': pooled}
    checks['gates_single_failure'] = _single_failure_gates(results)
    return checks


def _single_failure_gates(results: dict[str, dict]) -> dict:
    """The gate targets in each scenario where exactly one sensor fails, as the transfer check.

    A sensor that delivered nothing while failed has no failed frames: its gate was 0 by
    availability, which passes.
    """
    scenarios = {}
    for name, result, failed in single_failures(results):
        gates = result['gates']
        bad = gates[failed]
        others = {s: g['healthy'] for s, g in gates.items()
                  if s != failed and g['healthy_frames']}
        scenarios[name] = {
            'failed': failed, 'failed_gate': bad['failed'],
            'failed_frames': bad['failed_frames'], 'healthy_gates': others,
            'pass': (bad['failed_frames'] == 0 or bad['failed'] < GATE_FAILED_MAX)
            and all(v > GATE_HEALTHY_MIN for v in others.values())}
    return {'pass': bool(scenarios) and all(v['pass'] for v in scenarios.values()),
            'scenarios': scenarios}


def _method_table(results: dict[str, dict], key: str) -> list[str]:
    lines = ['| scenario | failed | frames | ' + ' | '.join(METHODS) + ' |',
             '|---|---|---|' + '---|' * len(METHODS)]
    for name, result in results.items():
        m = result[key]
        if m is None:
            continue
        frames = result['frames'] if key == 'methods' else result['failure_frames']
        cells = [f"{m[k]['miou']:.3f} / {m[k]['object_accuracy']:.2f} / {m[k]['ego_rmse']:.2f}"
                 for k in METHODS]
        lines.append(f"| {name} | {', '.join(failed_sensors(result)) or '-'} | {frames} | "
                     + ' | '.join(cells) + ' |')
    return lines


def markdown(results: dict[str, dict], checks: dict) -> str:
    """The results tables (all frames; failure windows only), gate table, ego calibration,
    acceptance."""
    lines = ['All frames:', ''] + _method_table(results, 'methods')
    lines += ['', 'Only frames inside a failure window:', '']
    lines += _method_table(results, 'methods_in_failure')
    lines += ['', 'Cells: BEV mIoU / object class accuracy / ego-velocity RMSE (m/s, rad/s).',
              '', '| scenario | ' + ' | '.join(f'{s} gate healthy / failed' for s in SENSORS)
              + ' |', '|---|' + '---|' * len(SENSORS)]

    def fmt(value: float) -> str:
        return '-' if value != value else f'{value:.2f}'
    for name, result in results.items():
        g = result['gates']
        lines.append(f'| {name} | ' + ' | '.join(
            f"{fmt(g[s]['healthy'])} / {fmt(g[s]['failed'])}" for s in SENSORS) + ' |')
    lines += _ego_calibration_table(results)
    held_out = [name for name, result in results.items() if result.get('held_out')]
    if held_out:
        lines += ['', 'Held out of training (a failure kind no training scenario contains): '
                  + ', '.join(held_out) + '.']
    lines.append('')
    for check, value in checks.items():
        lines.append(f"- {check}: {'PASS' if value['pass'] else 'MISS'}")
    return '\n'.join(lines) + '\n'


def _ego_calibration_table(results: dict[str, dict]) -> list[str]:
    """The gated ego's errors against its published variance, per scenario and pooled."""
    rows = [(name, r['ego_calibration']) for name, r in results.items()
            if r.get('ego_calibration', {}).get('frames')]
    if not rows:
        return []
    frames = np.array([c['frames'] for _, c in rows], dtype=np.float64)
    pooled = {key: (np.array([c[key] for _, c in rows]) * frames[:, None]).sum(0) / frames.sum()
              for key in ('within_1_sigma', 'within_2_sigma', 'mean_z2')}
    lines = ['', 'Gated ego against its published variance (honest and Gaussian: 0.68 / 0.95 '
             'within 1 / 2 sigma, mean z^2 1):', '',
             '| scenario | ' + ' | '.join(f'{c} within 1 / 2 sigma, mean z^2'
                                          for c in ODOMETRY_FIELDS) + ' |',
             '|---|' + '---|' * len(ODOMETRY_FIELDS)]
    for name, c in rows + [('pooled', pooled)]:
        lines.append(f'| {name} | ' + ' | '.join(
            f"{c['within_1_sigma'][k]:.2f} / {c['within_2_sigma'][k]:.2f}, {c['mean_z2'][k]:.2f}"
            for k in range(len(ODOMETRY_FIELDS))) + ' |')
    return lines


def plot_timelines(results: dict[str, dict], path: Path) -> None:
    """Gate per sensor over time, with failure windows shaded, one panel per scenario."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = [n for n in results if failed_sensors(results[n])] or list(results)
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 1.7 * len(names)), sharex=True,
                             squeeze=False)
    colours = {'camera': 'tab:orange', 'lidar': 'tab:blue', 'gps': 'tab:green'}
    for ax, name in zip(axes[:, 0], names):
        timeline = results[name]['timeline']
        t = np.asarray(timeline['t_s'])
        gates = np.asarray(timeline['gates'])
        failed = np.asarray(timeline['failed'])
        for k, sensor in enumerate(SENSORS):
            ax.plot(t, gates[:, k], color=colours[sensor], label=sensor, lw=1.2)
            ax.fill_between(t, 0, 1, where=failed[:, k] > 0, color=colours[sensor],
                            alpha=0.15, step='mid')
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel('gate')
        ax.set_title(name, fontsize=9, loc='left')
    axes[0, 0].legend(loc='lower right', fontsize=8, ncol=3)
    axes[-1, 0].set_xlabel('time (s); shaded: the sensor is failed (ground truth)')
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _by_scenario(items: list[dataset.Recording]) -> dict[str, list[dataset.Recording]]:
    groups: dict[str, list[dataset.Recording]] = {}
    for recording in items:
        groups.setdefault(recording.scenario, []).append(recording)
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', type=Path, default=Path('models/gated_fusion.json'))
    parser.add_argument('--ungated', type=Path,
                        default=Path('data/models/ungated_fusion.json'),
                        help='made by: fusion-train --variant ungated')
    parser.add_argument('--data-dir', type=Path, default=Path('data'))
    parser.add_argument('--duration', type=float, default=dataset.DataSpec.duration_s)
    parser.add_argument('--seeds', type=int, default=2, help='test seeds per scenario')
    parser.add_argument('--scenarios', nargs='*', help='default: the whole catalogue')
    parser.add_argument('--out', type=Path, default=Path('data/eval'),
                        help='directory for eval.md and gate_timeline.png')
    parser.add_argument('--json', type=Path, nargs='?', const=Path('-'), default=None,
                        help='also write the figures as JSON (to stdout with no path)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--bag', type=Path,
                        help='score the gated model on this one generator bag instead')
    parser.add_argument('--params-overlay', type=Path,
                        help='with --bag: node parameters over config/fusion.yaml for the '
                             'robot that recorded it, e.g. config/demo_bag.yaml')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.bag is not None:
        node_params = None
        if args.params_overlay is not None:
            from fusion_nodes.tools.node_set import default_params_file
            from fusion_nodes.tools.params_overlay import merged_parameters
            node_params = merged_parameters(default_params_file(), args.params_overlay)
        result = evaluate_bag(load_model(args.model), args.bag, node_params=node_params)
        print(json.dumps(json_finite(result), indent=2))
        return 0
    gated, ungated = load_model(args.model), load_model(args.ungated)
    spec = dataset.DataSpec(data_dir=args.data_dir, duration_s=args.duration,
                            seeds_per_scenario={'train': 1, 'test': args.seeds})
    items = dataset.prepare('test', spec, args.scenarios)
    results = {}
    for name, group in _by_scenario(items).items():
        results[name] = evaluate_scenario(gated, ungated, dataset.load_samples(group))
        results[name]['held_out'] = load_scenario(name).held_out
    checks = acceptance(results)
    table = markdown(results, checks)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / 'eval.md').write_text(table)
    plot_timelines(results, args.out / 'gate_timeline.png')
    print(table)
    if args.json is not None:
        report = {'results': {n: {k: v for k, v in r.items() if k != 'timeline'}
                              for n, r in results.items()},
                  'acceptance': checks,
                  'test_seeds': {r.scenario: [] for r in items}}
        for r in items:
            report['test_seeds'][r.scenario].append(r.seed)
        text = json.dumps(report, indent=2)
        if str(args.json) == '-':
            print(text)
        else:
            args.json.write_text(text + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
