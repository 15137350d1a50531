"""Fusion outputs: occupancy, colours, objects and the overlay."""

import numpy as np
import pytest

from fusion_nodes.core.config import BevGrid, CameraModel
from fusion_nodes.core.overlay import draw_overlay
from fusion_nodes.core.postprocess import (
    CLASS_COLOURS, colourise, extract_objects, occupancy_percent, softmax)

GRID = BevGrid()


def _probabilities_with_boxes() -> np.ndarray:
    logits = np.zeros((6, 64, 64), np.float32)
    logits[0] = 5.0
    logits[1, 20:28, 30:34] = 9.0  # car: x 10..14 m, y -1..1 m
    logits[3, 40, 10] = 9.0        # cone: single cell at x 20.25, y -10.75
    return softmax(logits)


def test_softmax_sums_to_one_and_occupancy_is_not_free():
    probs = _probabilities_with_boxes()
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, rtol=1e-6)
    occupancy = occupancy_percent(probs)
    assert occupancy.dtype == np.int8
    assert occupancy[22, 31] == round(100 * (1 - probs[0, 22, 31]))
    assert occupancy[0, 0] == round(100 * (1 - probs[0, 0, 0]))


def test_objects_are_connected_regions_in_metres():
    objects = extract_objects(_probabilities_with_boxes(), GRID)
    by_class = {o.class_id: o for o in objects}
    assert sorted(by_class) == [1, 3]
    car = by_class[1]
    assert (car.x, car.y, car.length, car.width, car.cells) == pytest.approx(
        (12.0, 0.0, 4.0, 2.0, 32))
    cone = by_class[3]
    assert (cone.x, cone.y) == pytest.approx((20.25, -10.75))
    assert 0.9 < car.confidence <= 1.0


def test_colourise_orients_forward_up_and_left_left():
    classes = np.zeros((64, 64), np.int64)
    classes[63, 0] = 1   # far ahead, far right (y = -16)
    image = colourise(classes)
    np.testing.assert_array_equal(image[0, 63], CLASS_COLOURS[1])
    with pytest.raises(ValueError):
        colourise(np.full((2, 2), 9))


def test_overlay_draws_boxes_and_gate_bars_without_touching_input():
    rgb = np.zeros((480, 640, 3), np.uint8)
    objects = extract_objects(_probabilities_with_boxes(), GRID)
    out = draw_overlay(rgb, objects, np.array([1.0, 0.0, 0.5]), CameraModel())
    assert not rgb.any()
    car_pixels, _ = CameraModel().project(np.array([[12.0, 0.0, 0.75]]))
    u, v = np.round(car_pixels[0]).astype(int)
    assert out[v - 40:v + 40, u - 60:u + 60].any()
    bars = out[400:, :220]
    assert bars.any()
