"""Training samples where only gating on health can keep the output right."""

import numpy as np


def synthetic_gate_samples(n: int, seed: int) -> dict[str, np.ndarray]:
    """BEV truth = lidar occupancy (class 1); half the scans are noise with a low health score
    and a failure flag, so only gating on health can keep the output right."""
    rng = np.random.default_rng(seed)
    occupancy = (rng.random((n, 64, 64)) < 0.05).astype(np.float32)
    failed = np.zeros((n, 3), np.uint8)
    failed[n // 2:, 1] = 1
    lidar = np.repeat(occupancy[:, None], 4, axis=1)
    lidar[n // 2:] = (rng.random((n - n // 2, 4, 64, 64)) < 0.3).astype(np.float32)
    health = np.ones((n, 3, 4), np.float32)
    health[n // 2:, 1, 0] = 0.05
    return {
        'camera': np.zeros((n, 3, 96, 128), np.float32), 'lidar': lidar,
        'gps': np.zeros((n, 8), np.float32), 'health': health,
        'available': np.ones((n, 3), np.float32),
        'bev': occupancy.astype(np.uint8), 'ego': np.zeros((n, 3), np.float32),
        'failed': failed,
    }
