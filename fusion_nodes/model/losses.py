"""Training objective: BEV cross-entropy, heteroscedastic ego NLL, gate supervision.

Gates are supervised with the generator's failure flags (BCE towards 0 for a failed sensor,
1 for a healthy one) wherever the sensor delivered data; unsupervised gates tend to settle on
"always open" while the data is mostly nominal, which is exactly the negative-transfer case
this network exists to prevent. The single-sensor auxiliary heads get their own
cross-entropy so late fusion has real single-modality predictions to average.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class LossWeights:
    bev: float = 1.0
    aux: float = 0.5
    ego: float = 0.2
    gate: float = 1.0


def class_weights(bev: np.ndarray, num_classes: int, power: float = 0.5) -> torch.Tensor:
    """Inverse-frequency^power weights, mean 1 over classes present (free dominates BEV)."""
    counts = np.bincount(bev.ravel(), minlength=num_classes).astype(np.float64)
    if counts.size > num_classes:
        raise ValueError(f'BEV labels go up to {counts.size - 1}, expected < {num_classes}')
    freq = counts / max(counts.sum(), 1.0)
    weights = np.where(counts > 0, (freq + 1e-6) ** -power, 0.0)
    weights /= weights[counts > 0].mean()
    return torch.tensor(weights, dtype=torch.float32)


def gaussian_nll(mean: torch.Tensor, log_variance: torch.Tensor,
                 target: torch.Tensor) -> torch.Tensor:
    """Mean over batch and axes of 0.5 * (log var + (y - mu)^2 / var)."""
    return 0.5 * (log_variance + (target - mean) ** 2 * torch.exp(-log_variance)).mean()


def fusion_loss(out: dict[str, torch.Tensor], bev: torch.Tensor, ego: torch.Tensor,
                failed: torch.Tensor, available: torch.Tensor, weights: torch.Tensor,
                loss_weights: LossWeights = LossWeights(), supervise_gates: bool = True
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts; aux heads count only where their sensor was available."""
    ce = nn.functional.cross_entropy
    bev_loss = ce(out['bev_logits'], bev, weight=weights)
    aux_terms = []
    for k, name in ((0, 'camera_logits'), (1, 'lidar_logits')):
        per_cell = ce(out[name], bev, weight=weights, reduction='none')
        # Normalised by the weights, as the 'mean' reduction of the fused term is.
        per_frame = per_cell.sum(dim=(1, 2)) / weights[bev].sum(dim=(1, 2))
        present = available[:, k]
        if present.sum() > 0:
            aux_terms.append((per_frame * present).sum() / present.sum())
    aux_loss = torch.stack(aux_terms).mean() if aux_terms else bev_loss.new_zeros(())
    ego_loss = gaussian_nll(out['ego_velocity'], out['ego_log_variance'], ego)
    total = (loss_weights.bev * bev_loss + loss_weights.aux * aux_loss
             + loss_weights.ego * ego_loss)
    gate_loss = bev_loss.new_zeros(())
    if supervise_gates and available.sum() > 0:
        target = 1.0 - failed
        per_gate = nn.functional.binary_cross_entropy_with_logits(
            out['gate_logits'], target, reduction='none')
        gate_loss = (per_gate * available).sum() / available.sum()
        total = total + loss_weights.gate * gate_loss
    parts = {name: float(value.detach()) for name, value in (
        ('bev', bev_loss), ('aux', aux_loss), ('ego', ego_loss), ('gate', gate_loss))}
    return total, parts
