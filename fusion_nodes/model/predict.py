"""Batched torch inference over cached samples, for validation and evaluation."""

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from fusion_nodes.core.assessment import gps_in_multipath, sensor_in_error, sensors_in_error
from fusion_nodes.core.camera import grey_from_network_input
from fusion_nodes.core.camera_mount import CameraMountConfig, CameraMountMonitor, CameraMountState
from fusion_nodes.core.config import BevGrid, CameraPreprocessConfig, SENSORS
from fusion_nodes.core.lidar_mount import LidarMountConfig, LidarMountMonitor, LidarMountState
from fusion_nodes.core.lidar_odometry import join_ego, LidarOdometry, LidarOdometryConfig
from fusion_nodes.core.yaw_blame import blame_for_yaw, YawBlameConfig
from fusion_nodes.model.network import GatedFusionNet

MountMonitor = CameraMountMonitor | LidarMountMonitor
MountState = CameraMountState | LidarMountState
INPUT_KEYS = ('camera', 'lidar', 'gps', 'health', 'available')
_SENSOR_INPUTS = {'camera': 'camera', 'lidar': 'lidar', 'gps': 'gps'}


def mask_sensors(batch: dict[str, torch.Tensor], keep: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The batch with every sensor outside keep missing: zero inputs, health and availability."""
    unknown = set(keep) - set(SENSORS)
    if unknown:
        raise ValueError(f'unknown sensors {sorted(unknown)}; expected some of {SENSORS}')
    out = dict(batch)
    available = batch['available'].clone()
    health = batch['health'].clone()
    for k, sensor in enumerate(SENSORS):
        if sensor not in keep:
            out[_SENSOR_INPUTS[sensor]] = torch.zeros_like(batch[_SENSOR_INPUTS[sensor]])
            available[:, k] = 0.0
            health[:, k] = 0.0
    out['available'] = available
    out['health'] = health
    return out


def _rows_by_recording(samples: dict[str, np.ndarray]) -> Iterator[np.ndarray]:
    """The row indices of each recording, in capture order: the order its nodes ran."""
    n = samples['capture_ns'].shape[0]
    recordings = samples.get('recording', np.zeros(n, dtype=np.int64))
    for recording in np.unique(recordings):
        rows = np.flatnonzero(recordings == recording)
        yield rows[np.argsort(samples['capture_ns'][rows], kind='stable')]


def _delivered_healthy(samples: dict[str, np.ndarray], sensor: str, row: int) -> bool:
    """Whether the sensor delivered in this row with health short of ERROR."""
    k = SENSORS.index(sensor)
    return bool(samples['available'][row, k] > 0
                and not sensor_in_error(sensor, samples['health'][row, k]))


def _replay_mount_check(samples: dict[str, np.ndarray], sensor: str,
                        new_monitor: Callable[[], MountMonitor],
                        frame_of: Callable[[int], np.ndarray]) -> list[MountState]:
    """A sensor node's mount check state at each sample (n states).

    Replayed recording by recording in capture order, as the node feeds its messages: each
    sample's input at its capture time, skipping samples without the sensor, with its health
    in ERROR, or repeating the previous sample's input (two camera frames paired with one
    scan). frame_of(row) is what the node feeds its monitor for that row.
    """
    key = _SENSOR_INPUTS[sensor]
    states: list[MountState] = [None] * samples['capture_ns'].shape[0]
    for rows in _rows_by_recording(samples):
        monitor = new_monitor()
        previous = None
        for k in rows:
            usable = _delivered_healthy(samples, sensor, k)
            repeat = previous is not None and np.array_equal(previous, samples[key][k])
            states[k] = (monitor.update(int(samples['capture_ns'][k]), frame_of(k))
                         if usable and not repeat else monitor.state())
            previous = samples[key][k]
    return states


@dataclass(frozen=True)
class LidarReplay:
    """What lidar_node's mount check said at each of n samples: in ERROR (bool (n,)), the
    travel heading evidence for the yaw blame (mount.travel_heading_deg, NaN for none), and
    its lidar odometry ((n, 3) velocity and variance, NaN for none)."""

    errors: np.ndarray
    travel_headings: np.ndarray
    odometry_velocity: np.ndarray
    odometry_variance: np.ndarray


def lidar_mount_replay(samples: dict[str, np.ndarray], grid: BevGrid,
                       cfg: LidarMountConfig = LidarMountConfig(),
                       odometry_cfg: LidarOdometryConfig = LidarOdometryConfig()
                       ) -> LidarReplay:
    """lidar_node's mount check (lidar_mount) and lidar odometry replayed once."""
    states = _replay_mount_check(samples, 'lidar', lambda: LidarMountMonitor(grid, cfg),
                                 lambda k: samples['lidar'][k, 0])
    velocity, variance = _replay_odometry(samples, states, odometry_cfg)
    return LidarReplay(np.array([state.in_error for state in states], dtype=bool),
                       np.array([state.travel_heading_deg for state in states],
                                dtype=np.float64), velocity, variance)


