"""Camera preprocessing and health features."""

import cv2
import numpy as np
import pytest

from fusion_nodes.core.camera import (
    CameraHealthConfig, CameraHealthTracker, grey_from_network_input, preprocess_camera)
from fusion_nodes.core.config import CameraPreprocessConfig

CFG = CameraPreprocessConfig()


def _scene(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((480, 640, 3), 90, np.uint8)
    for _ in range(40):
        x, y = rng.integers(0, 600), rng.integers(0, 440)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.rectangle(img, (int(x), int(y)), (int(x) + 40, int(y) + 30), colour, -1)
    return img


def test_preprocess_matches_manual_normalisation():
    rgb = _scene()
    out = preprocess_camera(rgb, CFG)
    assert out.shape == (3, CFG.height, CFG.width) and out.dtype == np.float32
    small = cv2.resize(rgb, (CFG.width, CFG.height), interpolation=cv2.INTER_AREA)
    for c in range(3):
        expected = (small[:, :, c] / 255.0 - CFG.mean[c]) / CFG.std[c]
        np.testing.assert_allclose(out[c], expected, atol=1e-5)


def test_preprocess_rejects_wrong_input():
    with pytest.raises(ValueError, match='uint8 RGB'):
        preprocess_camera(np.zeros((48, 64), np.uint8), CFG)
    with pytest.raises(ValueError):
        preprocess_camera(np.zeros((48, 64, 3), np.float32), CFG)


def test_grey_inverts_normalisation():
    rgb = _scene(1)
    grey = grey_from_network_input(preprocess_camera(rgb, CFG), CFG)
    small = cv2.resize(rgb, (CFG.width, CFG.height), interpolation=cv2.INTER_AREA) / 255.0
    expected = 0.299 * small[:, :, 0] + 0.587 * small[:, :, 1] + 0.114 * small[:, :, 2]
    np.testing.assert_allclose(grey, expected, atol=1e-5)


def test_health_separates_blackout_glare_blur_and_frozen():
    tracker = CameraHealthTracker()
    healthy = tracker.update(_scene(2))
    dark = CameraHealthTracker().update(np.full((480, 640, 3), 3, np.uint8))
    glare = CameraHealthTracker().update(np.full((480, 640, 3), 250, np.uint8))
    blurred = CameraHealthTracker().update(cv2.GaussianBlur(_scene(2), (31, 31), 12))
    assert healthy[0] > 0.2 and dark[0] < 0.05 and glare[0] > 0.95
    assert healthy[1] > 0.2 and dark[1] < 0.05 and glare[1] < 0.05
    assert blurred[2] < healthy[2] - 0.2
    assert healthy[3] == 0.0


def test_frozen_needs_consecutive_identical_frames():
    tracker = CameraHealthTracker(CameraHealthConfig(frozen_frames=3))
    frame = _scene(3)
    flags = [tracker.update(frame)[3] for _ in range(5)]
    assert flags == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert tracker.update(_scene(4))[3] == 0.0
