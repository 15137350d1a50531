"""Scenario definitions: timing, failure windows, world settings and seed splits, from YAML.

A scenario file names only what differs from the defaults below; see sim/README.md for the
format. The world a seed produces depends on the seed and the world settings alone, never on
the failures or timing, so the same seed under two scenarios is the same drive: that is how a
failure is compared against the clean scene.
"""

from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from fusion_nodes.core.config import CameraModel, LidarModel, NS_PER_S, SENSORS
from fusion_nodes.sim.timing import SensorTiming

SPLITS = ('train', 'val', 'test')
FAILURE_KINDS = {
    'camera': ('blackout', 'glare', 'blur', 'frozen', 'dirt', 'channel_swap', 'upside_down',
               'yaw_misaligned'),
    'lidar': ('dropout', 'sparse', 'rain', 'frozen', 'crosstalk', 'yaw_misaligned'),
    'gps': ('outage', 'no_fix', 'multipath', 'drift'),
}
# Kinds no training run may see: they judge whether the gates help against a failure the
# fusion head never learned to read. Only a held_out scenario may contain them.
HELD_OUT_KINDS = {('lidar', 'crosstalk'), ('camera', 'channel_swap'),
                  ('lidar', 'yaw_misaligned'), ('camera', 'upside_down'),
                  ('camera', 'yaw_misaligned')}
# Camera exposes instantly; a lidar message leaves after its 0.1 s sweep; GPS receivers batch.
DEFAULT_TIMING = {
    'camera': SensorTiming(rate_hz=30.0, latency_ms=15.0, latency_jitter_ms=2.0),
    'lidar': SensorTiming(rate_hz=10.0, latency_ms=105.0, latency_jitter_ms=3.0),
    'gps': SensorTiming(rate_hz=10.0, latency_ms=60.0, latency_jitter_ms=5.0),
}
# One global split for every scenario: a seed is one world, so a world used for training
# under one scenario must never be a test world under another.
DEFAULT_SEEDS = {'train': range(0, 10000), 'val': range(10000, 11000),
                 'test': range(11000, 12000)}
_SCENARIO_DIR = 'scenarios'


@dataclass(frozen=True)
class FailureWindow:
    """One failure of one sensor over [start_s, end_s) of the run, params per kind."""

    sensor: str
    kind: str
    start_s: float
    end_s: float
    params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sensor not in FAILURE_KINDS:
            raise ValueError(f'failure sensor {self.sensor!r} is not one of {SENSORS}')
        if self.kind not in FAILURE_KINDS[self.sensor]:
            raise ValueError(f'{self.sensor} failure kind {self.kind!r} is not one of '
                             f'{FAILURE_KINDS[self.sensor]}')
        if not 0.0 <= self.start_s < self.end_s:
            raise ValueError(f'{self.sensor} {self.kind} window [{self.start_s}, {self.end_s}) '
                             'must start at or after 0 and end after it starts')

    def active(self, t_rel_ns: int) -> bool:
        return round(self.start_s * NS_PER_S) <= t_rel_ns < round(self.end_s * NS_PER_S)


@dataclass(frozen=True)
class WorldParams:
    """Road, traffic and sensor-noise settings of the synthetic world."""

    cruise_speed_mps: tuple[float, float] = (5.0, 11.0)
    accel_mps2: tuple[float, float] = (1.2, 2.5)
    brake_mps2: tuple[float, float] = (2.0, 4.0)
    cruise_time_s: tuple[float, float] = (3.0, 8.0)
    stop_time_s: tuple[float, float] = (1.5, 3.5)
    stop_prob: float = 0.35
    straight_m: tuple[float, float] = (25.0, 70.0)
    turn_radius_m: tuple[float, float] = (30.0, 70.0)
    turn_angle_deg: tuple[float, float] = (25.0, 90.0)
    lane_width_m: float = 3.5
    object_spacing_m: float = 2.2
    class_weights: Mapping[str, float] = field(default_factory=lambda: {
        'car': 0.28, 'pedestrian': 0.18, 'cone': 0.18, 'red_cube': 0.18, 'blue_cube': 0.18})
    gps_sigma_h_m: float = 0.8
    gps_sigma_v_m: float = 1.5
    lidar_range_noise_m: float = 0.02
    camera_noise: float = 3.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple) and (len(value) != 2 or value[0] > value[1]
                                             or value[0] < 0.0):
                raise ValueError(f'world.{f.name} must be a (low, high) range with '
                                 f'0 <= low <= high, got {value}')
        if not 0.0 <= self.stop_prob <= 1.0:
            raise ValueError(f'world.stop_prob must be in [0, 1], got {self.stop_prob}')
        if self.object_spacing_m <= 0.5:
            raise ValueError(f'world.object_spacing_m must exceed 0.5, got '
                             f'{self.object_spacing_m}')
        if not self.class_weights or any(w < 0 for w in self.class_weights.values()):
            raise ValueError('world.class_weights must be non-negative and non-empty')
        if self.cruise_speed_mps[0] <= 0.5:
            raise ValueError('world.cruise_speed_mps must stay above 0.5 m/s')


