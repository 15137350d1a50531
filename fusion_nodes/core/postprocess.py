"""Network outputs -> published products: occupancy, semantic colours, objects."""

from dataclasses import dataclass

import cv2
import numpy as np

from fusion_nodes.core.config import BevGrid

# RGB per class, in SEMANTIC_CLASSES order: free, car, pedestrian, cone, red_cube, blue_cube.
CLASS_COLOURS = np.array([
    [40, 40, 40], [0, 200, 255], [255, 220, 0], [255, 120, 0], [230, 30, 30], [40, 80, 255],
], dtype=np.uint8)


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    """Numerically stable softmax over the class axis."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def occupancy_percent(probabilities: np.ndarray) -> np.ndarray:
    """(rows, cols) int8 occupancy 0..100 = 100 * P(not free), as nav_msgs expects."""
    return np.round(100.0 * (1.0 - probabilities[0])).astype(np.int8)


def colourise(classes: np.ndarray) -> np.ndarray:
    """(rows, cols) class ids -> (rows, cols, 3) uint8 RGB with x up, y left, as seen from above.

    Row 0 of the grid is nearest x; flipping both axes puts forward at the top of the image and
    the robot's left on the image's left.
    """
    if classes.min(initial=0) < 0 or classes.max(initial=0) >= len(CLASS_COLOURS):
        raise ValueError(f'class ids must be in [0, {len(CLASS_COLOURS)})')
    return np.ascontiguousarray(CLASS_COLOURS[classes][::-1, ::-1])


@dataclass(frozen=True)
class DetectedObject:
    """A connected region of one class in the BEV grid, in base_link metres."""

    class_id: int
    confidence: float
    x: float
    y: float
    length: float
    width: float
    cells: int


def extract_objects(probabilities: np.ndarray, grid: BevGrid, min_cells: int = 1,
                    min_confidence: float = 0.5) -> list[DetectedObject]:
    """Objects as 8-connected components of each non-free class's argmax cells."""
    classes = probabilities.argmax(axis=0)
    objects = []
    for class_id in range(1, probabilities.shape[0]):
        mask = (classes == class_id).astype(np.uint8)
        if not mask.any():
            continue
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        for label in range(1, count):
            cells = int(stats[label, cv2.CC_STAT_AREA])
            if cells < min_cells:
                continue
            region = labels == label
            confidence = float(probabilities[class_id][region].mean())
            if confidence < min_confidence:
                continue
            rows, cols = np.nonzero(region)
            x = grid.x_min + (rows.mean() + 0.5) * grid.resolution
            y = grid.y_min + (cols.mean() + 0.5) * grid.resolution
            length = (rows.max() - rows.min() + 1) * grid.resolution
            width = (cols.max() - cols.min() + 1) * grid.resolution
            objects.append(DetectedObject(class_id, confidence, float(x), float(y),
                                          float(length), float(width), cells))
    return objects
