"""The gated fusion network: camera, lidar and GPS encoders, reliability gates, BEV fusion.

Intermediate fusion in the BEV grid. The camera CNN's feature map is lifted into the grid by
sampling it where each cell centre projects (constant GridSample grids, one per height); the
lidar encoder runs on the pillar pseudo-image; a small MLP encodes the GPS ego features. Each
sensor gets one sigmoid gate from its pooled features (detached), its health features and its
availability bit, multiplied by that bit so a missing sensor's gate is exactly 0; with
gate_consistency the camera and lidar gates also see how far the two single-sensor BEV heads
agree, and with gate_novelty how far their pooled features lie from healthy training ones
(model/novelty.py). The BEV features are fused GMU-style, as the gate-normalised mean (a lone
sensor passes through unscaled), or with absent_code (tried, not shipped) as the mean of each
sensor's gate-weighted features plus a learned 'absent' code in the rest of its weight. The
ego-velocity head sees GPS only through its gate. At inference a gate floor and three vetoes
(novelty; camera-lidar yaw, model/yaw_check.py) can drop a sensor, which is then fused as
missing. The yaw check's verdict is also an output (yaw_disagreement): one frame cannot say
which sensor turned, so fusion_node decides that from the lidar's heading of travel
(core/yaw_blame.py).
"""

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import torch
from torch import nn

from fusion_nodes.core.config import BevGrid, CameraModel, SEMANTIC_CLASSES, SENSORS
from fusion_nodes.model.lifting import bev_sampling_grid
from fusion_nodes.model.novelty import FeatureNovelty
from fusion_nodes.model.yaw_check import (
    best_turn, bev_rotation_grid, object_map, turn, yaw_agreement, yaw_angles_deg, YAW_POOL)

INPUT_NAMES = ('camera', 'lidar', 'gps', 'health', 'available')
OUTPUT_NAMES = ('bev_logits', 'ego_velocity', 'ego_log_variance', 'gates',
                'yaw_disagreement')
