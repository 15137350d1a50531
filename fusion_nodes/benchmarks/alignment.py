"""Alignment costs: banded DTW (numba) against dtaidistance's C kernel, per-update cost of
StreamAligner against the nearest-stamp matcher, and the per-message signature costs the sensor
nodes pay, measured in the same run."""

import time

import cv2
import numpy as np

from fusion_nodes.core.align.aligner import AlignerConfig, StreamAligner
from fusion_nodes.core.align.baselines import NearestStampMatcher
from fusion_nodes.core.align.dtw import banded_dtw_path
from fusion_nodes.core.align.ego_speed import GroundPatchSpeed, ObstacleDisplacement
from fusion_nodes.core.align.signatures import GpsSpeedTrack
from fusion_nodes.sim.scenario import load_scenario
from fusion_nodes.sim.world import World
from fusion_nodes.tools.align_eval import sweep_in_base

MS = 1_000_000


def _best_ms(fn, repeats: int = 20) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def _updates(aligner, with_signature: bool, deferred: bool = False) -> np.ndarray:
    """push+poll times per message; deferred runs the due estimate after, untimed, as
    fusion_node does once a frame's outputs are out."""
    rng = np.random.default_rng(0)
    events = []
    for name, period, latency in (('camera', 33_333_333, 15), ('lidar', 100 * MS, 105),
                                  ('gps', 100 * MS, 60)):
        for k in range(60_000 * MS // period):
            events.append((k * period + latency * MS, name, k * period, float(rng.random())))
    events.sort()
    out = []
    for arrival, name, stamp, sig in events:
        start = time.perf_counter()
        if with_signature:
            aligner.push(name, stamp, arrival, sig, None)
        else:
            aligner.push(name, stamp, arrival, None)
        polled = aligner.poll(arrival, estimate=False) if deferred else aligner.poll(arrival)
        out.append((time.perf_counter() - start) * 1e6)
        if deferred and polled:
            aligner.update_offsets()
    return np.asarray(out)


def run() -> None:
    from dtaidistance import dtw as dtai
    cfg = AlignerConfig()
    n = cfg.offset_window_ns // cfg.offset_grid_ns
    band = cfg.max_offset_ns // cfg.offset_grid_ns
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=n), rng.normal(size=n)
    numba_ms = _best_ms(lambda: banded_dtw_path(x, y, band))
    dtai_ms = _best_ms(lambda: dtai.warping_path_fast(x, y, window=band + 1))
    print(f'banded DTW {n} samples, band {band}: numba {numba_ms:.2f} ms, dtaidistance '
          f'{dtai_ms:.2f} ms, ratio numba/dtaidistance {numba_ms / dtai_ms:.2f}')
    aligner = StreamAligner(cfg)
    ours = _updates(aligner, True)
    est = np.asarray(aligner.estimate_us)
    deferred = _updates(StreamAligner(cfg), True, deferred=True)
    base = _updates(NearestStampMatcher('camera', ('lidar', 'gps'), cfg.max_wait_ns,
                                        cfg.max_residual_ns), False)
    print(f'StreamAligner push+poll (incl. estimates) p50 {np.percentile(ours, 50):.1f} us, '
          f'p99 {np.percentile(ours, 99):.1f} us; window estimate p50 '
          f'{np.percentile(est, 50):.0f} us, p99 {np.percentile(est, 99):.0f} us')
    print(f'StreamAligner push+poll with the estimate after the outputs (as fusion_node) p50 '
          f'{np.percentile(deferred, 50):.1f} us, p99 {np.percentile(deferred, 99):.1f} us')
    print(f'nearest-stamp push+poll p50 {np.percentile(base, 50):.1f} us, p99 '
          f'{np.percentile(base, 99):.1f} us; ratio p99 ours/nearest '
          f'{np.percentile(ours, 99) / np.percentile(base, 99):.1f} with the estimate inside '
          f'poll, {np.percentile(deferred, 99) / np.percentile(base, 99):.1f} after the outputs')
    # A generator frame and sweep mid-drive, as the nodes see them.
    scenario = load_scenario('nominal')
    world = World(scenario, 11000, horizon_s=6.0)
    t = scenario.start_ns + 5_000_000_000
    grey = cv2.cvtColor(world.render_camera(t), cv2.COLOR_RGB2GRAY)
    points = sweep_in_base(world, t)
    ground = GroundPatchSpeed(scenario.camera)
    displacement = ObstacleDisplacement()
    track = GpsSpeedTrack()
    stamps = iter(range(0, 10**12, 100 * MS))
    camera_ms = _best_ms(lambda: ground.update(grey))
    lidar_ms = _best_ms(lambda: displacement.update(points))
    gps_ms = _best_ms(lambda: track.update(next(stamps), rng.normal(size=2)))
    print(f'signatures per message: camera (road patch, {grey.shape[1]}x{grey.shape[0]} in) '
          f'{camera_ms:.3f} ms, lidar (obstacle clusters, {len(points)} points) '
          f'{lidar_ms:.3f} ms, GPS track {gps_ms:.3f} ms')
