"""The ego drive: a winding road (straights and eased turns) and a speed profile with stops.

Everything is integrated once on fixed grids (time step DT_S, arc step DS_M) and then looked up
by linear interpolation, so a pose is a pure function of time. The ego drives along the path
itself; the road centre line runs half a lane to its left (right-hand traffic).
"""

from dataclasses import dataclass
import math

import numpy as np

from fusion_nodes.core.config import NS_PER_S
from fusion_nodes.sim.scenario import WorldParams

DT_S = 0.005
DS_M = 0.1
_EASE_M = 10.0  # curvature ramps over this length so yaw rate never steps
ROAD_AHEAD_M = 150.0  # road laid out beyond the last ego position (camera and lidar see it)


@dataclass(frozen=True)
class EgoState:
    """True ego state: pose in odom (ENU), twist in base_link."""

    t_ns: int
    x: float
    y: float
    yaw: float
    vx: float
    vy: float
    yaw_rate: float
    ax: float


def _speed_profile(params: WorldParams, rng: np.random.Generator,
                   steps: int) -> tuple[np.ndarray, list[float]]:
    """Speed per DT_S step, and the times (s) at which the ego comes to a stop."""
    speed = np.zeros(steps)
    stops: list[float] = []
    v = 0.0
    k = 0
    # Start standing, then alternate cruising at new speeds with braking to a stop or slow-down.
    phases: list[tuple[float, float, float]] = [(0.0, 1.0, rng.uniform(0.3, 1.2))]
    while k < steps:
        if not phases:
            target = rng.uniform(*params.cruise_speed_mps)
            phases.append((target, rng.uniform(*params.accel_mps2),
                           rng.uniform(*params.cruise_time_s)))
            if rng.random() < params.stop_prob:
                phases.append((0.0, rng.uniform(*params.brake_mps2),
                               rng.uniform(*params.stop_time_s)))
            else:
                phases.append((max(1.5, target * rng.uniform(0.35, 0.7)),
                               rng.uniform(*params.brake_mps2), rng.uniform(1.0, 3.0)))
        target, rate, hold = phases.pop(0)
        while k < steps and abs(v - target) > 1e-9:
            v += float(np.clip(target - v, -rate * DT_S, rate * DT_S))
            speed[k] = v
            k += 1
        if target == 0.0:
            stops.append(k * DT_S)
        hold_steps = int(round(hold / DT_S))
        speed[k:k + hold_steps] = v
        k += hold_steps
    return speed, stops


def _curvature(params: WorldParams, rng: np.random.Generator, n: int) -> np.ndarray:
    """Curvature (1/m) per DS_M of arc: straights, then turns eased in and out."""
    kappa = np.zeros(n)
    i = 0
    while i < n:
        i += int(rng.uniform(*params.straight_m) / DS_M)
        radius = rng.uniform(*params.turn_radius_m)
        angle = math.radians(rng.uniform(*params.turn_angle_deg))
        side = 1.0 if rng.random() < 0.5 else -1.0
        ease = int(_EASE_M / DS_M)
        arc = max(0, int((radius * angle - _EASE_M) / DS_M))
        shape = np.concatenate([np.linspace(0.0, 1.0, ease), np.ones(arc),
                                np.linspace(1.0, 0.0, ease)])
        end = min(n, i + shape.size)
        if i < n:
            kappa[i:end] = side / radius * shape[:end - i]
        i += shape.size
    return kappa


class Trajectory:
    """Ego path and motion over [0, horizon_s) of the run, looked up by relative time."""

    def __init__(self, params: WorldParams, rng: np.random.Generator, horizon_s: float,
                 start_ns: int) -> None:
        steps = int(math.ceil(horizon_s / DT_S)) + 2
        self.start_ns = start_ns
        self.speed, stop_times = _speed_profile(params, rng, steps)
        self.arc = np.concatenate([[0.0], np.cumsum(0.5 * (self.speed[1:] + self.speed[:-1])
                                                    * DT_S)])
        n_s = int((self.arc[-1] + ROAD_AHEAD_M) / DS_M) + 2
        heading0 = rng.uniform(-math.pi, math.pi)
        self.kappa = _curvature(params, rng, n_s)
        self.heading = heading0 + np.concatenate(
            [[0.0], np.cumsum(0.5 * (self.kappa[1:] + self.kappa[:-1]) * DS_M)])
        dx = np.cos(self.heading)
        dy = np.sin(self.heading)
        self.path_x = np.concatenate([[0.0], np.cumsum(0.5 * (dx[1:] + dx[:-1]) * DS_M)])
        self.path_y = np.concatenate([[0.0], np.cumsum(0.5 * (dy[1:] + dy[:-1]) * DS_M)])
        self.stop_arcs = [float(np.interp(t, np.arange(steps) * DT_S, self.arc))
                          for t in stop_times]
        self.horizon_s = (steps - 2) * DT_S
        self._grid_t = np.arange(steps) * DT_S
        self._accel = np.gradient(self.speed, DT_S)

    @property
    def path_length(self) -> float:
        return float(self.path_x.size - 1) * DS_M

    def at_arc(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Path x, y and heading at arc lengths s (m)."""
        grid = np.arange(self.path_x.size) * DS_M
        return (np.interp(s, grid, self.path_x), np.interp(s, grid, self.path_y),
                np.interp(s, grid, self.heading))

    def states(self, t_ns: np.ndarray) -> dict[str, np.ndarray]:
        """Vectorised ego state at true times t_ns (x, y, yaw, vx, yaw_rate, ax, s)."""
        rel = (np.asarray(t_ns, dtype=np.int64) - self.start_ns) / NS_PER_S
        if np.any(rel < -1e-9) or np.any(rel > self.horizon_s):
            raise ValueError(f'time outside the simulated span [0, {self.horizon_s:.2f}] s '
                             f'of the run: {np.min(rel):.3f}..{np.max(rel):.3f} s')
        grid_t = self._grid_t
        s = np.interp(rel, grid_t, self.arc)
        v = np.interp(rel, grid_t, self.speed)
        x, y, yaw = self.at_arc(s)
        kappa = np.interp(s, np.arange(self.kappa.size) * DS_M, self.kappa)
        return {'x': x, 'y': y, 'yaw': yaw, 'vx': v, 'yaw_rate': kappa * v,
                'ax': np.interp(rel, grid_t, self._accel), 's': s}

    def state(self, t_ns: int) -> EgoState:
        st = self.states(np.array([t_ns]))
        return EgoState(t_ns=int(t_ns), x=float(st['x'][0]), y=float(st['y'][0]),
                        yaw=float(st['yaw'][0]), vx=float(st['vx'][0]), vy=0.0,
                        yaw_rate=float(st['yaw_rate'][0]), ax=float(st['ax'][0]))