GATE_MODES = ('learned', 'fixed')
HEALTH_FEATURES = 4
GPS_FEATURES = 8
LIDAR_CHANNELS = 4
# Keeps the gate-weighted mean finite when every gate is 0 (then the fused features are 0).
FUSION_EPS = 1e-3
LOG_VARIANCE_RANGE = (-8.0, 6.0)
# The novelty veto spares scores this far above it: the healthy frame that set it, scored
# again in another batch or runtime, differs in the last bits.
VETO_TOLERANCE = 1e-4
# Cells per side pooled for the gates' consistency context (4: 64x64 -> 16x16).
CONSISTENCY_POOL = 4


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture hyperparameters; 'fixed' gates (the ungated baseline) equal availability."""

    camera_channels: tuple[int, int, int] = (16, 24, 24)
    bev_channels: int = 16
    lift_heights_m: tuple[float, ...] = (0.3, 0.9)
    gps_hidden: int = 32
    gate_hidden: int = 16
    gate_mode: str = 'learned'
    # Feeds the constant camera-footprint mask to the fused head too, so the positional prior
    # it carries survives when the camera is gated off (it is no camera evidence).
    mask_in_head: bool = False
    # At inference a learned gate below this drops its sensor outright (gate 0), so a sensor
    # the gate distrusts cannot leak a few percent of itself into the result. Training keeps
    # the soft gate, whose gradient it needs.
    gate_floor: float = 0.0
    # Fuse as the mean of each BEV sensor's gated features and a learned 'absent' code in
    # the rest of its weight, instead of the gate-normalised mean. The fused head then always
    # sees a two-sensor mixture: model 1.1.0 (normalised) did better in a camera blackout with
    # the black camera left in (0.493 mIoU) than with it dropped (0.441), because a lone
    # lidar passed through unscaled is an input regime its head rarely trained on.
    absent_code: bool = False
    # Gives the camera and lidar gates the agreement of the two single-sensor BEV heads in
    # the camera's footprint, and the other sensor's health: a camera that is sharp and well
    # exposed but wrong (channel swap) looks healthy on its own and only shows against the
    # lidar's geometry.
    gate_consistency: bool = False
    # Gives the camera and lidar gates the Mahalanobis distance of their pooled features from
    # healthy training features (FeatureNovelty), for failures that training never showed.
    gate_novelty: bool = False
    # At inference, (camera, lidar) novelty scores above which the sensor is dropped (gate 0),
    # whatever its gate says: features farther from healthy training data than any healthy
    # training frame's. Set after training from those scores; 0 leaves a sensor without a
    # veto, () both.
    novelty_veto: tuple[float, ...] = ()
    # At inference, (least gain, least agreement) of the camera-lidar yaw check
    # (model/yaw_check.py) at which the lidar is dropped: its objects agree with the camera's
    # better by at least the gain when turned by some angle of the search than as mounted,
    # and reach at least the agreement there. Set after training from healthy training
    # frames; () leaves it off.
    lidar_yaw_veto: tuple[float, ...] = ()
    # At inference, (agreement, lidar novelty): the camera is dropped where its objects agree
    # with a lidar that looks healthy (novelty at most the second value, which needs
    # gate_novelty) less, at every angle of the yaw search, than the first value: less than
    # any healthy training frame's. The camera's map is then wrong, not the lidar's mount.
    # () leaves it off.
    camera_disagreement_veto: tuple[float, ...] = ()
    # At inference, (least gain, least agreement) of the yaw check at which the output
    # yaw_disagreement is 1 (both sensors kept): lidar_yaw_veto's test, reported instead of
    # acted on. Set after training like it; () leaves the output at 0.
    yaw_disagreement: tuple[float, ...] = ()
    # The yaw search: 7 turns of the lidar's object map. 5-degree steps (13 turns, models 1.5)
    # cost ONNX Runtime 0.14 ms more a frame for the same decisions on every test recording.
    yaw_search_deg: float = 30.0
    yaw_step_deg: float = 10.0

    def __post_init__(self) -> None:
        if self.gate_mode not in GATE_MODES:
            raise ValueError(f'gate_mode must be one of {GATE_MODES}, got {self.gate_mode!r}')
        if not self.lift_heights_m:
            raise ValueError('lift_heights_m needs at least one height')
        if min(self.camera_channels) <= 0 or self.bev_channels <= 0:
            raise ValueError('channel counts must be positive')
        if not 0.0 <= self.gate_floor < 1.0:
            raise ValueError(f'gate_floor must be in [0, 1), got {self.gate_floor}')
        if self.novelty_veto and not (self.gate_novelty and len(self.novelty_veto) == 2
                                      and all(v >= 0.0 for v in self.novelty_veto)):
            raise ValueError('novelty_veto needs gate_novelty and two scores >= 0 '
                             f'(camera, lidar; 0 for none), got {self.novelty_veto}')
        for name in ('lidar_yaw_veto', 'yaw_disagreement'):
            value = getattr(self, name)
            if value and not (len(value) == 2 and all(v > 0.0 for v in value)):
                raise ValueError(f'{name} needs (gain, agreement), both > 0, got {value}')
        if self.camera_disagreement_veto and not (
                self.gate_novelty and len(self.camera_disagreement_veto) == 2
                and all(v > 0.0 for v in self.camera_disagreement_veto)):
            raise ValueError('camera_disagreement_veto needs gate_novelty and (agreement, '
                             f'lidar novelty), both > 0, got {self.camera_disagreement_veto}')
        yaw_angles_deg(self.yaw_search_deg, self.yaw_step_deg)  # raises on a bad search

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> 'NetworkConfig':
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f'unknown architecture fields: {sorted(unknown)}')
        converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**converted)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU())


def _step(x: torch.Tensor) -> torch.Tensor:
    """1 where x >= 1e-6, 0 where x <= 0, in Mul and Clip ops that TensorRT parses.

    Two gains of 1e3, not one of 1e6: every constant and every intermediate stays inside
    float16, where TensorRT clamps (or, before 8, refuses) a weight of 1e6 in an fp16 build.
    """
    return torch.clamp(torch.clamp(x * 1e3, -1.0, 1.0) * 1e3, 0.0, 1.0)


class _Gate(nn.Module):
    """sigmoid(MLP([pooled features, health, available, context])) * available."""

    def __init__(self, feature_dim: int, hidden: int, context_dim: int = 0) -> None:
        super().__init__()
        inputs = feature_dim + HEALTH_FEATURES + 1 + context_dim
        self.mlp = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, pooled: torch.Tensor, health: torch.Tensor, available: torch.Tensor,
                context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [pooled, health, available] + ([] if context is None else [context])
        logit = self.mlp(torch.cat(parts, dim=1))
        return torch.sigmoid(logit) * available, logit


class GatedFusionNet(nn.Module):
    """See the module docstring; forward follows the I/O contract in INPUT/OUTPUT_NAMES."""

    def __init__(self, grid: BevGrid = BevGrid(), camera_model: CameraModel = CameraModel(),
                 cfg: NetworkConfig = NetworkConfig(),
                 num_classes: int = len(SEMANTIC_CLASSES)) -> None:
        super().__init__()
        self.cfg = cfg
        self.grid = grid
        self.camera_model = camera_model
        self.num_classes = num_classes
        c1, c2, c3 = cfg.camera_channels
        d = cfg.bev_channels
        # Two scales are lifted: the stride-2 map keeps the colour of objects that are only a
        # few pixels wide at range; the stride-4 map adds context.
        self.camera_stem = _conv(3, c1, 2)
        self.camera_encoder = nn.Sequential(_conv(c1, c2, 2), _conv(c2, c3))
        grids, masks = zip(*(bev_sampling_grid(grid, camera_model, h)
                             for h in cfg.lift_heights_m))
        for k, sampling in enumerate(grids):
            self.register_buffer(f'lift_grid_{k}', torch.from_numpy(sampling)[None])
        # The ground-plane footprint tells the fused head where camera evidence can exist.
        self.register_buffer('camera_mask',
                             torch.from_numpy(masks[0].astype('float32'))[None, None])
        coarse = nn.functional.avg_pool2d(self.camera_mask, CONSISTENCY_POOL)
        self.register_buffer('camera_mask_coarse', coarse, persistent=False)
        self._footprint_fraction = float(coarse.mean())
        angles = yaw_angles_deg(cfg.yaw_search_deg, cfg.yaw_step_deg)
        self._yaw_angles = len(angles)
        self._yaw_zero = int(abs(angles).argmin())
        self.register_buffer('yaw_grid', torch.from_numpy(
            bev_rotation_grid(grid, YAW_POOL, angles))[None], persistent=False)
        self.register_buffer('yaw_mask', nn.functional.avg_pool2d(self.camera_mask, YAW_POOL),
                             persistent=False)
        lifted = (c1 + c3) * len(grids) + 1
        self.camera_to_bev = nn.Sequential(nn.Conv2d(lifted, d, 1), nn.ReLU())
        self.lidar_encoder = nn.Sequential(_conv(LIDAR_CHANNELS, d), _conv(d, d))
        if cfg.absent_code:
            # What stands in for a dropped or missing sensor: per channel, and for the camera
            # also by its ground footprint, where its evidence would otherwise be.
            self.camera_absent_scale = nn.Parameter(torch.zeros(1, d, 1, 1))
            self.camera_absent_bias = nn.Parameter(torch.zeros(1, d, 1, 1))
            self.lidar_absent_bias = nn.Parameter(torch.zeros(1, d, 1, 1))
        self.gps_encoder = nn.Sequential(nn.Linear(GPS_FEATURES, cfg.gps_hidden), nn.ReLU(),
                                         nn.Linear(cfg.gps_hidden, cfg.gps_hidden), nn.ReLU())
        # Consistency context: agreement, per-class mean difference, the both-present bit and
        # the other sensor's health.
        context = num_classes + 2 + HEALTH_FEATURES if cfg.gate_consistency else 0
        if cfg.gate_novelty:
            self.camera_novelty = FeatureNovelty(c3)
            self.lidar_novelty = FeatureNovelty(d)
            context += 1
        self.camera_gate = _Gate(c3, cfg.gate_hidden, context)
        self.lidar_gate = _Gate(d, cfg.gate_hidden, context)
        self.gps_gate = _Gate(cfg.gps_hidden, cfg.gate_hidden)
        # The dilated layer widens the context to about 6 m, the length of a car.
        self.bev_head = nn.Sequential(
            _conv(d + int(cfg.mask_in_head), d), nn.Conv2d(d, d, 3, padding=2, dilation=2),
            nn.ReLU(),
            nn.Conv2d(d, num_classes, 1))
        self.ego_head = nn.Sequential(nn.Linear(cfg.gps_hidden + 1, cfg.gps_hidden), nn.ReLU(),
                                      nn.Linear(cfg.gps_hidden, 6))
        # Late-fusion baseline: single-sensor heads trained alongside, not exported.
        self.camera_aux_head = nn.Conv2d(d, num_classes, 1)
        self.lidar_aux_head = nn.Conv2d(d, num_classes, 1)

    def _batched(self, buffer: torch.Tensor, batch: int) -> torch.Tensor:
        # The deployed graph has batch 1: using the buffer as is keeps Expand out of it.
        return buffer if batch == 1 else buffer.expand(batch, -1, -1, -1)

    def _lift(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """camera_to_bev of [each map sampled at each height..., footprint mask].

        Computed with the 1x1 convolution's weight split by input block and applied before
        sampling: the convolution mixes channels pixel by pixel and bilinear sampling mixes
        pixels channel by channel, both linearly, so they commute. ONNX Runtime's GridSample
        costs per sampled channel, and this samples 4x16 channels instead of 2x(16+24), with
        no 81-channel concatenation: 7-14 % of the ORT frame, timed against the old graph in
        turns.
        """
        batch = int(feature_maps[0].shape[0])
        conv = self.camera_to_bev[0]
        lifted = None
        start = 0
        for k in range(len(self.cfg.lift_heights_m)):
            grid = self._batched(getattr(self, f'lift_grid_{k}'), batch)
            for features in feature_maps:
                stop = start + int(features.shape[1])
                projected = nn.functional.conv2d(features, conv.weight[:, start:stop])
                sampled = nn.functional.grid_sample(projected, grid, mode='bilinear',
                                                    padding_mode='zeros', align_corners=False)
                lifted = sampled if lifted is None else lifted + sampled
                start = stop
        footprint = nn.functional.conv2d(self.camera_mask, conv.weight[:, start:], conv.bias)
        return self.camera_to_bev[1](lifted + footprint)

    def _agreement(self, camera_bev: torch.Tensor, lidar_bev: torch.Tensor) -> torch.Tensor:
        """[agreement, per-class mean(p_camera - p_lidar)] in the camera footprint.

        Agreement is the mean probability that the two single-sensor heads pick the same
        class. The heads are 1x1 convolutions, so running them on 4x4-pooled features gives
        the pooled logits exactly, at a sixteenth of the cost. Sums are written as means times
        a constant so the graph keeps to ReduceMean. _gates zeroes it unless both are present.
        """
        pool = CONSISTENCY_POOL
        p_camera = torch.softmax(self.camera_aux_head(
            nn.functional.avg_pool2d(camera_bev.detach(), pool)), dim=1)
        p_lidar = torch.softmax(self.lidar_aux_head(
            nn.functional.avg_pool2d(lidar_bev.detach(), pool)), dim=1)
        mask = self.camera_mask_coarse
        scale = 1.0 / self._footprint_fraction
        agree = (p_camera * p_lidar).mean(dim=1, keepdim=True) * float(self.num_classes)
        agreement = (agree * mask).mean(dim=(2, 3)) * scale
        difference = ((p_camera - p_lidar) * mask).mean(dim=(2, 3)) * scale
        return torch.cat([agreement, difference], dim=1)

    def _encode(self, camera: torch.Tensor, lidar: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(camera feature map, camera features lifted to the BEV grid, lidar BEV features)."""
        camera_fine = self.camera_stem(camera)
        camera_features = self.camera_encoder(camera_fine)
        camera_bev = self._lift((camera_fine, camera_features))
        return camera_features, camera_bev, self.lidar_encoder(lidar)

    def yaw_check_of(self, camera: torch.Tensor, lidar: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """yaw_check on network inputs (for calibration and evaluation)."""
        _, camera_bev, lidar_bev = self._encode(camera, lidar)
        return self.yaw_check(camera_bev, lidar_bev)

    def yaw_check(self, camera_bev: torch.Tensor, lidar_bev: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """([B, 1] best camera-lidar agreement over the yaw search, [B, 1] its gain over the
        lidar as mounted); model/yaw_check.py."""
        turned = turn(object_map(self.lidar_aux_head, lidar_bev.detach(), YAW_POOL),
                      self._batched(self.yaw_grid, int(lidar_bev.shape[0])), self._yaw_angles)
        scores = yaw_agreement(
            object_map(self.camera_aux_head, camera_bev.detach(), YAW_POOL), turned,
            self.yaw_mask)
        return best_turn(scores, self._yaw_zero)

    @staticmethod
    def _turned(yaw: tuple[torch.Tensor, torch.Tensor], thresholds: tuple[float, ...],
                kept: torch.Tensor) -> torch.Tensor:
        """[B, 1]: 1 where the lidar, turned by some angle of the yaw search, agrees with the
        camera better by at least the least gain and reaches the least agreement, with both
        kept (each is the other's reference)."""
        best, gain = yaw
        min_gain, min_agreement = thresholds
        return _step(gain - min_gain) * _step(best - min_agreement) * kept[:, 0:1] * kept[:, 1:2]

    def _yaw_vetoes(self, kept: torch.Tensor, yaw: tuple[torch.Tensor, torch.Tensor],
                    novelty: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """kept ([B, 3]) with the lidar yaw veto and the camera disagreement veto applied,
        given the yaw check's (best agreement, gain).

        Each judges one sensor against the other, so each needs the other kept: a dropped
        sensor is no reference. The two cannot both fire: one needs an agreement the other
        says no healthy frame falls below.
        """
        best, _ = yaw
        camera, lidar = kept[:, 0:1], kept[:, 1:2]
        camera_after, lidar_after = camera, lidar
        if self.cfg.lidar_yaw_veto:
            lidar_after = lidar * (1.0 - self._turned(yaw, self.cfg.lidar_yaw_veto, kept))
        if self.cfg.camera_disagreement_veto:
            max_agreement, max_novelty = self.cfg.camera_disagreement_veto
            # The tolerances spare the healthy frames that set the two bounds, scored again.
            wrong = (_step(max_agreement - VETO_TOLERANCE - best)
                     * _step(max_novelty + VETO_TOLERANCE - novelty[1]) * lidar)
            camera_after = camera * (1.0 - wrong)
        return torch.cat([camera_after, lidar_after, kept[:, 2:]], dim=1)

    def _gates(self, pooled: tuple[torch.Tensor, ...], health: torch.Tensor,
               available: torch.Tensor, agreement: torch.Tensor | None,
               novelty: tuple[torch.Tensor, torch.Tensor] | None
               ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-sensor gates and logits ([B, 1] each) for this availability.

        agreement is _agreement's output, novelty the camera and lidar scores (each None when
        its context is off).
        """
        contexts: list[list[torch.Tensor]] = [[], [], []]
        if agreement is not None:
            both = available[:, 0:1] * available[:, 1:2]
            shared = torch.cat([agreement * both, both], dim=1)
            # The other sensor's health counts only while it is present, as in training,
            # where a dropped sensor's health is zeroed.
            contexts[0] += [shared, health[:, 1] * available[:, 1:2]]
            contexts[1] += [shared, health[:, 0] * available[:, 0:1]]
        if novelty is not None:
            contexts[0].append(novelty[0] * available[:, 0:1])
            contexts[1].append(novelty[1] * available[:, 1:2])
        gate_nets = (self.camera_gate, self.lidar_gate, self.gps_gate)
        gates, logits = [], []
        for k, (net, features) in enumerate(zip(gate_nets, pooled)):
            avail = available[:, k:k + 1]
            # Detached: the gate loss trains the gate MLPs alone and cannot reshape the
            # features the BEV and ego heads are built on.
            context = torch.cat(contexts[k], dim=1) if contexts[k] else None
            gate, logit = net(features.detach(), health[:, k], avail, context)
            if not self.training:
                if self.cfg.gate_floor > 0.0:
                    gate = gate * _step(gate - self.cfg.gate_floor)
                if k < len(self.cfg.novelty_veto) and self.cfg.novelty_veto[k] > 0.0:
                    gate = gate * _step(self.cfg.novelty_veto[k] + VETO_TOLERANCE
                                        - novelty[k])
            gates.append(avail if self.cfg.gate_mode == 'fixed' else gate)
            logits.append(logit)
        return gates, logits

    def forward_all(self, camera: torch.Tensor, lidar: torch.Tensor, gps: torch.Tensor,
                    health: torch.Tensor, available: torch.Tensor,
                    gate_override: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every output, the gate logits and the single-sensor heads (for training and eval).

        gate_override ([B, 3]) replaces the gates, e.g. for evaluating fixed gating.
        """
        camera_features, camera_bev, lidar_bev = self._encode(camera, lidar)
        gps_features = self.gps_encoder(gps)
        camera_logits = self.camera_aux_head(camera_bev)
        lidar_logits = self.lidar_aux_head(lidar_bev)
        pooled = (camera_features.mean(dim=(2, 3)), lidar_bev.mean(dim=(2, 3)), gps_features)
        agreement = None
        if self.cfg.gate_consistency:
            agreement = self._agreement(camera_bev, lidar_bev)
        novelty = None
        if self.cfg.gate_novelty:
            novelty = (self.camera_novelty(pooled[0].detach()),
                       self.lidar_novelty(pooled[1].detach()))
        gates, logits = self._gates(pooled, health, available, agreement, novelty)
        disagreement = torch.zeros_like(available[:, :1])
        if not self.training and (self.cfg.gate_floor > 0.0 or self.cfg.novelty_veto
                                  or self.cfg.lidar_yaw_veto
                                  or self.cfg.camera_disagreement_veto
                                  or self.cfg.yaw_disagreement):
            # A gate the floor or a veto closed drops its sensor exactly as if it were
            # missing: the other gates are computed again without it, as in a run without it.
            kept = available * _step(torch.cat(gates, dim=1))
            if (self.cfg.lidar_yaw_veto or self.cfg.camera_disagreement_veto
                    or self.cfg.yaw_disagreement):
                yaw = self.yaw_check(camera_bev, lidar_bev)
                if self.cfg.yaw_disagreement:
                    disagreement = self._turned(yaw, self.cfg.yaw_disagreement, kept)
                kept = self._yaw_vetoes(kept, yaw, novelty)
            gates, logits = self._gates(pooled, health, kept, agreement, novelty)
        if gate_override is not None:
            gates = [gate_override[:, k:k + 1] for k in range(len(gates))]
        g_camera = gates[0][:, :, None, None]
        g_lidar = gates[1][:, :, None, None]
        if self.cfg.absent_code:
            camera_absent = self.camera_absent_scale * self.camera_mask + self.camera_absent_bias
            fused = 0.5 * (g_camera * camera_bev + (1.0 - g_camera) * camera_absent
                           + g_lidar * lidar_bev + (1.0 - g_lidar) * self.lidar_absent_bias)
        else:
            weighted = g_camera * camera_bev + g_lidar * lidar_bev
            fused = weighted / (g_camera + g_lidar + FUSION_EPS)
        if self.cfg.mask_in_head:
            mask = self._batched(self.camera_mask, int(fused.shape[0]))
            fused = torch.cat([fused, mask], dim=1)
        bev_logits = self.bev_head(fused)
        ego = self.ego_head(torch.cat([gates[2] * gps_features, gates[2]], dim=1))
        log_variance = torch.clamp(ego[:, 3:], *LOG_VARIANCE_RANGE)
        return {
            'bev_logits': bev_logits,
            'ego_velocity': ego[:, :3],
            'ego_log_variance': log_variance,
            'gates': torch.cat(gates, dim=1),
            'gate_logits': torch.cat(logits, dim=1),
            'yaw_disagreement': disagreement,
            'camera_logits': camera_logits,
            'lidar_logits': lidar_logits,
            'camera_pooled': pooled[0],
            'lidar_pooled': pooled[1],
        }

    def track_healthy_features(self, out: dict[str, torch.Tensor], healthy: torch.Tensor
                               ) -> None:
        """Training: fold forward_all's pooled features of healthy, present sensors ([B, 3])
        into the novelty statistics; a no-op without gate_novelty."""
        if self.cfg.gate_novelty:
            self.camera_novelty.track(out['camera_pooled'], healthy[:, 0])
            self.lidar_novelty.track(out['lidar_pooled'], healthy[:, 1])

    def forward(self, camera: torch.Tensor, lidar: torch.Tensor, gps: torch.Tensor,
                health: torch.Tensor, available: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        out = self.forward_all(camera, lidar, gps, health, available)
        return tuple(out[name] for name in OUTPUT_NAMES)


def _field(metadata: Any, name: str, default: Any = None) -> Any:
    if isinstance(metadata, Mapping):
        return metadata.get(name, default)
    return getattr(metadata, name, default)


def build_model(metadata: Any = None) -> GatedFusionNet:
    """The untrained network for a ModelMetadata or metadata dict (None: the defaults).

    Geometry comes from the metadata's grid and camera_model, so the lifting grid always
    matches the calibration the model was trained with; architecture from its 'architecture'
    entry (top level or under 'training').
    """
    if metadata is None:
        return GatedFusionNet()
    grid = BevGrid(**(_field(metadata, 'grid') or {}))
    camera_fields = dict(_field(metadata, 'camera_model') or {})
    for key in ('translation', 'rpy'):
        if key in camera_fields:
            camera_fields[key] = tuple(camera_fields[key])
    camera_model = CameraModel(**camera_fields)
    architecture = _field(metadata, 'architecture')
    if architecture is None:
        architecture = (_field(metadata, 'training') or {}).get('architecture', {})
    class_names = _field(metadata, 'class_names') or SEMANTIC_CLASSES
    sensor_order = tuple(_field(metadata, 'sensor_order') or SENSORS)
    if sensor_order != SENSORS:
        raise ValueError(f"sensor_order {sensor_order} differs from the network's {SENSORS}")
    return GatedFusionNet(grid, camera_model, NetworkConfig.from_dict(architecture),
                          len(class_names))
