"""Evaluation metrics and training losses against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from fusion_nodes.model.losses import class_weights, gaussian_nll
from fusion_nodes.model.metrics import (
    confusion, ego_calibration, gate_means, iou_per_class, mean_iou, object_hits, rmse)


def test_confusion_and_iou_by_hand():
    truth = np.array([[0, 0, 1, 1], [2, 2, 0, 0]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 0]])
    matrix = confusion(pred, truth, 3)
    assert matrix.tolist() == [[3, 1, 0], [0, 2, 0], [1, 0, 1]]
    # class 0: tp 3, union 3 + 1 + 1 = 5; class 1: tp 2, union 3; class 2: tp 1, union 2
    np.testing.assert_allclose(iou_per_class(matrix), [3 / 5, 2 / 3, 1 / 2])
    assert math.isclose(mean_iou(matrix), (3 / 5 + 2 / 3 + 1 / 2) / 3)


def test_mean_iou_ignores_classes_absent_from_truth():
    truth = np.zeros((4, 4), np.uint8)
    pred = truth.copy()
    pred[0, 0] = 3
    matrix = confusion(pred, truth, 6)
    assert math.isclose(mean_iou(matrix), 15 / 16)


def test_object_hits_vote_by_majority_per_connected_object():
    truth = np.zeros((8, 8), np.uint8)
    truth[1:3, 1:3] = 1          # a car of 4 cells
    truth[5, 5:8] = 4            # a red cube of 3 cells
    truth[7, 0] = 4              # a second, separate red cube
    pred = np.zeros_like(truth)
    pred[1:3, 1:3] = 1
    pred[1, 1] = 2               # one wrong cell: the majority is still car
    pred[5, 5:7] = 5             # two of three cells say blue cube: wrong
    pred[5, 7] = 4
    pred[7, 0] = 4
    assert object_hits(pred, truth) == (2, 3)


def test_rmse_and_gate_means():
    assert math.isclose(rmse(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]])),
                        math.sqrt(2.5))
    gates = np.array([[0.9, 0.1, 0.0], [0.7, 0.9, 0.5], [0.1, 0.8, 0.6]])
    failed = np.array([[0, 1, 0], [0, 0, 0], [1, 0, 0]])
    available = np.array([[1, 1, 0], [1, 1, 1], [1, 1, 1]])
    stats = gate_means(gates, failed, available, ('camera', 'lidar', 'gps'))
    assert math.isclose(stats['camera']['healthy'], 0.8)
    assert math.isclose(stats['camera']['failed'], 0.1)
    assert math.isclose(stats['lidar']['healthy'], 0.85)
    assert stats['gps']['healthy_frames'] == 2 and math.isnan(stats['gps']['failed'])


def test_ego_calibration_tells_honest_from_overconfident_variance():
    rng = np.random.default_rng(5)
    sigma = np.array([0.5, 0.1, 0.05])
    truth = rng.normal(0.0, 3.0, (20000, 3))
    pred = truth + rng.normal(0.0, 1.0, truth.shape) * sigma
    honest = ego_calibration(pred, np.log(np.square(sigma)) * np.ones_like(pred), truth)
    assert honest['within_1_sigma'] == pytest.approx([0.683] * 3, abs=0.01)
    assert honest['within_2_sigma'] == pytest.approx([0.954] * 3, abs=0.01)
    assert honest['mean_z2'] == pytest.approx([1.0] * 3, abs=0.04)
    # Stating half the sigma: a quarter of the variance, four times the mean z^2.
    bold = ego_calibration(pred, np.log(np.square(sigma / 2)) * np.ones_like(pred), truth)
    assert bold['within_2_sigma'] == pytest.approx([0.683] * 3, abs=0.01)
    assert bold['mean_z2'] == pytest.approx([4.0] * 3, abs=0.15)
    # A frame without an estimate is left out, not counted as a miss.
    pred[0, 0] = np.nan
    assert ego_calibration(pred, np.zeros_like(pred), truth)['frames'] == len(pred) - 1


def test_gaussian_nll_matches_the_density():
    mean = torch.tensor([[1.0, -2.0]])
    log_var = torch.tensor([[0.5, -1.0]])
    target = torch.tensor([[2.0, 0.0]])
    expected = np.mean([0.5 * (lv + (t - m) ** 2 / math.exp(lv))
                        for m, lv, t in ((1.0, 0.5, 2.0), (-2.0, -1.0, 0.0))])
    assert math.isclose(float(gaussian_nll(mean, log_var, target)), expected, rel_tol=1e-6)


def test_class_weights_favour_rare_classes():
    bev = np.zeros(1000, np.uint8)
    bev[:10] = 1
    bev[10:110] = 2
    weights = class_weights(bev, 4).numpy()
    assert weights[3] == 0.0
    assert weights[1] > weights[2] > weights[0]
    # inverse square-root frequency: class 1 is 10x rarer than class 2
    assert math.isclose(weights[1] / weights[2], math.sqrt(10), rel_tol=1e-3)
    assert math.isclose(weights[:3].mean(), 1.0, rel_tol=1e-6)