@dataclass(frozen=True)
class Scenario:
    """Everything a run needs besides its seed."""

    name: str
    duration_s: float
    timing: Mapping[str, SensorTiming]
    failures: tuple[FailureWindow, ...] = ()
    world: WorldParams = field(default_factory=WorldParams)
    origin: tuple[float, float, float] = (48.1351, 11.5820, 520.0)
    seeds: Mapping[str, range] = field(default_factory=lambda: dict(DEFAULT_SEEDS))
    description: str = ''
    start_time_s: float = 1_750_000_000.0
    camera: CameraModel = field(default_factory=CameraModel)
    lidar: LidarModel = field(default_factory=LidarModel)
    # Test seeds only: training and validation data never come from it.
    held_out: bool = False

    def __post_init__(self) -> None:
        if self.duration_s <= 0.0:
            raise ValueError(f'scenario {self.name}: duration_s must be positive')
        unseen = sorted(f'{w.sensor} {w.kind}' for w in self.failures
                        if (w.sensor, w.kind) in HELD_OUT_KINDS)
        if unseen and not self.held_out:
            raise ValueError(f'scenario {self.name}: failure kinds {unseen} are held out of '
                             'training, so the scenario must set held_out: true')
        if set(self.timing) != set(SENSORS):
            raise ValueError(f'scenario {self.name}: timing must cover exactly {SENSORS}')
        if set(self.seeds) != set(SPLITS):
            raise ValueError(f'scenario {self.name}: seeds must have splits {SPLITS}')
        for i, a in enumerate(SPLITS):
            for b in SPLITS[i + 1:]:
                if set(self.seeds[a]) & set(self.seeds[b]):
                    raise ValueError(f'scenario {self.name}: {a} and {b} seeds overlap')
        for i, w in enumerate(self.failures):
            for other in self.failures[i + 1:]:
                if (other.sensor == w.sensor and other.start_s < w.end_s
                        and w.start_s < other.end_s):
                    raise ValueError(f'scenario {self.name}: overlapping {w.sensor} failure '
                                     f'windows {w.kind} and {other.kind}')

    @property
    def start_ns(self) -> int:
        """True time of the first sample (bag time base)."""
        return round(self.start_time_s * NS_PER_S)

    @property
    def duration_ns(self) -> int:
        return round(self.duration_s * NS_PER_S)

    def active_failure(self, sensor: str, t_ns: int) -> FailureWindow | None:
        """The failure window of a sensor active at true time t_ns, if any."""
        rel = t_ns - self.start_ns
        for window in self.failures:
            if window.sensor == sensor and window.active(rel):
                return window
        return None

    def failure_fraction(self, sensor: str) -> float:
        """Share of the run during which the sensor has some failure."""
        total = sum(max(0.0, min(w.end_s, self.duration_s) - w.start_s)
                    for w in self.failures if w.sensor == sensor)
        return total / self.duration_s


def list_scenarios() -> list[str]:
    """Names of the scenarios shipped in the package."""
    folder = resources.files('fusion_nodes.sim') / _SCENARIO_DIR
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith('.yaml'))


