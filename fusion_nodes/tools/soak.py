"""`make soak`: loop the demo bag through the live stack and watch memory and latency creep.

RSS of every node process is sampled each second; growth is measured from the end of the
warm-up to the end of the run (target < 5 MB per process), and as the slope of a line fitted
to the second half of the run (MB per hour), which tells a steady leak from allocator
warm-up. The series is written to rss.json beside the logs. Latency creep compares the
end-to-end latency p50 of the first and last fifth of the run (after warm-up).
"""

import argparse
from dataclasses import dataclass
import json
from pathlib import Path
import sys

import numpy as np

from fusion_nodes.tools.live_run import find_demo_bag, LiveRunConfig, ROOT, run_live


@dataclass(frozen=True)
class SoakResult:
    duration_s: float
    fused_frames: int
    camera_frames: int
    rss_growth_mb: dict[str, float]
    rss_slope_mb_per_h: dict[str, float]
    latency_p50_first_ms: float
    latency_p50_last_ms: float
    latency_p99_ms: float
    nodes_alive: bool

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def soak(duration_s: float, warmup_s: float = 20.0, bag: Path | None = None,
         backend: str = 'onnxruntime', log_dir: Path | None = None) -> SoakResult:
    """Run the stack for warmup_s + duration_s with the bag looping; returns the figures."""
    import psutil

    bag = bag or find_demo_bag()
    rss: dict[str, list[tuple[float, float]]] = {}
    processes: dict[str, psutil.Process] = {}
    next_sample = [0.0]

    def sample(observer, stack, elapsed: float) -> None:
        if not processes:
            processes.update({n.spec.name: psutil.Process(n.process.pid) for n in stack.nodes})
            rss.update({name: [] for name in processes})
        if elapsed >= next_sample[0]:
            for name, process in processes.items():
                rss[name].append((elapsed, process.memory_info().rss / 2 ** 20))
            next_sample[0] += 1.0

    run = run_live(LiveRunConfig(bag=bag, backend=backend, enable_overlay=False, loop=True,
                                 duration_s=warmup_s + duration_s),
                   log_dir=log_dir or ROOT / 'out' / 'soak', on_tick=sample)
    growth, slope = {}, {}
    for name, samples in rss.items():
        after_warmup = [mb for t, mb in samples if t >= warmup_s]
        growth[name] = (max(after_warmup[-5:]) - min(after_warmup[:5])
                        if len(after_warmup) >= 10 else float('nan'))
        late = np.array([(t, mb) for t, mb in samples if t >= warmup_s + duration_s / 2])
        slope[name] = (float(np.polyfit(late[:, 0], late[:, 1], 1)[0]) * 3600.0
                       if len(late) >= 10 else float('nan'))
    (log_dir or ROOT / 'out' / 'soak').joinpath('rss.json').write_text(json.dumps(rss))
    report = run.observer.report()
    latencies = [ms for _, ms in run.observer.latency_events]
    skip = int(len(latencies) * warmup_s / (warmup_s + duration_s))
    steady = latencies[skip:]
    fifth = max(len(steady) // 5, 1)
    return SoakResult(
        duration_s=duration_s, fused_frames=report.fused_frames,
        camera_frames=report.camera_frames, rss_growth_mb=growth, rss_slope_mb_per_h=slope,
        latency_p50_first_ms=float(np.median(steady[:fifth])) if steady else float('nan'),
        latency_p50_last_ms=float(np.median(steady[-fifth:])) if steady else float('nan'),
        latency_p99_ms=float(np.percentile(steady, 99)) if steady else float('nan'),
        nodes_alive=run.nodes_alive_at_end)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--duration', type=float, default=600.0, help='seconds after warm-up')
    parser.add_argument('--warmup', type=float, default=20.0)
    parser.add_argument('--max-rss-growth-mb', type=float, default=5.0)
    parser.add_argument('--out', type=Path, default=ROOT / 'out' / 'soak')
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = soak(args.duration, args.warmup, log_dir=args.out)
    print(json.dumps(result.as_dict(), indent=2))
    worst = max(result.rss_growth_mb.values())
    print(f'soak: {args.duration:.0f} s, {result.fused_frames} fused frames, worst RSS growth '
          f'{worst:.2f} MB (limit {args.max_rss_growth_mb} MB), worst late slope '
          f'{max(result.rss_slope_mb_per_h.values()):.1f} MB/h, latency p50 '
          f'{result.latency_p50_first_ms:.1f} -> {result.latency_p50_last_ms:.1f} ms, '
          f'p99 {result.latency_p99_ms:.1f} ms')
    return 0 if result.nodes_alive and worst < args.max_rss_growth_mb else 1


if __name__ == '__main__':
    sys.exit(main())
