"""Camera preprocessing for the network and camera health features."""

from dataclasses import dataclass

import cv2
import numpy as np

from fusion_nodes.core.config import CameraPreprocessConfig

CAMERA_HEALTH_FEATURES = ('brightness', 'contrast', 'sharpness', 'frozen')


def preprocess_camera(rgb: np.ndarray, cfg: CameraPreprocessConfig) -> np.ndarray:
    """Resize an (H, W, 3) uint8 RGB frame and normalise it to (3, h, w) float32."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f'expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}')
    small = cv2.resize(rgb, (cfg.width, cfg.height), interpolation=cv2.INTER_AREA)
    scale = np.float32(1.0 / 255.0)
    mean = np.asarray(cfg.mean, dtype=np.float32)
    inv_std = 1.0 / np.asarray(cfg.std, dtype=np.float32)
    normalised = (small.astype(np.float32) * scale - mean) * inv_std
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def grey_from_network_input(features: np.ndarray, cfg: CameraPreprocessConfig) -> np.ndarray:
    """Undo the normalisation of (3, h, w) network input into a [0, 1] grey image."""
    std = np.asarray(cfg.std, dtype=np.float32)[:, None, None]
    mean = np.asarray(cfg.mean, dtype=np.float32)[:, None, None]
    rgb = features * std + mean
    return (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]).astype(np.float32)


@dataclass(frozen=True)
class CameraHealthConfig:
    """Thresholds for camera health; sharpness_ref is a well-focused scene's Laplacian var."""

    analysis_width: int = 160
    analysis_height: int = 120
    sharpness_ref: float = 400.0
    frozen_diff: float = 0.25
    frozen_frames: int = 3


class CameraHealthTracker:
    """Scores each frame: brightness, contrast, sharpness in [0, 1], and a frozen flag.

    Frozen means the image stopped changing while stamps advance: the mean absolute grey
    difference stays under frozen_diff levels for frozen_frames consecutive frames.
    """

    def __init__(self, cfg: CameraHealthConfig = CameraHealthConfig()) -> None:
        self._cfg = cfg
        self._previous: np.ndarray | None = None
        self._still_frames = 0

    def reset(self) -> None:
        self._previous = None
        self._still_frames = 0

    def update(self, rgb: np.ndarray) -> np.ndarray:
        """Health features of one (H, W, 3) uint8 RGB frame, as float32 (4,)."""
        cfg = self._cfg
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        small = cv2.resize(grey, (cfg.analysis_width, cfg.analysis_height),
                           interpolation=cv2.INTER_AREA)
        mean, std = cv2.meanStdDev(small)
        laplacian_var = float(cv2.Laplacian(small, cv2.CV_32F).var())
        if self._previous is not None and small.shape == self._previous.shape:
            change = float(cv2.absdiff(small, self._previous).mean())
            self._still_frames = self._still_frames + 1 if change < cfg.frozen_diff else 0
        self._previous = small
        frozen = 1.0 if self._still_frames >= cfg.frozen_frames else 0.0
        sharpness = np.log1p(laplacian_var) / np.log1p(cfg.sharpness_ref)
        return np.array([
            float(mean[0, 0]) / 255.0,
            min(float(std[0, 0]) / 64.0, 1.0),
            min(float(sharpness), 1.0),
            frozen,
        ], dtype=np.float32)
