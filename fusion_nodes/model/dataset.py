"""The training and test sets: generator bags per scenario seed, cached as feature .npz files.

Bags and features live under data/ (git-ignored). A feature file's name carries a key over
everything that shapes its contents (the node parameters, the pairing, the pipeline
version), so a change there re-extracts instead of silently reusing stale features.
"""

from dataclasses import asdict, dataclass, field
import hashlib
import json
from pathlib import Path
import shutil
from typing import Iterable, Mapping
import zlib

import numpy as np
from tqdm import tqdm

from fusion_nodes.model.bag_samples import extract_bag_samples, PairingConfig, SAMPLE_FIELDS
from fusion_nodes.nodes.params import CAMERA_PARAMS, GPS_PARAMS, LIDAR_PARAMS

# Bump when the extraction's own code changes what it computes (params are in the key too).
# 2: the GPS track restarts after an outage at the mean velocity across it, not at 0.
# 3: exact failure labels (truth at every window edge; clean multipath slots are healthy).
PIPELINE_VERSION = 3
# Sensor-node params that never reach the cached features or health: a diagnostic level, a
# published covariance.
OUTSIDE_FEATURES_PARAMS = frozenset({'mount_check', 'velocity_lag_s', 'velocity_floor_sigma'})
SPLITS = ('train', 'test')


@dataclass(frozen=True)
class DataSpec:
    """Where the data lives and how the bags are made."""

    data_dir: Path = Path('data')
    duration_s: float = 20.0
    storage: str = 'mcap'
    compressed_camera: bool = False
    pairing: PairingConfig = PairingConfig()
    seeds_per_scenario: Mapping[str, int] = field(
        default_factory=lambda: {'train': 3, 'test': 2})
    keep_bags: bool = False

    def __post_init__(self) -> None:
        if self.duration_s <= 0.0:
            raise ValueError(f'duration_s must be positive, got {self.duration_s}')
        if set(self.seeds_per_scenario) != set(SPLITS):
            raise ValueError(f'seeds_per_scenario needs a count for each of {SPLITS}')

    def features_key(self) -> str:
        described = {
            'version': PIPELINE_VERSION,
            # fusion_node's params reach the features only through the pairing (its staleness),
            # so its runtime settings (waits, timers, outputs) never invalidate a cache.
            'params': [{k: v for k, v in params.items() if k not in OUTSIDE_FEATURES_PARAMS}
                       for params in (CAMERA_PARAMS, LIDAR_PARAMS, GPS_PARAMS)],
            'pairing': asdict(self.pairing),
            'duration_s': self.duration_s,
            'compressed_camera': self.compressed_camera,
        }
        text = json.dumps(described, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Recording:
    """One scenario seed: its bag and its cached features."""

    scenario: str
    seed: int
    bag: Path
    features: Path


def scenario_seeds(scenario, split: str, count: int, offset: int = 0) -> list[int]:
    """count seeds of the scenario's split, starting offset seeds into it."""
    if split not in SPLITS:
        raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    available = scenario.seeds[split]
    if count < 1 or offset < 0 or offset + count > len(available):
        raise ValueError(f'scenario {scenario.name!r} has {len(available)} {split} seeds; '
                         f'asked for {count} from {offset}')
    return [int(s) for s in available[offset:offset + count]]


def recordings(split: str, spec: DataSpec, scenarios: Iterable[str] | None = None
               ) -> list[Recording]:
    """Every (scenario, seed) of a split, with the paths its bag and features will have."""
    from fusion_nodes.sim.scenario import list_scenarios, load_scenario
    names = list(scenarios) if scenarios is not None else list(list_scenarios())
    out = []
    key = spec.features_key()
    for name in names:
        # A seed is one world in every scenario. Test scenarios share their seeds, so each
        # failure is judged on the same drives as nominal; training gives each scenario its
        # own worlds, for variety, at an offset fixed by the name alone (not by the catalogue's
        # contents, which would reshuffle every cached recording when a scenario is added).
        scenario = load_scenario(name)
        if scenario.held_out and split != 'test':
            if scenarios is not None:
                raise ValueError(f'scenario {name!r} is held out of training: it has test '
                                 f'seeds only, not {split}')
            continue
        count = spec.seeds_per_scenario[split]
        offset = (zlib.crc32(name.encode()) % 3000) * count if split == 'train' else 0
        for seed in scenario_seeds(scenario, split, count, offset):
            stem = f'{name}_seed{seed}_{spec.duration_s:g}s'
            out.append(Recording(name, seed, spec.data_dir / 'bags' / stem,
                                 spec.data_dir / 'features' / f'{stem}_{key}.npz'))
    return out


def ensure_bag(recording: Recording, spec: DataSpec) -> Path:
    """Generate the recording's bag unless it exists already."""
    from fusion_nodes.sim.writer import generate_bag_once
    return generate_bag_once(recording.scenario, recording.seed, recording.bag,
                             duration_s=spec.duration_s, storage=spec.storage,
                             compressed_camera=spec.compressed_camera, progress=False)


def ensure_features(recording: Recording, spec: DataSpec) -> Path:
    """Extract and cache the recording's samples unless cached already."""
    if recording.features.exists():
        return recording.features
    samples = extract_bag_samples(ensure_bag(recording, spec), spec.pairing)
    recording.features.parent.mkdir(parents=True, exist_ok=True)
    partial = recording.features.with_suffix('.partial.npz')
    np.savez(partial, **samples)
    partial.replace(recording.features)  # never leave a half-written cache behind
    if not spec.keep_bags:
        # A bag is ~0.4 GB and regenerates bit for bit from its seed; the features are kept.
        shutil.rmtree(recording.bag)
    return recording.features


def prepare(split: str, spec: DataSpec, scenarios: Iterable[str] | None = None,
            progress: bool = True) -> list[Recording]:
    """Generate and extract whatever is missing for a split."""
    items = recordings(split, spec, scenarios)
    for recording in tqdm(items, desc=f'{split} data', disable=not progress):
        ensure_features(recording, spec)
    return items


def load_samples(items: list[Recording]) -> dict[str, np.ndarray]:
    """All samples of the recordings, concatenated, with 'scenario' and 'recording' indices."""
    if not items:
        raise ValueError('no recordings to load')
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SAMPLE_FIELDS}
    scenario_names = sorted({r.scenario for r in items})
    scenario_index, recording_index = [], []
    for k, recording in enumerate(items):
        with np.load(recording.features) as data:
            for name in SAMPLE_FIELDS:
                parts[name].append(data[name])
            count = data['capture_ns'].shape[0]
        scenario_index.append(np.full(count, scenario_names.index(recording.scenario)))
        recording_index.append(np.full(count, k))
    out = {name: np.concatenate(values) for name, values in parts.items()}
    out['scenario'] = np.concatenate(scenario_index)
    out['recording'] = np.concatenate(recording_index)
    out['scenario_names'] = np.array(scenario_names)
    return out


def data_sha256(items: list[Recording]) -> str:
    """One hash over the feature files (in recording order), for the model metadata."""
    digest = hashlib.sha256()
    for recording in items:
        digest.update(f'{recording.scenario}:{recording.seed}:'.encode())
        with open(recording.features, 'rb') as handle:
            for block in iter(lambda: handle.read(1 << 20), b''):
                digest.update(block)
    return digest.hexdigest()
