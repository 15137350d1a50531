"""fusion-train: train the gated fusion network on generator data and write models/.

Data: every scenario's train seeds (nominal and failure scenarios alike), replayed through
the sensor nodes' own processing (see fusion_nodes.model.dataset). Augmentation is modality
dropout: a sensor's inputs, health and availability bit are zeroed at random, which teaches
the fused head to work from any subset. Sensor corruption (blackout, glare, rain, dropout,
GPS jumps) comes from the generator's failure scenarios, whose health features the core
trackers computed from the corrupted data itself and whose /gt/failures flags supervise the
gates. The whole run is seeded.
"""

import argparse
from dataclasses import asdict, dataclass, replace
import math
from pathlib import Path
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from fusion_nodes.core.config import SEMANTIC_CLASSES, SENSORS
from fusion_nodes.model.export import (
    json_finite, load_trained_model, reexport_model, write_model)
from fusion_nodes.model.losses import class_weights, fusion_loss, LossWeights
from fusion_nodes.model.metrics import confusion, gate_means, mean_iou, rmse
from fusion_nodes.model.network import GatedFusionNet, NetworkConfig
from fusion_nodes.model.predict import INPUT_KEYS, predict

MODEL_NAME = 'gated_fusion'
MODEL_VERSION = '1.4.0'
# Gates under 0.1 drop their sensor at inference (see NetworkConfig.gate_floor).
GATE_FLOOR = 0.1
VETO_SENSORS = ('camera', 'lidar')
# The lidar veto dropped the rain and combined scenarios' degraded lidar, which model 1.3's
# gates had learned to keep at part weight, and cost 0.027-0.035 mIoU in those windows.
DEFAULT_VETO_SENSORS = ('camera',)
# The yaw vetoes a gated model gets by default: the camera's (NetworkConfig.
# camera_disagreement_veto) only. A camera turned on its mount looks to the yaw check like a
# lidar turned the other way, so the lidar veto drops the healthy lidar and keeps the turned
# camera: camera_yaw_misaligned 0.174 against the lidar alone's 0.434 (model 1.5.0, three
# test seeds), where it fixed the turned lidar (0.284 -> 0.309 = camera alone).
YAW_VETO_SENSORS = ('camera', 'lidar')
DEFAULT_YAW_VETOES = ('camera',)
# The lidar yaw veto (NetworkConfig.lidar_yaw_veto) from healthy training frames: a gain of
# twice the highest any of them shows, and the agreement their first percentile reaches.
YAW_GAIN_MARGIN = 2.0
YAW_AGREEMENT_PERCENTILE = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; dropout is the per-sensor modality-dropout probability."""

    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    dropout: tuple[float, float, float] = (0.2, 0.2, 0.2)
    gate_mode: str = 'learned'
    threads: int = 2
    # NetworkConfig.absent_code; off in the shipped model (see the model README).
    absent_code: bool = False
    # NetworkConfig.gate_consistency: the camera and lidar gates see how far the two
    # single-sensor heads agree. On in the shipped model (fusion-train turns it on for
    # the gated variant); off here so that a config without it means what it did before.
    gate_consistency: bool = False
    # NetworkConfig.gate_novelty, likewise: fusion-train turns it on for the gated variant.
    gate_novelty: bool = False
    # Where the steps run: 'cpu' or 'cuda[:N]'. Batches and modality dropout are drawn on the
    # CPU either way, so a seed draws the same batches on both.
    device: str = 'cpu'

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError('epochs and batch_size must be >= 1')
        check_device(self.device)
        if len(self.dropout) != len(SENSORS) or not all(0.0 <= p < 1.0 for p in self.dropout):
            raise ValueError(f'dropout needs one probability in [0, 1) per sensor {SENSORS}')


def check_device(device: str) -> None:
    """ValueError unless device is 'cpu', or 'cuda[:N]' with a GPU that torch can see."""
    if device != 'cpu' and not (device == 'cuda' or device.startswith('cuda:')):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    if device != 'cpu' and not torch.cuda.is_available():
        raise ValueError(f'device {device} asked for, but torch sees no CUDA device')


def modality_dropout(batch: dict[str, torch.Tensor], probs: tuple[float, ...],
                     gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Zero each sensor's inputs, health and availability with its probability.

    Camera and lidar are never both dropped: with neither, the BEV target is unlearnable and
    the step would only teach the head a class prior.
    """
    size = batch['available'].shape[0]
    drop = torch.rand(size, len(SENSORS), generator=gen) < torch.tensor(probs)
    both = drop[:, 0] & drop[:, 1]
    pick_camera = torch.rand(size, generator=gen) < 0.5
    drop[both & pick_camera, 1] = False
    drop[both & ~pick_camera, 0] = False
    keep = (~drop).float()
    out = dict(batch)
    out['camera'] = batch['camera'] * keep[:, 0, None, None, None]
    out['lidar'] = batch['lidar'] * keep[:, 1, None, None, None]
    out['gps'] = batch['gps'] * keep[:, 2, None]
    out['health'] = batch['health'] * keep[:, :, None]
    out['available'] = batch['available'] * keep
    return out


