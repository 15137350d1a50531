"""Generator throughput: seconds to simulate and write 60 s of every sensor, against real time.

Target (issue 3): at most 60 s of work for 60 s of data (ratio <= 1.0) on 2 cores. The
per-sensor breakdown (render, ray cast, ground truth) is timed in the same run, so a slow
stage is visible without a profiler.
"""

from pathlib import Path
import tempfile
import time

from fusion_nodes.core.config import NS_PER_S
from fusion_nodes.sim.scenario import load_scenario
from fusion_nodes.sim.world import World
from fusion_nodes.sim.writer import generate_bag

SCENARIO = 'combined'
SEED = 11000
DURATION_S = 60.0


def _stage_ms(fn, times: list[int]) -> float:
    start = time.perf_counter()
    for t in times:
        fn(t)
    return (time.perf_counter() - start) / len(times) * 1e3


def run() -> None:
    scenario = load_scenario(SCENARIO)
    world = World(scenario, SEED)
    probe = [scenario.start_ns + k * NS_PER_S // 3 for k in range(30)]
    print(f'camera render   {_stage_ms(world.render_camera, probe):7.2f} ms/frame')
    print(f'lidar ray cast  {_stage_ms(world.lidar_scan, probe):7.2f} ms/sweep')
    print(f'BEV truth       {_stage_ms(world.bev_ground_truth, probe):7.2f} ms/frame')
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / 'bag'
        start = time.perf_counter()
        generate_bag(scenario, SEED, out, duration_s=DURATION_S, progress=False)
        elapsed = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f'{DURATION_S:.0f} s of {SCENARIO} (raw camera, all sensors and truth): '
          f'{elapsed:.1f} s wall, {size_mb:.0f} MB; ratio to real time '
          f'{elapsed / DURATION_S:.2f} (target <= 1.00)')
