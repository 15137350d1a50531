"""The synthetic world of one scenario and seed: every method is a pure function of true time.

The seed alone fixes the drive, the objects and the textures (the scenario's failures and
timing do not enter), so two scenarios with the same seed show the same scene. Per-sample
noise is seeded from (seed, stream, t_ns), which makes any call repeatable in any order.
"""

import math

import cv2
import numpy as np

from fusion_nodes.core.config import BevGrid, SENSORS
from fusion_nodes.sim.failures import camera_failure, lidar_failure
from fusion_nodes.sim.gps_sim import GpsFix, GpsSimulator
from fusion_nodes.sim.ground import GroundMap
from fusion_nodes.sim.lidar_cast import LidarCaster
from fusion_nodes.sim.objects import box_footprints, ObjectArrays, place_objects, SimObject
from fusion_nodes.sim.render import CameraRenderer
from fusion_nodes.sim.scenario import FailureWindow, Scenario
from fusion_nodes.sim.trajectory import EgoState, Trajectory

# Simulated beyond the run so that late arrivals, a final sweep and look-ahead stay in range.
_HORIZON_MARGIN_S = 2.0
_OBJECT_RADIUS_M = 60.0


class World:
    """Ego drive, objects and sensors of one (scenario, seed)."""

    def __init__(self, scenario: Scenario, seed: int, horizon_s: float | None = None,
                 bev_grid: BevGrid = BevGrid()) -> None:
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
        self.scenario = scenario
        self.seed = int(seed)
        self.grid = bev_grid
        traj_rng, obj_rng, ground_rng, render_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(self.seed).spawn(4))
        horizon = max(scenario.duration_s, horizon_s or 0.0) + _HORIZON_MARGIN_S
        self.trajectory = Trajectory(scenario.world, traj_rng, horizon, scenario.start_ns)
        self._objects = place_objects(scenario.world, self.trajectory, obj_rng)
        self._arrays = ObjectArrays.from_objects(self._objects)
        self.ground = GroundMap(scenario.world, self.trajectory, ground_rng)
        self._renderer = CameraRenderer(scenario.camera, self.ground,
                                        scenario.world.camera_noise, render_rng)
        self._lidar = LidarCaster(scenario.lidar, scenario.timing['lidar'].period_ns,
                                  scenario.world.lidar_range_noise_m)
        self._gps = GpsSimulator(scenario.origin, scenario.world, self.seed)

    @property
    def all_objects(self) -> list[SimObject]:
        return list(self._objects)

    def _window_start_ns(self, window: FailureWindow) -> int:
        return self.scenario.start_ns + round(window.start_s * 1e9)

    def ego_state(self, t_ns: int) -> EgoState:
        """True pose in odom (ENU) and twist in base_link."""
        return self.trajectory.state(int(t_ns))

    def clean_camera(self, t_ns: int) -> np.ndarray:
        """The frame a healthy camera captures at t_ns."""
        ego = self.ego_state(t_ns)
        return self._renderer.render(ego.x, ego.y, ego.yaw, self._arrays,
                                     int(t_ns) // 1_000_000)

    def render_camera(self, t_ns: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB captured at t_ns, with the active camera failure applied."""
        window = self.scenario.active_failure('camera', t_ns)
        if window is None:
            return self.clean_camera(t_ns)
        if window.kind == 'frozen':
            return self.clean_camera(self._window_start_ns(window))
        if window.kind == 'yaw_misaligned':
            return self._turned_camera(t_ns, math.radians(float(window.params.get('yaw_deg',
                                                                                  20.0))))
        return camera_failure(self.clean_camera(t_ns), window, self.seed, int(t_ns))

    def _turned_camera(self, t_ns: int, yaw: float) -> np.ndarray:
        """The frame of a camera turned by yaw (counter-clockwise) about its own mount point.

        Rendered as from a vehicle turned by yaw and moved so that the camera stays where it
        is: a sharp, well-exposed, healthy-looking frame that the calibration misplaces.
        """
        ego = self.ego_state(t_ns)
        tx, ty = (float(v) for v in self.scenario.camera.translation[:2])
        c, s = math.cos(ego.yaw), math.sin(ego.yaw)
        ct, st = math.cos(ego.yaw + yaw), math.sin(ego.yaw + yaw)
        x = ego.x + (c * tx - s * ty) - (ct * tx - st * ty)
        y = ego.y + (s * tx + c * ty) - (st * tx + ct * ty)
        return self._renderer.render(x, y, ego.yaw + yaw, self._arrays,
                                     int(t_ns) // 1_000_000)

    def clean_lidar(self, t_ns: int) -> np.ndarray:
        """The sweep a healthy lidar starts at t_ns (POINT_DTYPE, lidar frame)."""
        rng = np.random.default_rng([self.seed, 71, int(t_ns)])
        return self._lidar.cast(int(t_ns), self.trajectory, self._arrays, self.ground, rng)

    def lidar_scan(self, t_ns: int) -> np.ndarray:
        """Sweep started at t_ns with the active lidar failure applied."""
        window = self.scenario.active_failure('lidar', t_ns)
        if window is None:
            return self.clean_lidar(t_ns)
        if window.kind == 'frozen':
            return self.clean_lidar(self._window_start_ns(window))
        model = self.scenario.lidar
        return lidar_failure(self.clean_lidar(t_ns), window, self.seed, int(t_ns),
                             model.elevations(), model.max_range,
                             self._lidar.scan_period_ns / 1e9)

    def gps_fix(self, t_ns: int) -> GpsFix | None:
        """Fix of the base_link position at t_ns; None while the receiver is silent (outage)."""
        window = self.scenario.active_failure('gps', t_ns)
        ego = self.ego_state(t_ns)
        start = self._window_start_ns(window) if window is not None else 0
        return self._gps.fix(int(t_ns), ego.x, ego.y, window, start)

    def objects(self, t_ns: int, radius_m: float = _OBJECT_RADIUS_M) -> list[SimObject]:
        """Objects (static, in odom) within radius_m of the ego at t_ns."""
        ego = self.ego_state(t_ns)
        return [self._objects[i] for i in self._arrays.near(ego.x, ego.y, radius_m)]

    def bev_ground_truth(self, t_ns: int) -> np.ndarray:
        """(rows along x, cols along y) uint8 class ids in base_link at t_ns; 0 is free.

        A cell takes an object's class when the footprint touches it, so even a cone smaller
        than a cell is marked. Larger objects are drawn first so small ones stay visible.
        """
        grid = self.grid
        out = np.zeros(grid.shape, dtype=np.uint8)
        ego = self.ego_state(t_ns)
        reach = math.hypot(max(abs(grid.x_min), abs(grid.x_max)),
                           max(abs(grid.y_min), abs(grid.y_max))) + 4.0
        idx = self._arrays.near(ego.x, ego.y, reach)
        if idx.size == 0:
            return out
        foot = box_footprints(self._arrays.centres[idx], self._arrays.yaws[idx],
                              self._arrays.sizes[idx, :2])
        c, s = math.cos(ego.yaw), math.sin(ego.yaw)
        dx, dy = foot[..., 0] - ego.x, foot[..., 1] - ego.y
        xb = c * dx + s * dy
        yb = -s * dx + c * dy
        # Pixel (col, row) = (y index, x index); pixel centres sit at integer coordinates.
        cols = (yb - grid.y_min) / grid.resolution - 0.5
        rows = (xb - grid.x_min) / grid.resolution - 0.5
        area = self._arrays.sizes[idx, 0] * self._arrays.sizes[idx, 1]
        for k in np.argsort(-area, kind='stable'):
            pts = np.round(np.stack([cols[k], rows[k]], axis=1) * 16.0).astype(np.int32)
            cv2.fillConvexPoly(out, pts, int(self._arrays.class_ids[idx[k]]), cv2.LINE_8, 4)
        return out

    def failure_flags(self, t_ns: int) -> dict[str, str | None]:
        """Active failure kind per sensor at t_ns (None when healthy)."""
        flags = {}
        for sensor in SENSORS:
            window = self.scenario.active_failure(sensor, t_ns)
            if (sensor == 'gps' and window is not None
                    and not self._gps.corrupts(window, self._window_start_ns(window), t_ns)):
                window = None
            flags[sensor] = window.kind if window is not None else None
        return flags

    def failure_change_times(self, end_ns: int) -> list[int]:
        """Sorted true times before end_ns at which failure_flags may change.

        Window edges and multipath slot edges: truth published at these instants, besides the
        camera captures, makes the held /gt/failures state exact at every capture time.
        """
        times = set()
        for window in self.scenario.failures:
            start = self._window_start_ns(window)
            end = self.scenario.start_ns + round(window.end_s * 1e9)
            times.update((start, end))
            if window.sensor == 'gps':
                times.update(self._gps.change_times_ns(window, start, end))
        return sorted(t for t in times if self.scenario.start_ns <= t < end_ns)
