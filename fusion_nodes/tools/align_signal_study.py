"""How well could each sensor time itself? Metric ego-speed signals against the generator's truth.

A study, not part of the aligner: it asks whether signals that measure ego speed in m/s (not
an energy with a scene-dependent gain) carry enough timing to reach fusion-align-eval's
targets. Per seed of a scenario it computes, at true capture times:
- camera: GroundPatchSpeed (core/align/ego_speed.py), the road patch's forward shift between
  consecutive frames over their interval;
- lidar: ObstacleDisplacement, the obstacle clusters' forward shift between consecutive sweeps
  over their interval, at the sweeps' middle (their starts' midpoint plus half a period);
- GPS: gps_track_speed, the signature gps_node sends, placed half its span before the stamp.
These are the signatures the nodes send, in m/s and on the true clock.
Then, over 15 s windows every 2.5 s, the lag that minimises a Huber loss between two series
in m/s (5 ms grid, +-300 ms, parabola refinement). All series are on the true clock, so every
lag found is an error. Prints one JSON object.
"""

import argparse
import json
import math

import cv2
import numpy as np
from tqdm import tqdm

from fusion_nodes.core.align.ego_speed import GroundPatchSpeed, ObstacleDisplacement
from fusion_nodes.core.align.signatures import GPS_SPAN_NS, gps_track_speed
from fusion_nodes.core.config import NS_PER_S
from fusion_nodes.sim.scenario import load_scenario
from fusion_nodes.sim.timing import capture_times
from fusion_nodes.sim.world import World
from fusion_nodes.tools.align_eval import fixes_enu, sweep_in_base

WINDOW_NS = 15 * NS_PER_S
WINDOW_STEP_NS = 2_500_000_000
LAGS_NS = np.arange(-300, 301, 5) * 1_000_000
HUBER_MPS = 0.3
BAD_MPS = 0.5


def huber_lag_ns(ref_t: np.ndarray, ref_v: np.ndarray, t: np.ndarray, v: np.ndarray,
                 start_ns: float, end_ns: float) -> float:
    """Lag of (t, v) against the reference that minimises a Huber loss; NaN without overlap."""
    inside = (ref_t >= start_ns) & (ref_t < end_ns)
    rt, rv = ref_t[inside], ref_v[inside]
    costs = np.full(LAGS_NS.size, np.inf)
    for k, lag in enumerate(LAGS_NS):
        other = np.interp(rt + lag, t, v, left=np.nan, right=np.nan)
        ok = np.isfinite(other) & np.isfinite(rv)
        if np.count_nonzero(ok) > 10:
            r = np.abs(rv[ok] - other[ok])
            costs[k] = np.mean(np.where(r < HUBER_MPS, 0.5 * r * r,
                                        HUBER_MPS * (r - 0.5 * HUBER_MPS)))
    k = int(np.argmin(costs))
    if not np.isfinite(costs[k]):
        return math.nan
    frac = 0.0
    if 0 < k < costs.size - 1 and np.all(np.isfinite(costs[k - 1:k + 2])):
        left, mid, right = costs[k - 1:k + 2]
        curvature = left - 2.0 * mid + right
        if curvature > 0.0:
            frac = 0.5 * (left - right) / curvature
    return float(LAGS_NS[k] + frac * (LAGS_NS[1] - LAGS_NS[0]))