def load_scenario(name_or_path: str) -> Scenario:
    """A catalogue scenario by name, or a scenario YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in ('.yaml', '.yml') or path.exists():
        if not path.is_file():
            raise ValueError(f'scenario file {path} does not exist')
        text = path.read_text(encoding='utf8')
    else:
        resource = resources.files('fusion_nodes.sim') / _SCENARIO_DIR / f'{name_or_path}.yaml'
        if not resource.is_file():
            raise ValueError(f'unknown scenario {name_or_path!r}; the catalogue has '
                             f'{", ".join(list_scenarios())}, or give a .yaml path')
        text = resource.read_text(encoding='utf8')
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f'scenario {name_or_path}: invalid YAML: {error}') from error
    if not isinstance(raw, dict):
        raise ValueError(f'scenario {name_or_path}: expected a mapping at the top level')
    return scenario_from_dict(raw)


def _only_known(kind: str, given: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(given) - allowed
    if unknown:
        raise ValueError(f'{kind}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}')


def _as_range_tuples(values: Mapping[str, Any], cls: type) -> dict[str, Any]:
    """YAML lists become tuples so that the frozen dataclasses stay immutable."""
    out = {}
    for key, value in values.items():
        out[key] = tuple(value) if isinstance(value, list) else value
    names = {f.name for f in fields(cls)}
    _only_known(cls.__name__, out, names)
    return out


def scenario_from_dict(raw: Mapping[str, Any]) -> Scenario:
    """Build a Scenario from the parsed YAML mapping (defaults fill what is missing)."""
    allowed = {'name', 'description', 'duration_s', 'sensors', 'failures', 'world', 'origin',
               'seeds', 'start_time_s', 'lidar_model', 'camera_model', 'held_out'}
    _only_known('scenario', raw, allowed)
    if 'name' not in raw or 'duration_s' not in raw:
        raise ValueError('scenario needs at least name and duration_s')
    sensors = raw.get('sensors') or {}
    _only_known('sensors', sensors, set(SENSORS))
    timing = {}
    for sensor in SENSORS:
        overrides = sensors.get(sensor) or {}
        _only_known(f'sensors.{sensor}', overrides, {f.name for f in fields(SensorTiming)})
        timing[sensor] = replace(DEFAULT_TIMING[sensor], **overrides)
    failures = []
    for entry in raw.get('failures') or []:
        _only_known('failure', entry, {'sensor', 'kind', 'start_s', 'end_s', 'params'})
        failures.append(FailureWindow(
            sensor=entry['sensor'], kind=entry['kind'], start_s=float(entry['start_s']),
            end_s=float(entry['end_s']), params=dict(entry.get('params') or {})))
    origin_raw = raw.get('origin') or {}
    _only_known('origin', origin_raw, {'latitude', 'longitude', 'altitude'})
    default_origin = Scenario.__dataclass_fields__['origin'].default
    origin = (float(origin_raw.get('latitude', default_origin[0])),
              float(origin_raw.get('longitude', default_origin[1])),
              float(origin_raw.get('altitude', default_origin[2])))
    seeds = dict(DEFAULT_SEEDS)
    for split, bounds in (raw.get('seeds') or {}).items():
        if split not in SPLITS or not isinstance(bounds, list) or len(bounds) != 2:
            raise ValueError(f'seeds.{split}: expected one of {SPLITS} with [first, end)')
        seeds[split] = range(int(bounds[0]), int(bounds[1]))
    extra = {}
    if 'held_out' in raw:
        if not isinstance(raw['held_out'], bool):
            raise ValueError(f'held_out must be true or false, got {raw["held_out"]!r}')
        extra['held_out'] = raw['held_out']
    if 'lidar_model' in raw:
        extra['lidar'] = LidarModel(**_as_range_tuples(raw['lidar_model'], LidarModel))
    if 'camera_model' in raw:
        extra['camera'] = CameraModel(**_as_range_tuples(raw['camera_model'], CameraModel))
    return Scenario(
        name=str(raw['name']), duration_s=float(raw['duration_s']), timing=timing,
        failures=tuple(failures),
        world=WorldParams(**_as_range_tuples(raw.get('world') or {}, WorldParams)),
        origin=origin, seeds=seeds, description=str(raw.get('description', '')),
        start_time_s=float(raw.get('start_time_s', Scenario.__dataclass_fields__[
            'start_time_s'].default)),
        **extra)
