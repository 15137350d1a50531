"""Debug overlay: detections projected into the camera image, plus per-sensor gate bars."""

import cv2
import numpy as np

from fusion_nodes.core.config import CameraModel, SEMANTIC_CLASSES, SENSORS
from fusion_nodes.core.postprocess import CLASS_COLOURS, DetectedObject

# Typical heights, only for drawing boxes: the BEV grid carries no height.
_DRAW_HEIGHT = {'car': 1.5, 'pedestrian': 1.8, 'cone': 0.7, 'red_cube': 1.0, 'blue_cube': 1.0}


def _box_corners(obj: DetectedObject) -> np.ndarray:
    height = _DRAW_HEIGHT.get(SEMANTIC_CLASSES[obj.class_id], 1.0)
    dx, dy = obj.length / 2.0, obj.width / 2.0
    footprint = [(obj.x - dx, obj.y - dy), (obj.x + dx, obj.y - dy),
                 (obj.x + dx, obj.y + dy), (obj.x - dx, obj.y + dy)]
    return np.array([(x, y, z) for z in (0.0, height) for x, y in footprint])


def draw_overlay(rgb: np.ndarray, objects: list[DetectedObject], gates: np.ndarray,
                 camera: CameraModel, statuses: dict[str, str] | None = None) -> np.ndarray:
    """A copy of the RGB frame with 3-D boxes of the detections and gate bars drawn on it."""
    out = np.ascontiguousarray(rgb.copy())
    scale_x = rgb.shape[1] / camera.width
    scale_y = rgb.shape[0] / camera.height
    for obj in objects:
        pixels, depth = camera.project(_box_corners(obj))
        if (depth <= 0.5).any() or not np.isfinite(pixels).all():
            continue
        pts = np.round(pixels * (scale_x, scale_y)).astype(np.int32)
        colour = tuple(int(c) for c in CLASS_COLOURS[obj.class_id])
        for a, b in ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4),
                     (0, 4), (1, 5), (2, 6), (3, 7)):
            cv2.line(out, tuple(pts[a]), tuple(pts[b]), colour, 1, cv2.LINE_AA)
        label = f'{SEMANTIC_CLASSES[obj.class_id]} {obj.confidence:.2f}'
        top = tuple(pts[4:].min(axis=0))
        cv2.putText(out, label, (int(top[0]), max(int(top[1]) - 3, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1, cv2.LINE_AA)
    _draw_gate_bars(out, gates, statuses or {})
    return out


def _draw_gate_bars(out: np.ndarray, gates: np.ndarray, statuses: dict[str, str]) -> None:
    height = out.shape[0]
    for k, sensor in enumerate(SENSORS):
        gate = float(np.clip(gates[k], 0.0, 1.0))
        x0, y0 = 8 + 70 * k, height - 12
        bar_height = int(round(50 * gate))
        colour = (int(255 * (1.0 - gate)), int(220 * gate), 40)
        cv2.rectangle(out, (x0, y0 - 50), (x0 + 18, y0), (255, 255, 255), 1)
        if bar_height:
            cv2.rectangle(out, (x0 + 1, y0 - bar_height), (x0 + 17, y0 - 1), colour, -1)
        text = f'{sensor[0].upper()} {gate:.2f} {statuses.get(sensor, "")}'.strip()
        cv2.putText(out, text, (x0 + 21, y0 - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.33,
                    (255, 255, 255), 1, cv2.LINE_AA)