def seed_signals(scenario_name: str, seed: int, duration_s: float
                 ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], World]:
    """Metric speed series (true time ns, m/s) of camera, lidar and GPS for one seed."""
    scenario = load_scenario(scenario_name)
    world = World(scenario, seed, horizon_s=duration_s)
    duration_ns = round(duration_s * NS_PER_S)
    capture = {s: capture_times(scenario.timing[s], scenario.start_ns, duration_ns)
               for s in ('camera', 'lidar', 'gps')}
    ground = GroundPatchSpeed(scenario.camera)
    cam, prev = [], None
    for t in capture['camera']:
        shift = ground.update(cv2.cvtColor(world.render_camera(int(t)), cv2.COLOR_RGB2GRAY))
        if prev is not None:
            cam.append(((t + prev) // 2, shift / ((t - prev) / 1e9)))
        prev = t
    displacement = ObstacleDisplacement()
    half_sweep = scenario.timing['lidar'].period_ns // 2
    lidar, prev = [], None
    for t in capture['lidar']:
        shift = displacement.update(sweep_in_base(world, int(t)))
        if prev is not None:
            lidar.append(((t + prev) // 2 + half_sweep, shift / ((t - prev) / 1e9)))
        prev = t
    enu = fixes_enu(world, capture['gps'])
    full = capture['gps'] >= capture['gps'][0] + GPS_SPAN_NS  # a whole span of fixes behind
    gps = [(int(t) - GPS_SPAN_NS // 2, gps_track_speed(capture['gps'], enu, int(t)))
           for t in capture['gps'][full]]
    series = {}
    for name, pairs in (('camera', cam), ('lidar', lidar), ('gps', gps)):
        arr = np.array(pairs, dtype=np.float64).reshape(-1, 2)
        series[name] = (arr[:, 0], arr[:, 1])
    return series, world


def _error_stats(errors: np.ndarray) -> dict:
    e = errors[np.isfinite(errors)]
    return {'n': int(errors.size), 'undefined': int(errors.size - e.size),
            'median_abs_mps': float(np.median(np.abs(e))),
            'share_off_by_more_than_0_5_mps': float(np.mean(np.abs(e) > BAD_MPS))}


def _lag_stats(lags_ms: list[float]) -> dict:
    a = np.abs(np.array([x for x in lags_ms if math.isfinite(x)]))
    return {'windows': len(lags_ms), 'abs_lag_ms_p50': float(np.median(a)),
            'abs_lag_ms_p90': float(np.percentile(a, 90)),
            'median_lag_ms': float(np.median([x for x in lags_ms if math.isfinite(x)]))}


def study(scenario_name: str, seeds: list[int], duration_s: float) -> dict:
    """Per-signal errors against true speed and per-window lag errors, pooled over seeds."""
    errors = {s: [] for s in ('camera', 'lidar', 'gps')}
    pairs = (('true', 'camera'), ('true', 'lidar'), ('true', 'gps'), ('camera', 'lidar'),
             ('camera', 'gps'))
    lags = {f'{a}-{b}': [] for a, b in pairs}
    for seed in tqdm(seeds, desc='align-signal-study'):
        series, world = seed_signals(scenario_name, seed, duration_s)
        for name, (t, v) in series.items():
            errors[name].append(v - world.trajectory.states(t.astype(np.int64))['vx'])
        cam_t = series['camera'][0]
        grid = np.arange(cam_t[0], cam_t[-1], 5_000_000)
        series['true'] = (grid, world.trajectory.states(grid.astype(np.int64))['vx'])
        for start in np.arange(cam_t[0] + NS_PER_S, cam_t[-1] - WINDOW_NS, WINDOW_STEP_NS):
            for a, b in pairs:
                lag = huber_lag_ns(*series[a], *series[b], start, start + WINDOW_NS)
                lags[f'{a}-{b}'].append(lag / 1e6)
    return {'scenario': scenario_name, 'seeds': seeds, 'duration_s': duration_s,
            'signal_error': {s: _error_stats(np.concatenate(e)) for s, e in errors.items()},
            'window_lag_error': {k: _lag_stats(v) for k, v in lags.items()}}


def main(argv: list[str] | None = None) -> int:
    """Entry point: python -m fusion_nodes.tools.align_signal_study."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--scenario', default='nominal')
    parser.add_argument('--seeds', type=int, nargs='+', default=[11000, 11001, 11002])
    parser.add_argument('--duration', type=float, default=60.0, help='seconds per seed')
    args = parser.parse_args(argv)
    if args.duration * NS_PER_S <= WINDOW_NS + 2 * NS_PER_S:
        raise SystemExit('--duration must exceed 17 s (one 15 s window after a 1 s lead-in)')
    print(json.dumps(study(args.scenario, args.seeds, args.duration), indent=1))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
