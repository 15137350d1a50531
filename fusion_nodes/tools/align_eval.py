"""fusion-align-eval: the DTW aligner against nearest-stamp, ApproximateTime and cross-correlation.

Streams come from the scenario generator (fusion_nodes.sim.world.World). Each seed's sensor
data is a function of true capture time alone, so its per-capture signature inputs are computed
once, exactly as the nodes compute them (camera: GroundPatchSpeed on the full-size grey frame;
lidar: obstacle_centroids of the sweep in base_link; GPS: GpsSpeedTrack over the delivered
fixes' ENU positions and stamps), and every grid cell only re-times them with apply_timing
(stamps, arrivals, drops; the lidar displacement is taken against the previous delivered sweep,
as the node does).

Definitions (see core/align/README.md):
- pairing accuracy: share of (reference frame, stream) pairs where the method returned the
  delivered sample whose true capture is nearest the frame's, among samples that arrived within
  the method's wait budget (max_wait for bounded-wait methods, unbounded for ApproximateTime),
  or returned None when that nearest sample is more than max_residual away (correctly missing).
  pairing_accuracy_locked counts only the pairs matched while the stream's offset estimate was
  locked (locked_share of all pairs); before a lock the aligner matches raw stamps.
- offset error: the offset the matcher applied to the frame (aligner.offsets() as the frame is
  emitted; 0 for stamp-trusting methods) minus the true offset at the frame's capture time,
  sampled at every emitted reference frame. Convergence time: the first time after which the
  error stays within CONVERGED_MS for CONVERGED_HOLD_S; offset RMSE and max are over the
  samples after it.
"""

import argparse
from dataclasses import dataclass, replace
import json
import math
from pathlib import Path
import sys
import time

import cv2
import numpy as np
from tqdm import tqdm

from fusion_nodes.core.align.aligner import AlignerConfig, StreamAligner
from fusion_nodes.core.align.baselines import (
    ApproximateTimeSync, NearestStampMatcher, xcorr_offset)
from fusion_nodes.core.align.ego_speed import (
    cluster_displacement, GroundPatchSpeed, obstacle_centroids)
from fusion_nodes.core.align.signatures import GpsSpeedTrack
from fusion_nodes.core.config import NS_PER_S
from fusion_nodes.core.geodesy import EnuFrame
from fusion_nodes.core.lidar import lidar_points_to_base
from fusion_nodes.sim.scenario import load_scenario
from fusion_nodes.sim.timing import apply_timing, capture_times, SensorTiming
from fusion_nodes.sim.world import World

STREAMS = ('lidar', 'gps')
CONVERGED_MS = 5.0
CONVERGED_HOLD_S = 2.0
DEFAULT_OFFSETS = ((0.0, 0.0), (50.0, 150.0), (100.0, 25.0), (150.0, 100.0))
DEFAULT_JITTERS = (0.0, 5.0, 10.0)
METHODS = ('dtw', 'nearest_stamp', 'approximate_time', 'xcorr')


@dataclass
class SeedData:
    """Per-capture signature inputs of one seed, computed once."""

    timing: dict[str, SensorTiming]
    start_ns: int
    capture: dict[str, np.ndarray]
    camera_shift: np.ndarray       # forward road displacement (m) since the previous capture
    clusters: list[np.ndarray]     # per sweep, (k, 2) obstacle cluster centroids in base_link
    enu: np.ndarray                # (n, 2) GPS east/north per fix (NaN without a fix)


def extract_seed(scenario_name: str, seed: int, duration_s: float) -> SeedData:
    """Render, cast and fix every capture of one seed and reduce each to its signature input."""
    scenario = load_scenario(scenario_name)
    world = World(scenario, seed, horizon_s=duration_s)
    start = scenario.start_ns
    duration_ns = round(duration_s * NS_PER_S)
    timing = dict(scenario.timing)
    capture = {s: capture_times(timing[s], start, duration_ns) for s in ('camera',) + STREAMS}
    ground = GroundPatchSpeed(scenario.camera)
    shifts = [ground.update(cv2.cvtColor(world.render_camera(int(t)), cv2.COLOR_RGB2GRAY))
              for t in capture['camera']]
    clusters = [obstacle_centroids(sweep_in_base(world, int(t))) for t in capture['lidar']]
    return SeedData(timing, start, capture, np.asarray(shifts), clusters,
                    fixes_enu(world, capture['gps']))


