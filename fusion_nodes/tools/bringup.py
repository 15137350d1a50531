"""fusion-bringup: start the fusion node set from config/fusion.yaml without `launch`.

It runs the same executables with the same names, parameters and remappings as
launch/fusion.launch.py (both read fusion_nodes.tools.node_set), each as its own process
on loopback DDS, and stops them all on Ctrl-C, SIGTERM, or when one of them dies.
"""

import argparse
from dataclasses import dataclass
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

from fusion_nodes.tools import dds_env
from fusion_nodes.tools.node_set import (
    default_params_file, node_specs, NodeSpec, ros_arguments, stack_arguments, STACK_SPEC,
    StackOptions)


@dataclass
class RunningNode:
    spec: NodeSpec
    process: subprocess.Popen


def stop_process(process: subprocess.Popen, timeout_s: float = 10.0) -> int | None:
    """SIGTERM a child that is still running, SIGKILL it if it ignores that; its exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class Stack:
    """A running node set; stop() ends every process (SIGINT, then SIGTERM, then SIGKILL)."""

    def __init__(self, nodes: list[RunningNode]) -> None:
        self.nodes = nodes

    def failed(self) -> list[RunningNode]:
        return [n for n in self.nodes if n.process.poll() not in (None, 0)]

    def alive(self) -> bool:
        return all(n.process.poll() is None for n in self.nodes)

    def stop(self, timeout_s: float = 10.0) -> dict[str, int]:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            for node in self.nodes:
                if node.process.poll() is None:
                    node.process.send_signal(sig)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and not all(
                    n.process.poll() is not None for n in self.nodes):
                time.sleep(0.05)
            if all(n.process.poll() is not None for n in self.nodes):
                break
        return {n.spec.name: n.process.returncode for n in self.nodes}


def node_commands(options: StackOptions, params_file: Path | None = None,
                  only: tuple[str, ...] | None = None,
                  composed: bool = False) -> list[tuple[NodeSpec, list[str]]]:
    """The command line of each node process (one, fusion_stack, when composed)."""
    params_file = Path(params_file) if params_file else default_params_file()
    if composed:
        if only is not None:
            raise ValueError('a node subset and the composed mode exclude each other')
        return [(STACK_SPEC, [sys.executable, '-m', STACK_SPEC.module,
                              *stack_arguments(options, params_file)])]
    return [(spec, [sys.executable, '-m', spec.module, *ros_arguments(spec, params_file)])
            for spec in node_specs(options) if only is None or spec.name in only]


def start_stack(options: StackOptions, params_file: Path | None = None,
                only: tuple[str, ...] | None = None, log_dir: Path | None = None,
                composed: bool = False) -> Stack:
    """Start the node set (or the nodes named in only) as separate processes, or composed."""
    env = dds_env.isolated_env(os.environ)
    nodes = []
    for spec, command in node_commands(options, params_file, only, composed):
        output = (open(log_dir / f'{spec.name}.log', 'w') if log_dir else None)
        process = subprocess.Popen(command, env=env, stdout=output,
                                   stderr=subprocess.STDOUT if output else None)
        nodes.append(RunningNode(spec, process))
    return Stack(nodes)


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--params-file', type=Path, help='default: config/fusion.yaml')
    parser.add_argument('--backend', default='onnxruntime')
    parser.add_argument('--model', default='', help="metadata JSON ('' = shipped model)")
    parser.add_argument('--camera-topic', default='/camera/image_raw')
    parser.add_argument('--camera-transport', choices=('raw', 'compressed'), default='raw')
    parser.add_argument('--lidar-topic', default='/lidar/points')
    parser.add_argument('--gps-topic', default='/gps/fix')
    parser.add_argument('--use-sim-time', action='store_true')
    parser.add_argument('--no-overlay', action='store_true')
    parser.add_argument('--nodes', help='comma-separated subset, e.g. camera_node,lidar_node')
    parser.add_argument('--composed', action='store_true',
                        help='every node in one process (fusion_stack), as composed:=true')
    parser.add_argument('--log-dir', type=Path, help='write each node log to DIR/<node>.log')
    return parser


def options_from_args(args: argparse.Namespace) -> StackOptions:
    return StackOptions(backend=args.backend, model=args.model, camera_topic=args.camera_topic,
                        camera_transport=args.camera_transport, lidar_topic=args.lidar_topic,
                        gps_topic=args.gps_topic, use_sim_time=args.use_sim_time,
                        enable_overlay=not args.no_overlay)


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    if args.log_dir:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    only = tuple(args.nodes.split(',')) if args.nodes else None
    try:
        stack = start_stack(options_from_args(args), args.params_file, only, args.log_dir,
                            args.composed)
    except ValueError as error:  # e.g. --nodes with --composed
        print(f'fusion-bringup: {error}', file=sys.stderr)
        return 2
    stopping = False

    def _stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stopping and stack.alive():
        time.sleep(0.2)
    failed = stack.failed()
    codes = stack.stop()
    for node in failed:
        print(f'fusion-bringup: {node.spec.name} exited with {node.process.returncode}',
              file=sys.stderr)
    return 1 if failed else 0 if all(c in (0, -2, -15) for c in codes.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
