"""How far a sensor's pooled features lie from those of healthy training data.

The gates learn to close on the failures they were trained on, but a failure never seen in
training (a colour-channel swap, lidar crosstalk) reaches the gate MLP as a feature vector it
has no rule for. Measured on model 1.2.0's encoders, such failures move the pooled features far
from the healthy cluster (Mahalanobis distance 35-50 against a healthy 99th percentile of 4-8),
as the trained ones do (11-93), so the distance is a sign of failure that carries over to new
kinds. The statistics are running estimates over the healthy samples of each training batch,
kept like batch norm's, so they follow the encoder as it trains.

The graph carries a whitening matrix (the Cholesky factor of the precision, over SCALE), not the
precision itself: healthy features barely vary in some directions, so the precision reaches
1.7e5, beyond float16's 65504, and in float16 (as a TensorRT fp16 engine runs) it became inf
and the camera and lidar gates NaN (seen on an H200 with the network cast to half, 2026-12-04).
"""

import math

import torch
from torch import nn

# Weight of each batch in the running statistics: they span about 100 steps, under half an
# epoch of the shipped training (262 steps).
MOMENTUM = 0.01
# Ridge on the covariance, relative to its mean variance, so the inverse stays well posed.
SHRINKAGE = 1e-3
# Whitened components are computed over SCALE and clipped at CLIP, so that in float16 each
# square and their sum over up to 24 features stay under 65504 (24 * 48**2 = 55296). The clip
# binds only past a Mahalanobis distance of SCALE * CLIP = 3072, far beyond the 11-93 failures
# reach, and there the score is capped at log(1 + 48**2 * 64**2) = 16.1.
SCALE = 64.0
CLIP = 48.0


class FeatureNovelty(nn.Module):
    """log(1 + d^2 / D) of [B, D] features, d the Mahalanobis distance from healthy ones."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer('mean', torch.zeros(dim))
        self.register_buffer('covariance', torch.eye(dim))
        self.register_buffer('precision', torch.eye(dim))
        self.register_buffer('batches_tracked', torch.zeros((), dtype=torch.long))
        # Derived from the precision whenever it changes; not saved, so the weights file stays.
        self.register_buffer('whitening', torch.eye(dim) / SCALE, persistent=False)
        self.register_load_state_dict_post_hook(_rederive_whitening)

    @torch.no_grad()
    def track(self, features: torch.Tensor, healthy: torch.Tensor) -> None:
        """Fold the healthy rows of a training batch into the running statistics."""
        rows = features.detach()[healthy.bool()]
        if rows.shape[0] < 2:
            return
        mean = rows.mean(dim=0)
        centred = rows - mean
        covariance = centred.T @ centred / (rows.shape[0] - 1)
        weight = 1.0 if int(self.batches_tracked) == 0 else MOMENTUM
        self.mean.lerp_(mean, weight)
        self.covariance.lerp_(covariance, weight)
        ridge = SHRINKAGE * float(self.covariance.diagonal().mean()) + 1e-8
        self.precision.copy_(torch.linalg.inv(
            self.covariance + ridge * torch.eye(self.dim, device=features.device)))
        self.update_whitening()
        self.batches_tracked += 1

    @torch.no_grad()
    def update_whitening(self) -> None:
        """whitening = L / SCALE with precision = L L^T, so |centred @ L|^2 is d^2."""
        precision = self.precision.double()
        # The float32 inverse is asymmetric by up to 1e-7 of its 1.7e5 entries; the quadratic
        # form always saw the symmetric part, the factor must too.
        factor = torch.linalg.cholesky((precision + precision.T) / 2)
        self.whitening.copy_((factor / SCALE).to(self.whitening.dtype))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[B, 1] novelty scores: about log 2 for healthy features, growing with distance."""
        scaled = ((features - self.mean) @ self.whitening).clamp(-CLIP, CLIP)
        # A mean times D instead of a sum keeps the graph to ReduceMean.
        mean_square = (scaled * scaled).mean(dim=1, keepdim=True)
        # log(1 + d^2 / D) with the SCALE**2 taken out of the sum and added back as a log.
        return torch.log(mean_square + 1.0 / SCALE**2) + 2.0 * math.log(SCALE)


def _rederive_whitening(module: FeatureNovelty, incompatible_keys) -> None:
    module.update_whitening()