def sweep_in_base(world: World, t_ns: int) -> np.ndarray:
    """(N, 4) x, y, z, intensity in base_link of the sweep the generator's lidar starts at t_ns."""
    scan = world.lidar_scan(t_ns)
    xyzi = np.stack([scan['x'], scan['y'], scan['z'], scan['intensity']], axis=1)
    return lidar_points_to_base(xyzi, world.scenario.lidar.translation)


def fixes_enu(world: World, capture_ns: np.ndarray) -> np.ndarray:
    """(n, 2) east/north of the generator's GPS fixes at capture_ns; NaN without a fix."""
    frame = EnuFrame(*world.scenario.origin)
    enu = np.full((capture_ns.size, 2), np.nan)
    for k, t in enumerate(capture_ns):
        fix = world.gps_fix(int(t))
        if fix is not None and math.isfinite(fix.latitude):
            enu[k] = frame.to_enu(fix.latitude, fix.longitude, fix.altitude)[:2]
    return enu


@dataclass
class Delivered:
    capture: np.ndarray
    stamp: np.ndarray
    arrival: np.ndarray
    signature: np.ndarray


def deliver(data: SeedData, offsets_ms: tuple[float, float], jitter_ms: float,
            drop: float, drift_ppm: float, rng: np.random.Generator) -> dict[str, Delivered]:
    """Re-time one seed for one grid cell; signatures follow the delivered sequence."""
    out = {}
    for name in ('camera',) + STREAMS:
        timing = data.timing[name]
        if name != 'camera':
            k = STREAMS.index(name)
            # Opposite drift signs, so the two clocks also drift against each other.
            timing = replace(timing, offset_ms=offsets_ms[k], jitter_ms=jitter_ms,
                             drop_prob=drop, drift_ppm=drift_ppm * (1 if k == 0 else -1))
        times, keep = apply_timing(timing, data.capture[name], data.start_ns, rng)
        idx = np.flatnonzero(keep)
        if name == 'camera':
            sig = data.camera_shift[idx]
        elif name == 'lidar':
            sig = np.array([cluster_displacement(data.clusters[a], data.clusters[b])
                            if i else math.nan
                            for i, (a, b) in enumerate(zip(np.r_[idx[:1], idx[:-1]], idx))])
        else:
            track = GpsSpeedTrack()
            sig = np.array([track.update(int(times.stamp_ns[i]), data.enu[b])
                            for i, b in enumerate(idx)])
        out[name] = Delivered(times.capture_ns, times.stamp_ns, times.arrival_ns, sig)
    return out


def _events(streams: dict[str, Delivered]) -> list[tuple[int, int, str, int]]:
    events = []
    order = {'camera': 0, 'lidar': 1, 'gps': 2}
    for name, d in streams.items():
        events.extend((int(a), order[name], name, i) for i, a in enumerate(d.arrival))
    events.sort()
    return events


def _truth(streams: dict[str, Delivered], frame_idx: int, stream: str, budget_ns: float,
           max_residual_ns: int) -> int:
    """Index of the delivered sample nearest in true capture (within budget), or -1."""
    cam, d = streams['camera'], streams[stream]
    cap = cam.capture[frame_idx]
    ok = d.arrival <= cam.arrival[frame_idx] + budget_ns
    if not ok.any():
        return -1
    cand = np.flatnonzero(ok)
    j = cand[np.argmin(np.abs(d.capture[cand] - cap))]
    return int(j) if abs(int(d.capture[j]) - int(cap)) <= max_residual_ns else -1


def _true_offset_ns(streams: dict[str, Delivered], stream: str, timing: SensorTiming,
                    start_ns: int, capture_ns: int) -> float:
    return timing.offset_ms * 1e6 + timing.drift_ppm * 1e-6 * (capture_ns - start_ns)


