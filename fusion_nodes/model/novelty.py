"""How far a sensor's pooled features lie from those of healthy training data.

The gates learn to close on the failures they were trained on, but a failure never seen in
training (a colour-channel swap, lidar crosstalk) reaches the gate MLP as a feature vector it
has no rule for. Measured on model 1.2.0's encoders, such failures move the pooled features far
from the healthy cluster (Mahalanobis distance 35-50 against a healthy 99th percentile of 4-8),
as the trained ones do (11-93), so the distance is a sign of failure that carries over to new
kinds. The statistics are running estimates over the healthy samples of each training batch,
kept like batch norm's, so they follow the encoder as it trains.
"""

import torch
from torch import nn

# Weight of each batch in the running statistics: they span about 100 steps, under half an
# epoch of the shipped training (262 steps).
MOMENTUM = 0.01
# Ridge on the covariance, relative to its mean variance, so the inverse stays well posed.
SHRINKAGE = 1e-3


class FeatureNovelty(nn.Module):
    """log(1 + d^2 / D) of [B, D] features, d the Mahalanobis distance from healthy ones."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer('mean', torch.zeros(dim))
        self.register_buffer('covariance', torch.eye(dim))
        self.register_buffer('precision', torch.eye(dim))
        self.register_buffer('batches_tracked', torch.zeros((), dtype=torch.long))

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
        self.batches_tracked += 1

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[B, 1] novelty scores: about log 2 for healthy features, growing with distance."""
        centred = features - self.mean
        # A mean times D instead of a sum keeps the graph to ReduceMean.
        squared = ((centred @ self.precision) * centred).mean(dim=1, keepdim=True)
        return torch.log1p(squared)