def _tensors(samples: dict[str, np.ndarray], index: np.ndarray) -> dict[str, torch.Tensor]:
    batch = {key: torch.from_numpy(samples[key][index]) for key in INPUT_KEYS}
    for key in ('camera', 'lidar'):
        batch[key] = batch[key].contiguous(memory_format=torch.channels_last)
    batch['bev'] = torch.from_numpy(samples['bev'][index].astype(np.int64))
    batch['ego'] = torch.from_numpy(samples['ego'][index].astype(np.float32))
    batch['failed'] = torch.from_numpy(samples['failed'][index].astype(np.float32))
    return batch


def train_model(samples: dict[str, np.ndarray], cfg: TrainConfig,
                arch: NetworkConfig | None = None, progress: bool = True
                ) -> tuple[GatedFusionNet, list[dict[str, float]]]:
    """Train from concatenated samples; returns the eval-mode model and per-epoch losses."""
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    arch = arch or NetworkConfig(gate_mode=cfg.gate_mode, mask_in_head=True,
                                 gate_floor=GATE_FLOOR, absent_code=cfg.absent_code,
                                 gate_consistency=cfg.gate_consistency,
                                 gate_novelty=cfg.gate_novelty)
    # channels_last lets oneDNN pick its fast convolution kernels: about 1.4x per step here.
    model = GatedFusionNet(cfg=arch).to(device=device, memory_format=torch.channels_last)
    weights = class_weights(samples['bev'], len(SEMANTIC_CLASSES)).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)
    n = samples['camera'].shape[0]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=cfg.learning_rate, total_steps=cfg.epochs * steps_per_epoch,
        pct_start=0.15)
    supervise = arch.gate_mode == 'learned'
    history = []
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(n)
        sums: dict[str, float] = {}
        bar = tqdm(range(steps_per_epoch), desc=f'epoch {epoch + 1}/{cfg.epochs}',
                   disable=not progress, leave=False)
        for step in bar:
            index = np.sort(order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
            batch = {key: value.to(device, non_blocking=True) for key, value in
                     modality_dropout(_tensors(samples, index), cfg.dropout, gen).items()}
            out = model.forward_all(**{key: batch[key] for key in INPUT_KEYS})
            loss, parts = fusion_loss(out, batch['bev'], batch['ego'], batch['failed'],
                                      batch['available'], weights, LossWeights(), supervise)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimiser.step()
            schedule.step()
            model.track_healthy_features(out, batch['available'] * (1.0 - batch['failed']))
            parts['total'] = float(loss.detach())
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.set_postfix(loss=f'{parts["total"]:.3f}')
        means = {key: value / steps_per_epoch for key, value in sums.items()}
        history.append(means)
        if progress:
            summary = ', '.join(f'{k} {v:.4f}' for k, v in means.items())
            tqdm.write(f'epoch {epoch + 1}: {summary}')
    # Back on the CPU: evaluation, calibration and export all run there.
    return model.to(device='cpu', memory_format=torch.contiguous_format).eval(), history


def healthy_novelty_ceiling(model: GatedFusionNet, samples: dict[str, np.ndarray],
                            batch_size: int = 128) -> tuple[float, float]:
    """The highest camera and lidar novelty scores over healthy, present samples.

    These become NetworkConfig.novelty_veto: at inference a sensor whose features lie farther
    from healthy training data than every healthy training frame's is dropped.
    """
    if not model.cfg.gate_novelty:
        raise ValueError('the model has no novelty input to set a veto on')
    healthy = samples['available'] * (1.0 - samples['failed'])
    ceilings = [-math.inf, -math.inf]
    model.eval()
    with torch.no_grad():
        for start in range(0, samples['camera'].shape[0], batch_size):
            index = np.arange(start, min(start + batch_size, samples['camera'].shape[0]))
            batch = _tensors(samples, index)
            out = model.forward_all(**{key: batch[key] for key in INPUT_KEYS})
            scores = (model.camera_novelty(out['camera_pooled'])[:, 0].numpy(),
                      model.lidar_novelty(out['lidar_pooled'])[:, 0].numpy())
            for k, score in enumerate(scores):
                keep = healthy[index, k] > 0
                if keep.any():
                    ceilings[k] = max(ceilings[k], float(score[keep].max()))
    if not all(math.isfinite(c) for c in ceilings):
        raise ValueError('no healthy camera or lidar sample to calibrate the veto on')
    return ceilings[0], ceilings[1]


def healthy_yaw_vetoes(model: GatedFusionNet, samples: dict[str, np.ndarray],
                       lidar_novelty_ceiling: float | None = None, batch_size: int = 128
                       ) -> tuple[tuple[float, float], tuple[float, ...]]:
    """(NetworkConfig.lidar_yaw_veto, .camera_disagreement_veto) from the samples with camera
    and lidar both healthy and present (model/yaw_check.py).

    Lidar yaw veto: a gain YAW_GAIN_MARGIN times the highest that any such frame shows (a
    healthy lidar's best yaw is 0, or one search step off on a sparse scene), and the
    YAW_AGREEMENT_PERCENTILE percentile of their best agreement, so a lidar is dropped only
    where, turned back, it agrees with the camera as a healthy pair does. Camera disagreement
    veto: their lowest best agreement, and the highest healthy lidar novelty
    (lidar_novelty_ceiling; without it, or without the novelty input, none is set).
    """
    healthy = (samples['available'][:, :2] * (1.0 - samples['failed'][:, :2])).min(axis=1) > 0
    index_all = np.flatnonzero(healthy)
    if index_all.size == 0:
        raise ValueError('no sample with camera and lidar both healthy to calibrate on')
    best_parts, gain_parts = [], []
    model.eval()
    with torch.no_grad():
        for start in range(0, index_all.size, batch_size):
            batch = _tensors(samples, index_all[start:start + batch_size])
            best, gain = model.yaw_check_of(batch['camera'], batch['lidar'])
            best_parts.append(best[:, 0].numpy())
            gain_parts.append(gain[:, 0].numpy())
    best = np.concatenate(best_parts)
    # A healthy set where no frame gained anything still needs a threshold above 0.
    min_gain = YAW_GAIN_MARGIN * max(float(np.concatenate(gain_parts).max()), 0.01)
    lidar_veto = (min_gain, float(np.percentile(best, YAW_AGREEMENT_PERCENTILE)))
    camera_veto: tuple[float, ...] = ()
    if lidar_novelty_ceiling is not None and model.cfg.gate_novelty:
        camera_veto = (float(best.min()), float(lidar_novelty_ceiling))
    return lidar_veto, camera_veto


def validation_metrics(model: GatedFusionNet, samples: dict[str, np.ndarray]) -> dict:
    """mIoU, ego RMSE and gate means on held-out samples."""
    out = predict(model, samples)
    matrix = confusion(out['bev'], samples['bev'], len(SEMANTIC_CLASSES))
    return {'miou': mean_iou(matrix), 'ego_rmse': rmse(out['ego'], samples['ego']),
            'gates': gate_means(out['gates'], samples['failed'], samples['available'], SENSORS),
            'samples': int(samples['camera'].shape[0])}


def _every(samples: dict[str, np.ndarray], step: int) -> dict[str, np.ndarray]:
    n = samples['camera'].shape[0]
    return {key: value[::step] if value.shape[:1] == (n,) else value
            for key, value in samples.items()}


def _split_by_recording(samples: dict[str, np.ndarray], val_every: int
                        ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    if val_every <= 0:
        return samples, None
    val_mask = samples['recording'] % val_every == val_every - 1
    if not val_mask.any() or val_mask.all():
        return samples, None
    pick = (lambda mask: {key: value[mask] if value.shape[:1] == val_mask.shape else value
                          for key, value in samples.items()})
    return pick(~val_mask), pick(val_mask)


def main(argv: list[str] | None = None) -> int:
    # Bag reading needs the message conversions; train_model itself works on arrays alone.
    from fusion_nodes.model import dataset
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-dir', type=Path, default=Path('data'))
    parser.add_argument('--duration', type=float, default=dataset.DataSpec.duration_s,
                        help='seconds of each generated bag')
    parser.add_argument('--scenarios', nargs='*', help='default: the whole catalogue')
    parser.add_argument('--seeds', type=int, default=3, help='train seeds per scenario')
    parser.add_argument('--epochs', type=int, default=TrainConfig.epochs)
    parser.add_argument('--batch-size', type=int, default=TrainConfig.batch_size)
    parser.add_argument('--lr', type=float, default=TrainConfig.learning_rate)
    parser.add_argument('--seed', type=int, default=TrainConfig.seed)
    parser.add_argument('--threads', type=int, default=TrainConfig.threads)
    parser.add_argument('--device', default=TrainConfig.device,
                        help="where training steps run: 'cpu' or 'cuda[:N]' (a GPU)")
    parser.add_argument('--variant', choices=('gated', 'ungated'), default='gated',
                        help='ungated: gates pinned to availability, no gate supervision')
    parser.add_argument('--absent-code', action='store_true',
                        help='fuse with learned absent codes (NetworkConfig.absent_code)')
    parser.add_argument('--gate-consistency', action=argparse.BooleanOptionalAction,
                        default=None,
                        help='camera and lidar gates see how far the single-sensor heads '
                             'agree (NetworkConfig.gate_consistency; default: on for the '
                             'gated variant, as in the shipped model, off for ungated, whose '
                             'gates are fixed)')
    parser.add_argument('--gate-novelty', action=argparse.BooleanOptionalAction,
                        default=None,
                        help='camera and lidar gates see how far their pooled features lie '
                             'from healthy training ones (NetworkConfig.gate_novelty; default '
                             'as --gate-consistency)')
    parser.add_argument('--novelty-veto', nargs='*', choices=VETO_SENSORS,
                        default=list(DEFAULT_VETO_SENSORS), metavar='SENSOR',
                        help='sensors whose NetworkConfig.novelty_veto is set after training to '
                             'their highest healthy training novelty score (models with the '
                             'novelty input; default: camera; none: give the flag alone)')
    parser.add_argument('--yaw-vetoes', nargs='*', choices=YAW_VETO_SENSORS,
                        default=list(DEFAULT_YAW_VETOES), metavar='SENSOR',
                        help='sensors whose yaw-check veto is set after training from healthy '
                             'training frames: camera (NetworkConfig.camera_disagreement_veto), '
                             'lidar (lidar_yaw_veto); gated variant; default: camera; none: '
                             'give the flag alone')
    parser.add_argument('--recalibrate', type=Path, metavar='MODEL_JSON',
                        help='train nothing: set the novelty and yaw vetoes of this trained '
                             'model from its training data and export it again as --version')
    parser.add_argument('--version', default=MODEL_VERSION,
                        help=f'version to write (default {MODEL_VERSION})')
    parser.add_argument('--val-every', type=int, default=0,
                        help='hold out every n-th recording for validation (0: none)')
    parser.add_argument('--out', type=Path, default=None,
                        help='output directory (default models/, or data/models for ungated)')
    parser.add_argument('--name', default=None)
    args = parser.parse_args(argv)
    try:
        check_device(args.device)
    except ValueError as error:
        parser.error(str(error))
    started = time.monotonic()
    spec = dataset.DataSpec(data_dir=args.data_dir, duration_s=args.duration,
                            seeds_per_scenario={'train': args.seeds, 'test': 1})
    items = dataset.prepare('train', spec, args.scenarios)
    samples = dataset.load_samples(items)
    if args.recalibrate is not None:
        return _recalibrate(args.recalibrate, args.version, samples,
                            dataset.data_sha256(items), args.novelty_veto,
                            tuple(args.yaw_vetoes))
    train, val = _split_by_recording(samples, args.val_every)
    gated = args.variant == 'gated'
    gate_mode = 'learned' if gated else 'fixed'
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                      learning_rate=args.lr, seed=args.seed, gate_mode=gate_mode,
                      threads=args.threads, device=args.device, absent_code=args.absent_code,
                      gate_consistency=(gated if args.gate_consistency is None
                                        else args.gate_consistency),
                      gate_novelty=gated if args.gate_novelty is None else args.gate_novelty)
    print(f'training {args.variant} on {train["camera"].shape[0]} samples from '
          f'{len(items)} recordings', flush=True)
    model, history = train_model(train, cfg)
    training = {
        'data_sha256': dataset.data_sha256(items),
        'scenarios': sorted({r.scenario for r in items}),
        'seeds': sorted({r.seed for r in items}),
        'recordings': [f'{r.scenario}:{r.seed}' for r in items],
        'samples': int(train['camera'].shape[0]),
        'data_spec': {'duration_s': spec.duration_s, 'storage': spec.storage,
                      'features_key': spec.features_key(),
                      'camera_stride': spec.pairing.camera_stride},
        'config': asdict(cfg),
        'epochs': cfg.epochs,
        'gate_supervision': 'BCE towards 1 - /gt/failures flag, where available'
                            if gate_mode == 'learned' else 'none (gates = availability)',
        'final_losses': history[-1],
        'train_metrics': validation_metrics(model, _every(train, 4)),
        'wall_time_s': round(time.monotonic() - started, 1),
    }
    if val is not None:
        training['validation_metrics'] = validation_metrics(model, val)
    # The novelty ceilings feed the novelty veto and the camera disagreement veto.
    ceilings = (healthy_novelty_ceiling(model, train) if model.cfg.gate_novelty and (
        args.novelty_veto or (gated and 'camera' in args.yaw_vetoes)) else None)
    if args.novelty_veto and ceilings is not None:
        model.cfg = replace(model.cfg, novelty_veto=_veto(ceilings, args.novelty_veto))
    if gated:
        # The yaw disagreement output is always set: fusion_node decides from it which
        # sensor turned; the vetoes act on the check within the graph, as chosen.
        yaw = healthy_yaw_vetoes(model, train, None if ceilings is None else ceilings[1])
        lidar_veto, camera_veto = _chosen(yaw, args.yaw_vetoes)
        model.cfg = replace(model.cfg, lidar_yaw_veto=lidar_veto,
                            camera_disagreement_veto=camera_veto, yaw_disagreement=yaw[0])
    out_dir = args.out or (Path('models') if gated else args.data_dir / 'models')
    name = args.name or (MODEL_NAME if gated else 'ungated_fusion')
    json_path = write_model(model, out_dir, name, args.version, json_finite(training))
    print(f'wrote {json_path} in {training["wall_time_s"]} s; train mIoU '
          f'{training["train_metrics"]["miou"]:.3f}', flush=True)
    return 0


def _veto(ceilings: tuple[float, float], sensors: list[str]) -> tuple[float, float]:
    """NetworkConfig.novelty_veto: the ceilings of the chosen sensors, 0 (none) elsewhere."""
    return tuple(c if s in sensors else 0.0 for c, s in zip(ceilings, VETO_SENSORS))


def _chosen(vetoes: tuple[tuple[float, ...], tuple[float, ...]], sensors: list[str]
            ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(lidar yaw veto, camera disagreement veto) with those of sensors not chosen off."""
    lidar, camera = vetoes
    return (lidar if 'lidar' in sensors else ()), (camera if 'camera' in sensors else ())


def _recalibrate(json_path: Path, version: str, samples: dict[str, np.ndarray],
                 data_sha256: str, sensors: list[str],
                 yaw_sensors: tuple[str, ...] = DEFAULT_YAW_VETOES) -> int:
    """--recalibrate: the vetoes from the very data the model was trained on, then re-export."""
    model, metadata = load_trained_model(json_path)
    trained_on = metadata.training.get('data_sha256')
    if trained_on != data_sha256:
        print(f'error: {json_path} was trained on data {trained_on}, these options select '
              f'{data_sha256}; pass the same --data-dir, --duration, --scenarios and --seeds',
              file=sys.stderr)
        return 2
    ceilings = healthy_novelty_ceiling(model, samples)
    veto = _veto(ceilings, sensors)
    yaw = healthy_yaw_vetoes(model, samples, ceilings[1])
    lidar_yaw, camera_disagreement = _chosen(yaw, list(yaw_sensors))
    reexport_model(json_path, version, novelty_veto=veto, lidar_yaw_veto=lidar_yaw,
                   camera_disagreement_veto=camera_disagreement, yaw_disagreement=yaw[0])
    print(f'wrote {json_path} (version {version}), novelty veto camera {veto[0]:.4f}, '
          f'lidar {veto[1]:.4f}; lidar yaw veto {lidar_yaw or "off"}, camera disagreement '
          f'veto {camera_disagreement or "off"}, yaw disagreement {yaw[0]}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