def _run_online(aligner, streams, events, timed: bool, signatures: bool):
    """Drive an online aligner through the merged events, polling at arrivals and deadlines.

    As fusion_node does, a due offset estimate runs after the frames of a poll are taken, so
    the per-message update time holds push and poll alone (the estimates are timed on their
    own, estimate_us). Returns the frames, the offsets the matcher applied to each frame (per
    stream, (ns, whether the estimate was locked); None for a matcher without offsets), and the
    per-message update times.
    """
    frames, offsets, update_us = [], [], []
    has_offsets = getattr(aligner, 'offsets', None) is not None
    deferred = getattr(aligner, 'update_offsets', None) is not None

    def poll(now_ns: int) -> list:
        return aligner.poll(now_ns, estimate=False) if deferred else aligner.poll(now_ns)

    def take(polled) -> None:
        frames.extend(polled)
        if polled:
            # Read before the deferred estimate: the offsets the matcher just used.
            now = ({s: (o.offset_ns, o.valid) for s, o in aligner.offsets().items()}
                   if has_offsets else None)
            offsets.extend([now] * len(polled))
            if deferred:
                aligner.update_offsets()

    for arrival, _, name, i in events:
        deadline = aligner.next_deadline_ns()
        while deadline is not None and deadline <= arrival:
            take(poll(deadline))
            deadline = aligner.next_deadline_ns()
        d = streams[name]
        start = time.perf_counter()
        if signatures:
            aligner.push(name, int(d.stamp[i]), arrival, float(d.signature[i]), i)
        else:
            aligner.push(name, int(d.stamp[i]), arrival, i)
        polled = poll(arrival)
        elapsed = (time.perf_counter() - start) * 1e6
        take(polled)
        if timed:
            update_us.append(elapsed)
    take(poll(events[-1][0] + 10 * NS_PER_S))
    return frames, offsets, update_us


def evaluate_cell(data: SeedData, offsets_ms, jitter_ms, drop, drift_ppm, seed,
                  config: AlignerConfig) -> dict:
    rng = np.random.default_rng([seed, int(offsets_ms[0]), int(offsets_ms[1]),
                                 int(jitter_ms * 10)])
    streams = deliver(data, offsets_ms, jitter_ms, drop, drift_ppm, rng)
    timings = {name: replace(data.timing[name], offset_ms=offsets_ms[k],
                             drift_ppm=drift_ppm * (1 if k == 0 else -1))
               for k, name in enumerate(STREAMS)}
    events = _events(streams)
    results = {}
    runs = {
        'dtw': (StreamAligner(config), True),
        # Cross-correlation as it is used: every window's peak goes straight to the matcher.
        'xcorr': (StreamAligner(replace(config, dejitter=False, estimate_history=1,
                                        min_correlation=0.0, lock_windows=1,
                                        lock_spread_ns=config.max_offset_ns * 4),
                                window_estimator=xcorr_offset), True),
        'nearest_stamp': (NearestStampMatcher('camera', STREAMS, config.max_wait_ns,
                                              config.max_residual_ns), False),
    }
    for method, (aligner, with_sig) in runs.items():
        frames, offsets, update_us = _run_online(aligner, streams, events, True, with_sig)
        results[method] = _score(frames, offsets, streams, timings, data.start_ns, config,
                                 config.max_wait_ns, update_us)
        if method == 'dtw':
            results[method]['estimate_us'] = list(aligner.estimate_us)
            results[method]['stats'] = aligner.stats()
    results['approximate_time'] = _run_approximate_time(streams, timings, data.start_ns, config)
    return results


def _score(frames, offsets, streams, timings, start_ns, config, budget_ns, update_us) -> dict:
    cam = streams['camera']
    correct = total = locked_correct = locked_total = 0
    errors = {s: [] for s in STREAMS}
    times = []
    for f, applied in zip(frames, offsets):
        i = f.payload
        for s in STREAMS:
            truth = _truth(streams, i, s, budget_ns, config.max_residual_ns)
            m = f.matches.get(s)
            got = -1 if m is None else m.payload
            correct += int(got == truth)
            total += 1
            true_off = _true_offset_ns(streams, s, timings[s], start_ns, int(cam.capture[i]))
            # A stamp-trusting matcher applies offset 0.
            est, locked = (0, False) if applied is None else applied[s]
            if locked:
                locked_correct += int(got == truth)
                locked_total += 1
            errors[s].append((est - true_off) / 1e6)
        times.append((int(cam.capture[i]) - start_ns) / NS_PER_S)
    waits = [f.added_wait_ns / 1e6 for f in frames]
    return {'pairing_correct': correct, 'pairing_total': total, 'errors': errors,
            'locked_correct': locked_correct, 'locked_total': locked_total,
            'times': times, 'waits': waits, 'update_us': update_us,
            'frames': len(frames), 'reference_frames': int(cam.capture.size)}


