"""`make demo`: the shipped bag through the live nodes, as separate processes over DDS.

It starts the node set (fusion-bringup), replays bags/<demo> in real time (fusion-replay)
and watches from a third process: the fused output rate, the end-to-end latency (a camera
frame's arrival here to its fused output's arrival here, both on this process's clock), the
per-sensor gates over time and /diagnostics. It scores the fused semantic grid and ego velocity
against the bag's /gt, and ends by writing a picture of overlay frames and the gate timeline.
"""

import argparse
from pathlib import Path
import sys

from fusion_nodes.tools.live_run import (
    bag_camera_transport, find_demo_bag, LiveRunConfig, ROOT, run_live, StackDidNotStart)

# What the shipped bag's robot sets differently from config/fusion.yaml (its lighter lidar).
DEMO_OVERLAY = 'demo_bag.yaml'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--bag', type=Path, help='rosbag2 directory (default: the shipped one)')
    parser.add_argument('--out', type=Path, default=ROOT / 'out' / 'demo')
    parser.add_argument('--backend', default='onnxruntime')
    parser.add_argument('--model', default='', help="metadata JSON ('' = the shipped model)")
    parser.add_argument('--rate', type=float, default=1.0, help='replay rate factor')
    parser.add_argument('--params-overlay', type=Path,
                        help='values over config/fusion.yaml for the robot that recorded the '
                             'bag (default: config/demo_bag.yaml with the shipped bag, none '
                             "with --bag; '' for none)")
    args = parser.parse_args(argv)

    from fusion_nodes.tools.bag_truth import (
        load_bag_truth, score_ego, score_ego_calibration, score_semantic)
    from fusion_nodes.tools.node_set import default_params_file
    from fusion_nodes.tools.observer import write_report_picture
    from fusion_nodes.tools.params_overlay import merged_parameters, write_parameters

    bag = args.bag or find_demo_bag()
    overlay = args.params_overlay
    if overlay is None and args.bag is None:
        overlay = ROOT / 'config' / DEMO_OVERLAY
    params_file = None
    if overlay is not None and str(overlay) not in ('', '.'):
        try:
            merged = merged_parameters(default_params_file(), overlay)
        except ValueError as error:
            print(f'demo: {error}', file=sys.stderr)
            return 2
        params_file = write_parameters(merged, args.out / 'params.yaml')
    print(f'demo: bag {bag} (camera {bag_camera_transport(bag)}), backend {args.backend}, '
          f"parameters {params_file or default_params_file()} (overlay {overlay or 'none'}), "
          f'logs in {args.out}', flush=True)
    try:
        run = run_live(LiveRunConfig(bag=bag, backend=args.backend, model=args.model,
                                     rate=args.rate, params_file=params_file),
                       log_dir=args.out)
    except StackDidNotStart as error:
        print(f'demo: {error}', file=sys.stderr)
        return 1
    replay_log = (args.out / 'replay.log').read_text(errors='replace').splitlines()
    print('\n'.join(line for line in replay_log if not line.startswith('[')))
    report = run.observer.report()
    print(report.text())
    truth = load_bag_truth(bag)
    miou, frames = score_semantic(run.observer.semantic, truth)
    print(f'fused BEV semantic grid against /gt: mIoU {miou:.3f} over {frames} frames')
    ego_rmse, frames = score_ego(run.observer.ego, truth)
    node_values = run.observer.diagnostics.get('fusion_nodes: fusion_node', ('', '', {}))[2]
    print(f'fused ego velocity against /gt: RMSE {ego_rmse:.2f} (m/s, rad/s) over {frames} '
          f"frames, {node_values.get('ego_with_lidar_odometry', '?')} joined with the lidar "
          'odometry')
    coverage = score_ego_calibration(run.observer.ego, run.observer.ego_variance, truth)
    if coverage['frames']:
        print('fused ego covariance against /gt (honest: 0.68 / 0.95): vx errors within 1 / 2 '
              f"sigma {coverage['within_1_sigma'][0]:.2f} / {coverage['within_2_sigma'][0]:.2f}"
              f", yaw rate {coverage['within_1_sigma'][2]:.2f} / "
              f"{coverage['within_2_sigma'][2]:.2f}, over {coverage['frames']} frames")
    picture = write_report_picture(run.observer, args.out / 'demo.png')
    print(f'demo: picture of overlay frames and the gate timeline written to {picture}')
    if not run.nodes_alive_at_end:
        print(f'demo: a node died (exit codes {run.node_returncodes}); see {args.out}',
              file=sys.stderr)
        return 1
    return 0 if run.replay_returncode == 0 and report.fused_frames > 0 else 1


if __name__ == '__main__':
    sys.exit(main())
