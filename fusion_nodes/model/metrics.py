"""Evaluation metrics: BEV mIoU, per-object class accuracy, ego RMSE and how honest its
variance is, gate statistics."""

import cv2
import numpy as np


def confusion(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts, rows truth and columns prediction."""
    if pred.shape != truth.shape:
        raise ValueError(f'prediction {pred.shape} and truth {truth.shape} differ in shape')
    index = truth.astype(np.int64).ravel() * num_classes + pred.astype(np.int64).ravel()
    return np.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_per_class(matrix: np.ndarray) -> np.ndarray:
    """IoU of each class; NaN for a class absent from both truth and prediction."""
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - tp
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(matrix: np.ndarray) -> float:
    """Mean IoU over the classes that occur in the truth (free included)."""
    present = matrix.sum(axis=1) > 0
    return float(np.nanmean(iou_per_class(matrix)[present])) if present.any() else float('nan')


def object_hits(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """(correct, total) GT objects: 4-connected same-class cell groups, judged by the
    majority predicted class over their cells (class 0 is free space, not an object)."""
    correct = total = 0
    for cls in np.unique(truth):
        if cls == 0:
            continue
        count, labels = cv2.connectedComponents((truth == cls).astype(np.uint8), connectivity=4)
        for label in range(1, count):
            votes = np.bincount(pred[labels == label].ravel())
            total += 1
            correct += int(np.argmax(votes) == cls)
    return correct, total


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Root mean square error over every element (vx, vy, yaw rate pooled)."""
    return float(np.sqrt(np.mean((np.asarray(pred) - np.asarray(truth)) ** 2)))


def ego_calibration(pred: np.ndarray, log_variance: np.ndarray,
                    truth: np.ndarray) -> dict[str, list[float] | int]:
    """How far the stated ego variance covers the error, per component (vx, vy, yaw rate):
    the fraction of errors within one and two stated sigmas (0.68 and 0.95 when honest and
    Gaussian) and the mean squared error in variances (1 when honest), over the frames
    whose values are all finite ('frames' counts them)."""
    error = np.asarray(pred, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    variance = np.exp(np.clip(np.asarray(log_variance, dtype=np.float64), -20.0, 20.0))
    z2 = np.square(error) / variance
    usable = np.all(np.isfinite(z2), axis=1)
    z2 = z2[usable]
    if not usable.any():
        nan = [float('nan')] * error.shape[1]
        return {'within_1_sigma': nan, 'within_2_sigma': nan, 'mean_z2': nan, 'frames': 0}
    return {'within_1_sigma': (z2 <= 1.0).mean(axis=0).tolist(),
            'within_2_sigma': (z2 <= 4.0).mean(axis=0).tolist(),
            'mean_z2': z2.mean(axis=0).tolist(), 'frames': int(usable.sum())}


def gate_means(gates: np.ndarray, failed: np.ndarray, available: np.ndarray,
               sensors: tuple[str, ...]) -> dict[str, dict[str, float | int]]:
    """Mean gate per sensor over frames where it delivered data, split healthy / failed."""
    out = {}
    for k, sensor in enumerate(sensors):
        present = available[:, k] > 0
        healthy = present & (failed[:, k] == 0)
        broken = present & (failed[:, k] != 0)
        out[sensor] = {
            'healthy': float(gates[healthy, k].mean()) if healthy.any() else float('nan'),
            'failed': float(gates[broken, k].mean()) if broken.any() else float('nan'),
            'healthy_frames': int(healthy.sum()),
            'failed_frames': int(broken.sum()),
        }
    return out