def _run_approximate_time(streams, timings, start_ns, config) -> dict:
    sync = ApproximateTimeSync(('camera',) + STREAMS, queue_size=30, age_penalty=0.1)
    events = _events(streams)
    in_set: dict[int, dict] = {}
    waits, update_us = [], []
    for arrival, _, name, i in events:
        start = time.perf_counter()
        sets = sync.push(name, int(streams[name].stamp[i]), arrival, i)
        update_us.append((time.perf_counter() - start) * 1e6)
        for s in sets:
            ref = s['camera'].payload
            in_set[ref] = {t: s[t].payload for t in STREAMS}
            waits.append((arrival - int(streams['camera'].arrival[ref])) / 1e6)
    cam = streams['camera']
    correct = total = locked_correct = locked_total = 0
    errors = {s: [] for s in STREAMS}
    times = []
    for i in range(cam.capture.size):
        for s in STREAMS:
            truth = _truth(streams, i, s, math.inf, config.max_residual_ns)
            got = in_set.get(i, {}).get(s, -1)
            correct += int(got == truth)
            total += 1
            errors[s].append(-_true_offset_ns(streams, s, timings[s], start_ns,
                                              int(cam.capture[i])) / 1e6)
        times.append((int(cam.capture[i]) - start_ns) / NS_PER_S)
    return {'pairing_correct': correct, 'pairing_total': total, 'errors': errors,
            'locked_correct': locked_correct, 'locked_total': locked_total,
            'times': times, 'waits': waits, 'update_us': update_us,
            'frames': len(in_set), 'reference_frames': int(cam.capture.size)}


