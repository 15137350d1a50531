"""fusion-sim: simulate a scenario and write it as a rosbag2."""

import argparse
import sys

from rosbags.rosbag2 import WriterError

from fusion_nodes.sim.scenario import list_scenarios, load_scenario
from fusion_nodes.sim.writer import generate_bag, JPEG_QUALITY, STORAGES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='fusion-sim',
        description='Simulate a camera + lidar + GPS drive with ground truth, sensor failures '
                    'and clock faults, and write it as a rosbag2 (MCAP by default).',
        epilog='Scenarios: ' + ', '.join(list_scenarios()) + '. Ground truth is written under '
               '/gt/ (bev, objects, ego, capture_time, failures). The same scenario, seed and '
               'options always give a byte-identical bag.')
    parser.add_argument('scenario', help='catalogue scenario name or path to a scenario .yaml')
    parser.add_argument('--seed', type=int, default=None,
                        help="world seed (default: the first seed of the scenario's test split)")
    parser.add_argument('--duration', type=float, default=None,
                        help="seconds to simulate (default: the scenario's duration_s)")
    parser.add_argument('--output', '-o', default=None,
                        help='output bag directory, must not exist (default: '
                             '<scenario>_seed<seed>)')
    parser.add_argument('--storage', choices=sorted(STORAGES), default='mcap',
                        help='rosbag2 storage plugin (default: mcap, zstd-compressed chunks)')
    parser.add_argument('--compressed', action='store_true',
                        help='write /camera/image_raw/compressed (JPEG) instead of raw rgb8 '
                             '/camera/image_raw')
    parser.add_argument('--jpeg-quality', type=int, default=JPEG_QUALITY,
                        help=f'JPEG quality with --compressed (default {JPEG_QUALITY})')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        scenario = load_scenario(args.scenario)
        seed = args.seed if args.seed is not None else scenario.seeds['test'][0]
        output = args.output or f'{scenario.name}_seed{seed}'
        path = generate_bag(scenario, seed, output, duration_s=args.duration,
                            storage=args.storage, compressed_camera=args.compressed,
                            progress=not args.no_progress, jpeg_quality=args.jpeg_quality)
    except (ValueError, WriterError) as error:
        print(f'fusion-sim: error: {error}', file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