def _replay_odometry(samples: dict[str, np.ndarray], states: list[LidarMountState],
                     cfg: LidarOdometryConfig) -> tuple[np.ndarray, np.ndarray]:
    """lidar_node's odometry at each sample from the replayed mount check's registrations:
    none while the lidar is missing or its health in ERROR (the node sends NaN then)."""
    n = samples['capture_ns'].shape[0]
    velocity = np.full((n, 3), np.nan)
    variance = np.full((n, 3), np.nan)
    for rows in _rows_by_recording(samples):
        odometry = LidarOdometry(cfg)
        for k in rows:
            if not _delivered_healthy(samples, 'lidar', k):
                continue
            # A repeated sweep (two camera frames on one scan) carries no motion: same estimate.
            estimate = odometry.update(int(samples['capture_ns'][k]), states[k].motion,
                                       states[k].motion_span_ns)
            velocity[k], variance[k] = estimate.velocity, estimate.variance
    return velocity, variance


def with_lidar_odometry(ego: np.ndarray, ego_log_variance: np.ndarray,
                        odometry_velocity: np.ndarray, odometry_variance: np.ndarray,
                        lidar_kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The network's ego ((n, 3) velocity and log variance) joined with the lidar odometry by
    inverse variance, in rows whose lidar the fusion kept, as fusion_node does: (velocity,
    variance), both (n, 3)."""
    kept = np.asarray(lidar_kept, dtype=bool)[:, None]
    return join_ego(ego, ego_log_variance, np.where(kept, odometry_velocity, np.nan),
                    odometry_variance)


def without_multipath_gps(samples: dict[str, np.ndarray],
                          odometry_velocity: np.ndarray) -> dict[str, np.ndarray]:
    """samples with the GPS made missing in rows where its health shows a multipath episode
    (gps_in_multipath) and a kept lidar gives odometry to carry the ego velocity instead,
    as fusion_node does with drop_gps_on_multipath."""
    k_gps, k_lidar = SENSORS.index('gps'), SENSORS.index('lidar')
    replaced = ((samples['available'][:, k_lidar] > 0)
                & np.isfinite(odometry_velocity).all(axis=1))
    drop = np.zeros((replaced.size, len(SENSORS)), dtype=bool)
    drop[:, k_gps] = replaced & (samples['available'][:, k_gps] > 0) & np.array(
        [gps_in_multipath(row) for row in samples['health'][:, k_gps]], dtype=bool)
    return _made_missing(samples, drop)


def lidar_mount_errors(samples: dict[str, np.ndarray], grid: BevGrid,
                       cfg: LidarMountConfig = LidarMountConfig()) -> np.ndarray:
    """Bool (n,): lidar_node's mount check (lidar_mount) in ERROR at each sample."""
    return lidar_mount_replay(samples, grid, cfg).errors


def camera_mount_errors(samples: dict[str, np.ndarray], camera_input: CameraPreprocessConfig,
                        cfg: CameraMountConfig = CameraMountConfig()) -> np.ndarray:
    """Bool (n,): camera_node's mount check (camera_mount) in ERROR at each sample."""
    states = _replay_mount_check(
        samples, 'camera', lambda: CameraMountMonitor(cfg),
        lambda k: grey_from_network_input(samples['camera'][k], camera_input))
    return np.array([state.in_error for state in states], dtype=bool)


def without_errors(samples: dict[str, np.ndarray], lidar_mount: np.ndarray | None = None,
                   camera_mount: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """samples with each sensor in ERROR made missing, row by row.

    What fusion_node does with drop_sensor_on_error (the shipped setting), so offline figures
    of the product match the live node's. ERROR comes from each row's health and from the
    nodes' mount checks over the rows before it, replayed by the caller: lidar_mount
    (lidar_mount_errors) and camera_mount (camera_mount_errors), bool (n,) each.
    """
    error = sensors_in_error(samples['health'])
    if lidar_mount is not None:
        error[:, SENSORS.index('lidar')] |= lidar_mount
    if camera_mount is not None:
        error[:, SENSORS.index('camera')] |= camera_mount
    return _made_missing(samples, error)


def with_yaw_blame(samples: dict[str, np.ndarray], model: GatedFusionNet,
                   travel_headings: np.ndarray, cfg: YawBlameConfig = YawBlameConfig()
                   ) -> dict[str, np.ndarray]:
    """samples with the sensor fusion_node blames for a camera-lidar yaw disagreement made
    missing, row by row: where the model's yaw_disagreement is 1, blame_for_yaw of the row's
    lidar travel heading (lidar_mount_replay). Give it samples without_errors already."""
    disagreement = predict(model, samples)['yaw_disagreement'][:, 0] >= 0.5
    blamed = np.zeros((disagreement.size, len(SENSORS)), dtype=bool)
    for row in np.flatnonzero(disagreement):
        sensor = blame_for_yaw(float(travel_headings[row]), cfg)
        if sensor is not None:
            blamed[row, SENSORS.index(sensor)] = True
    return _made_missing(samples, blamed)


def _made_missing(samples: dict[str, np.ndarray], error: np.ndarray
                  ) -> dict[str, np.ndarray]:
    """samples with the sensors marked in error ([n, 3]) missing: zero input, health and
    availability."""
    if not error.any():
        return samples
    out = dict(samples)
    out['available'] = np.where(error, 0.0, samples['available']).astype(
        samples['available'].dtype)
    out['health'] = np.where(error[..., None], 0.0, samples['health']).astype(
        samples['health'].dtype)
    for k, sensor in enumerate(SENSORS):
        rows = error[:, k]
        if rows.any():
            key = _SENSOR_INPUTS[sensor]
            out[key] = samples[key].copy()
            out[key][rows] = 0.0
    return out


@torch.no_grad()
def predict(model: GatedFusionNet, samples: dict[str, np.ndarray],
            keep: tuple[str, ...] = SENSORS, batch_size: int = 64,
            open_gates: bool = False) -> dict[str, np.ndarray]:
    """Class maps of the fused, camera-aux, lidar-aux and late-fused heads, ego and gates.

    keep masks the other sensors out, as if they had never delivered (single modality runs).
    open_gates pins every gate to the availability bit (the model without its gating).
    Late fusion averages the single-sensor heads' probabilities over the sensors present and
    takes ego from the GPS branch with its gate pinned to availability.
    """
    model.eval()
    n = samples['camera'].shape[0]
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch_size):
        stop = start + batch_size
        batch = {key: torch.from_numpy(np.ascontiguousarray(samples[key][start:stop]))
                 for key in INPUT_KEYS}
        batch = mask_sensors(batch, keep)
        fixed = model.forward_all(**batch, gate_override=batch['available'])
        out = fixed if open_gates else model.forward_all(**batch)
        present = batch['available'][:, :2, None, None, None]
        probs = torch.stack([out['camera_logits'].softmax(1), out['lidar_logits'].softmax(1)], 1)
        late = (probs * present).sum(1) / present.sum(1).clamp(min=1.0)
        results = {
            'bev': out['bev_logits'].argmax(1),
            'camera_aux': out['camera_logits'].argmax(1),
            'lidar_aux': out['lidar_logits'].argmax(1),
            'late': late.argmax(1),
            'ego': out['ego_velocity'],
            'ego_log_variance': out['ego_log_variance'],
            'late_ego': fixed['ego_velocity'],
            'gates': out['gates'],
            'yaw_disagreement': out['yaw_disagreement'],
        }
        for key, value in results.items():
            array = value.numpy()
            parts.setdefault(key, []).append(array.astype(np.uint8) if value.dtype == torch.int64
                                             else array)
    return {key: np.concatenate(values) for key, values in parts.items()}