def convergence(times: list[float], errors: list[float]) -> tuple[float, np.ndarray]:
    """First time from which |error| <= CONVERGED_MS for CONVERGED_HOLD_S, and the errors after."""
    t = np.asarray(times)
    e = np.asarray(errors, dtype=float)
    bad = ~(np.abs(e) <= CONVERGED_MS)  # NaN (no estimate yet) counts as not converged
    for k in range(t.size):
        if bad[k]:
            continue
        hold = (t >= t[k]) & (t <= t[k] + CONVERGED_HOLD_S)
        if not bad[hold].any() and t[-1] >= t[k] + CONVERGED_HOLD_S:
            return float(t[k]), e[k:]
    return math.inf, e[t.size // 2:]


def summarise(cells: list[dict], method: str) -> dict:
    correct = sum(c[method]['pairing_correct'] for c in cells)
    total = sum(c[method]['pairing_total'] for c in cells)
    locked_correct = sum(c[method].get('locked_correct', 0) for c in cells)
    locked_total = sum(c[method].get('locked_total', 0) for c in cells)
    after, conv = [], []
    for c in cells:
        r = c[method]
        for s in STREAMS:
            t_conv, err = convergence(r['times'], r['errors'][s])
            conv.append(t_conv)
            after.append(err[np.isfinite(err)])
    after = np.concatenate(after) if after else np.zeros(0)
    waits = np.concatenate([np.asarray(c[method]['waits']) for c in cells])
    update = np.concatenate([np.asarray(c[method]['update_us']) for c in cells])
    frames = sum(c[method]['frames'] for c in cells)
    refs = sum(c[method]['reference_frames'] for c in cells)
    out = {
        'offset_rmse_ms': float(np.sqrt(np.mean(after ** 2))) if after.size else None,
        'offset_max_ms': float(np.max(np.abs(after))) if after.size else None,
        'pairing_accuracy': correct / total if total else None,
        # Pairs matched while the stream's offset estimate was locked, and how they fared.
        'locked_share': locked_total / total if total else None,
        'pairing_accuracy_locked': locked_correct / locked_total if locked_total else None,
        'convergence_s': float(np.max(conv)) if conv else None,
        'convergence_s_median': float(np.median(conv)) if conv else None,
        'update_us_p50': float(np.percentile(update, 50)),
        'update_us_p99': float(np.percentile(update, 99)),
        'added_wait_ms_p99': float(np.percentile(waits, 99)) if waits.size else None,
        'coverage': frames / refs if refs else None,
    }
    for key in ('convergence_s', 'convergence_s_median'):
        if out[key] is not None and not math.isfinite(out[key]):
            out[key] = None
    if method == 'dtw':
        est = np.concatenate([np.asarray(c[method]['estimate_us']) for c in cells])
        out['estimate_us_p50'] = float(np.percentile(est, 50))
        out['estimate_us_p99'] = float(np.percentile(est, 99))
        updates = sum(len(c[method]['update_us']) for c in cells)
        out['update_us_amortised_with_estimate'] = float(
            (update.sum() + est.sum()) / max(1, updates))
    return out


def _plot(cells: list[dict], labels: list[str], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(STREAMS), 1, figsize=(10, 7), sharex=True)
    for ax, s in zip(axes, STREAMS):
        for cell, label in zip(cells, labels):
            for method, style in (('dtw', '-'), ('xcorr', ':')):
                r = cell[method]
                t = np.asarray(r['times'])
                err = np.asarray(r['errors'][s], dtype=float)
                ax.plot(t, err, style, lw=0.8, label=f'{method} {label}')
        ax.axhline(0.0, color='k', lw=0.5)
        ax.set_ylim(-30, 30)
        ax.set_ylabel(f'{s} estimate - true (ms)')
    axes[-1].set_xlabel('time (s)')
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Entry point: fusion-align-eval."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--scenario', default='nominal')
    parser.add_argument('--seeds', type=int, nargs='+', default=[11000, 11001, 11002])
    parser.add_argument('--duration', type=float, default=60.0, help='seconds per run')
    parser.add_argument('--drop', type=float, default=0.1)
    parser.add_argument('--drift-ppm', type=float, default=100.0)
    parser.add_argument('--jitters', type=float, nargs='+', default=list(DEFAULT_JITTERS))
    parser.add_argument('--quick', action='store_true',
                        help='one seed, 20 s, two cells (for tests)')
    # Under out/ (git-ignored): a run must not leave a picture in the source tree.
    parser.add_argument('--plot', default='out/align_eval.png')
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    args = parser.parse_args(argv)
    offsets = list(DEFAULT_OFFSETS)
    if args.quick:
        args.seeds, args.duration, args.jitters = args.seeds[:1], 20.0, [5.0]
        offsets = [(0.0, 0.0), (150.0, 100.0)]
    if args.duration <= 12.0 or not 0.0 <= args.drop < 1.0:
        raise SystemExit('--duration must exceed 12 s and --drop be in [0, 1)')
    config = AlignerConfig()
    cells, labels = [], []
    progress = tqdm(total=len(args.seeds) * (1 + len(offsets) * len(args.jitters)),
                    disable=args.json, desc='align-eval')
    for seed in args.seeds:
        data = extract_seed(args.scenario, seed, args.duration)
        progress.update(1)
        for off in offsets:
            for jitter in args.jitters:
                cells.append(evaluate_cell(data, off, jitter, args.drop, args.drift_ppm, seed,
                                           config))
                labels.append(f'seed {seed} off {off[0]:.0f}/{off[1]:.0f} jit {jitter:.0f}')
                progress.update(1)
    progress.close()
    summary = summarise(cells, 'dtw')
    summary['baselines'] = {m: summarise(cells, m) for m in METHODS[1:]}
    summary['grid'] = {'scenario': args.scenario, 'seeds': args.seeds,
                       'duration_s': args.duration, 'offsets_ms': offsets,
                       'jitters_ms': args.jitters, 'drop': args.drop,
                       'drift_ppm': args.drift_ppm, 'cells': len(cells)}
    per_stream = {}
    for s in STREAMS:
        errs = []
        for c in cells:
            _, e = convergence(c['dtw']['times'], c['dtw']['errors'][s])
            errs.append(e[np.isfinite(e)])
        e = np.concatenate(errs)
        per_stream[s] = float(np.sqrt(np.mean(e ** 2))) if e.size else None
    summary['offset_rmse_ms_per_stream'] = per_stream
    _plot(cells[-len(args.jitters):], labels[-len(args.jitters):], args.plot)
    summary['plot'] = args.plot
    if args.json:
        print(json.dumps(summary))
        return 0
    keys = ('offset_rmse_ms', 'offset_max_ms', 'pairing_accuracy', 'coverage', 'convergence_s',
            'update_us_p50', 'update_us_p99', 'added_wait_ms_p99')
    print(f'{"method":18s}' + ''.join(f'{k:>20s}' for k in keys))
    for name, row in [('dtw', summary)] + list(summary['baselines'].items()):
        cells_txt = ''.join(f'{"-" if row[k] is None else format(row[k], ".4g"):>20s}'
                            for k in keys)
        print(f'{name:18s}{cells_txt}')
    print(f'dtw offset RMSE per stream (ms): {per_stream}; estimate us p50/p99: '
          f'{summary["estimate_us_p50"]:.0f}/{summary["estimate_us_p99"]:.0f}; plot: {args.plot}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
