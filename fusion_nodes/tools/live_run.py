"""One live run: the node set as separate processes, a bag replayed into it, an observer.

`make demo`, the replay and fault tests, the soak and the end-to-end benchmark all run the
product this way: fusion-bringup's processes on loopback DDS, fusion-replay in its own
process, and a FusionObserver in this one.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
import subprocess
import sys
import time

from fusion_nodes.tools import dds_env
from fusion_nodes.tools.node_set import StackOptions

ROOT = Path(__file__).resolve().parents[2]


def find_demo_bag() -> Path:
    """The bag directory under bags/ (the one holding metadata.yaml)."""
    bags = sorted(p.parent for p in (ROOT / 'bags').glob('*/metadata.yaml'))
    if not bags:
        raise FileNotFoundError(f'no rosbag2 directory with metadata.yaml under {ROOT / "bags"}')
    return bags[0]


def sensor_input_subscribers(bag: Path, camera_transport: str,
                             enable_overlay: bool) -> list[str]:
    """fusion-replay --wait-for values: the bag's sensor topics with their live subscribers.

    The camera is watched by the observer and camera_node, and by fusion_node for the
    overlay; lidar and GPS by their nodes alone.
    """
    from fusion_nodes.sim.writer import (
        TOPIC_GPS, TOPIC_IMAGE, TOPIC_IMAGE_COMPRESSED, TOPIC_LIDAR)
    from fusion_nodes.tools.bagio import bag_info
    camera = TOPIC_IMAGE_COMPRESSED if camera_transport == 'compressed' else TOPIC_IMAGE
    present = set(bag_info(bag).topics)
    wanted = ((camera, 3 if enable_overlay else 2), (TOPIC_LIDAR, 1), (TOPIC_GPS, 1))
    return [f'{topic}={count}' for topic, count in wanted if topic in present]


def bag_camera_transport(bag: Path) -> str:
    """compressed when the bag carries CompressedImage frames, else raw."""
    text = (Path(bag) / 'metadata.yaml').read_text()
    return 'compressed' if '/camera/image_raw/compressed' in text else 'raw'


@dataclass(frozen=True)
class LiveRunConfig:
    """What to run: the bag, the stack options, and how to replay it."""

    bag: Path
    backend: str = 'onnxruntime'
    model: str = ''
    enable_overlay: bool = True
    rate: float = 1.0
    loop: bool = False
    duration_s: float | None = None
    replay_args: tuple[str, ...] = ()
    settle_s: float = 1.5
    startup_timeout_s: float = 60.0
    subscriber_wait_s: float = 15.0
    params_file: Path | None = None
    composed: bool = False


@dataclass
class LiveRun:
    """What came out: the observer (still holding every message), exit codes and timing."""

    observer: object
    replay_returncode: int | None
    node_returncodes: dict[str, int | None]
    nodes_alive_at_end: bool
    wall_s: float
    node_pids: dict[str, int] = field(default_factory=dict)


class StackDidNotStart(RuntimeError):
    """A node died or never wired up its topics."""


def run_live(config: LiveRunConfig, log_dir: Path,
             on_tick: Callable[[object, object, float], None] | None = None) -> LiveRun:
    """Start the stack, replay the bag, spin the observer until replay ends, stop everything.

    on_tick(observer, stack, elapsed_s), when given, is called about every 20 ms (the soak
    samples memory there). rclpy is initialised and shut down here.
    """
    dds_env.apply_to_current_process()
    import rclpy
    from fusion_nodes.tools.bringup import start_stack, stop_process
    from fusion_nodes.tools.observer import FusionObserver

    log_dir.mkdir(parents=True, exist_ok=True)
    transport = bag_camera_transport(config.bag)
    stack = start_stack(StackOptions(backend=config.backend, model=config.model,
                                     camera_transport=transport,
                                     enable_overlay=config.enable_overlay),
                        params_file=config.params_file, log_dir=log_dir,
                        composed=config.composed)
    rclpy.init()
    observer = FusionObserver(camera_transport=transport)
    replay = None
    try:
        if not observer.wait_for_outputs(stack, timeout_s=config.startup_timeout_s):
            codes = {n.spec.name: n.process.poll() for n in stack.nodes}
            raise StackDidNotStart(f'the node set did not come up (exit codes {codes}); '
                                   f'see the logs in {log_dir}')
        # Replay starts once its sensor topics are matched: discovery of a new process has
        # taken over 2 s here, and the first frames published before it were lost.
        wait = [arg for value in sensor_input_subscribers(config.bag, transport,
                                                          config.enable_overlay)
                for arg in ('--wait-for', value)]
        command = [sys.executable, '-m', 'fusion_nodes.tools.replay', str(config.bag),
                   '--rate', str(config.rate), '--wait-for-subscribers',
                   str(config.subscriber_wait_s), *wait, *config.replay_args]
        if config.loop:
            command.append('--loop')
        with open(log_dir / 'replay.log', 'w') as replay_log:  # the child keeps its own copy
            replay = subprocess.Popen(command, env=dds_env.isolated_env(), stdout=replay_log,
                                      stderr=subprocess.STDOUT)
        started = time.monotonic()
        while replay.poll() is None and stack.alive():
            rclpy.spin_once(observer, timeout_sec=0.02)
            elapsed = time.monotonic() - started
            if on_tick is not None:
                on_tick(observer, stack, elapsed)
            if config.duration_s is not None and elapsed >= config.duration_s:
                break
        settle = time.monotonic() + config.settle_s
        while time.monotonic() < settle and stack.alive():
            rclpy.spin_once(observer, timeout_sec=0.02)
        alive = stack.alive()
        wall = time.monotonic() - started
    finally:
        if replay is not None:
            stop_process(replay)
        observer.destroy_node()
        rclpy.try_shutdown()
        pids = {n.spec.name: n.process.pid for n in stack.nodes}
        codes = stack.stop()
    return LiveRun(observer, replay.returncode if replay else None, codes, alive, wall, pids)
