"""`make demo`: the shipped bag through the live nodes, as separate processes over DDS.

It starts the node set (fusion-bringup), replays bags/<demo> in real time (fusion-replay)
and watches from a third process: the fused output rate, the end-to-end latency (a camera
frame's arrival here to its fused output's arrival here, both on this process's clock), the
per-sensor gates over time and /diagnostics. It ends by writing a picture of overlay frames
and the gate timeline, and says where.
"""

import argparse
from pathlib import Path
import subprocess
import sys
import time

from fusion_nodes.tools import dds_env

ROOT = Path(__file__).resolve().parents[2]


def find_demo_bag() -> Path:
    """The bag directory under bags/ (the one holding metadata.yaml)."""
    bags = sorted(p.parent for p in (ROOT / 'bags').glob('*/metadata.yaml'))
    if not bags:
        raise FileNotFoundError(f'no rosbag2 directory with metadata.yaml under {ROOT / "bags"}')
    return bags[0]


def bag_camera_transport(bag: Path) -> str:
    """compressed when the bag carries CompressedImage frames, else raw."""
    text = (bag / 'metadata.yaml').read_text()
    return 'compressed' if '/camera/image_raw/compressed' in text else 'raw'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--bag', type=Path, help='rosbag2 directory (default: the shipped one)')
    parser.add_argument('--out', type=Path, default=ROOT / 'out' / 'demo')
    parser.add_argument('--backend', default='onnxruntime')
    parser.add_argument('--rate', type=float, default=1.0, help='replay rate factor')
    args = parser.parse_args(argv)

    dds_env.apply_to_current_process()
    import rclpy
    from fusion_nodes.tools.bringup import start_stack
    from fusion_nodes.tools.node_set import StackOptions
    from fusion_nodes.tools.observer import FusionObserver, write_report_picture

    bag = args.bag or find_demo_bag()
    args.out.mkdir(parents=True, exist_ok=True)
    transport = bag_camera_transport(bag)
    print(f'demo: bag {bag} (camera {transport}), backend {args.backend}, logs in {args.out}')
    stack = start_stack(StackOptions(backend=args.backend, camera_transport=transport),
                        log_dir=args.out)
    rclpy.init()
    observer = FusionObserver(camera_transport=transport)
    replay = None
    try:
        if not observer.wait_for_outputs(stack, timeout_s=60.0):
            print('demo: the nodes did not come up; see the logs in', args.out, file=sys.stderr)
            return 1
        replay = subprocess.Popen(
            [sys.executable, '-m', 'fusion_nodes.tools.replay', str(bag), '--rate',
             str(args.rate)], env=dds_env.isolated_env())
        while replay.poll() is None:
            rclpy.spin_once(observer, timeout_sec=0.05)
            if not stack.alive():
                print('demo: a node died; see the logs in', args.out, file=sys.stderr)
                return 1
        settle = time.monotonic() + 1.5
        while time.monotonic() < settle:
            rclpy.spin_once(observer, timeout_sec=0.05)
        report = observer.report()
        print(report.text())
        picture = write_report_picture(observer, args.out / 'demo.png')
        print(f'demo: picture of overlay frames and the gate timeline written to {picture}')
        return 0 if replay.returncode == 0 and report.fused_frames > 0 else 1
    finally:
        if replay is not None and replay.poll() is None:
            replay.terminate()
        observer.destroy_node()
        rclpy.try_shutdown()
        stack.stop()


if __name__ == '__main__':
    sys.exit(main())
