"""fusion-train on a GPU: runs where CUDA is (a lent device), skips elsewhere.

It imports nothing that needs the ROS message packages, so it runs on a GPU machine that
has torch and no ROS.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

from fusion_nodes.model.predict import predict
from fusion_nodes.model.train import train_model, TrainConfig
from tests.models.synthetic_samples import synthetic_gate_samples


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU (a lent device)')
def test_training_on_cuda_learns_like_the_cpu_and_returns_a_cpu_model():
    """Same seed, same batches (drawn on the CPU); the losses follow the CPU run's closely."""
    samples = synthetic_gate_samples(32, seed=0)
    base = TrainConfig(epochs=3, batch_size=8, learning_rate=2e-2, seed=0, threads=1,
                       gate_novelty=True)
    cpu_model, cpu_history = train_model(samples, base, progress=False)
    cuda_model, cuda_history = train_model(samples, replace(base, device='cuda'),
                                           progress=False)
    assert all(p.device.type == 'cpu' for p in cuda_model.parameters())
    assert all(b.device.type == 'cpu' for b in cuda_model.buffers())
    for cpu_epoch, cuda_epoch in zip(cpu_history, cuda_history):
        assert cuda_epoch['total'] == pytest.approx(cpu_epoch['total'], rel=0.05)
    out = predict(cuda_model, synthetic_gate_samples(8, seed=1))
    assert np.isfinite(out['gates']).all()
