"""Diagnostic levels from health features, and the ERROR mask fusion drops sensors by."""

import numpy as np
import pytest

from fusion_nodes.core.assessment import (
    assess_camera, assess_camera_mount, assess_gps, assess_lidar, assess_lidar_mount,
    gps_in_multipath, HEALTH_FEATURES, sensor_in_error, sensors_in_error)
from fusion_nodes.core.camera import CAMERA_HEALTH_FEATURES
from fusion_nodes.core.camera_mount import CameraMountState
from fusion_nodes.core.gps import GpsSample
from fusion_nodes.core.lidar_mount import LidarMountState
from fusion_nodes.core.watchdog import ERROR, OK, WARN

HEALTHY = np.array([[0.5, 0.4, 0.9, 0.0],    # camera: brightness, contrast, sharpness, frozen
                    [1.0, 1.0, 0.0, 0.02],   # lidar: points, valid, frozen, near clutter
                    [1.0, 0.1, 0.0, 0.1]])   # gps: fix, sigma, multipath, age


def _gps(health, jump=False) -> GpsSample:
    zeros = np.zeros(3)
    return GpsSample(0, bool(health[0]), jump, zeros, zeros, np.eye(3), np.eye(3),
                     np.zeros(8), np.asarray(health, dtype=np.float64))


@pytest.mark.parametrize('sensor, column, value, level, message', [
    ('camera', 3, 1.0, ERROR, 'frozen'),
    ('camera', 0, 0.01, ERROR, 'blackout'),
    ('camera', 0, 0.95, ERROR, 'overexposed'),
    ('camera', 2, 0.2, WARN, 'blurred'),
    ('lidar', 2, 1.0, ERROR, 'frozen'),
    ('lidar', 0, 0.1, ERROR, 'dropout'),
    ('lidar', 3, 0.3, WARN, 'near-range clutter'),
    ('gps', 0, 0.0, ERROR, 'no fix'),
    ('gps', 2, 0.5, WARN, 'recent position jumps'),
])
def test_each_fault_gets_its_level_and_only_errors_are_dropped(sensor, column, value, level,
                                                               message):
    health = HEALTHY.copy()
    k = ('camera', 'lidar', 'gps').index(sensor)
    health[k, column] = value
    assess = {'camera': assess_camera, 'lidar': assess_lidar,
              'gps': lambda h: assess_gps(_gps(h))}[sensor]
    assert assess(HEALTHY[k]) == (OK, 'ok')
    got_level, got_message = assess(health[k])
    assert got_level == level and got_message.startswith(message)
    assert sensor_in_error(sensor, health[k]) == (level == ERROR)
    expected = np.zeros(3, bool)
    expected[k] = level == ERROR
    np.testing.assert_array_equal(sensors_in_error(health), expected)


def test_gps_error_from_health_alone_agrees_with_assess_gps():
    rng = np.random.default_rng(0)
    for _ in range(300):
        health = np.array([rng.integers(0, 2), rng.random(), rng.random() * rng.integers(0, 2),
                           rng.random()])
        sample = _gps(health, jump=bool(rng.integers(0, 2)))
        assert sensor_in_error('gps', health) == (assess_gps(sample)[0] == ERROR)


def test_mask_follows_the_leading_dimensions_and_rejects_bad_shapes():
    batch = np.stack([HEALTHY] * 4)
    batch[1, 0, 3] = 1.0
    batch[3, 2, 0] = 0.0
    mask = sensors_in_error(batch.reshape(2, 2, 3, 4))
    assert mask.shape == (2, 2, 3)
    np.testing.assert_array_equal(mask.reshape(4, 3), [[0, 0, 0], [1, 0, 0], [0, 0, 0],
                                                       [0, 0, 1]])
    with pytest.raises(ValueError, match='shape'):
        sensors_in_error(np.zeros((2, 4)))
    with pytest.raises(ValueError, match='unknown sensor'):
        sensor_in_error('radar', HEALTHY[0])
    assert HEALTH_FEATURES['camera'] == tuple(CAMERA_HEALTH_FEATURES)


def test_a_turned_lidar_mount_raises_the_lidar_to_error_with_its_heading():
    turned = LidarMountState(in_error=True, cusum_deg=150.0, heading_deg=19.6, steps=40)
    level, message = assess_lidar_mount(turned, WARN, 'sparse scan')
    assert level == ERROR and '+20 deg' in message
    straight = LidarMountState(in_error=False, cusum_deg=30.0, heading_deg=0.4, steps=40)
    assert assess_lidar_mount(straight, WARN, 'sparse scan') == (WARN, 'sparse scan')
    # An ERROR of the scan itself keeps its own message.
    assert assess_lidar_mount(turned, ERROR, 'dropout') == (ERROR, 'dropout')


def test_a_lidar_mount_jump_is_a_warning_until_the_alarm():
    knocked = LidarMountState(in_error=False, cusum_deg=0.0, heading_deg=0.1, steps=40,
                              travel_heading_deg=20.0, jumps=1, jump_deg=-20.0)
    level, message = assess_lidar_mount(knocked, OK, 'ok')
    assert level == WARN and '+20 deg' in message and 'knocked' in message
    assert assess_lidar_mount(knocked, WARN, 'sparse scan') == (WARN, 'sparse scan')
    past = LidarMountState(in_error=False, cusum_deg=0.0, heading_deg=0.1, steps=40, jumps=1)
    assert assess_lidar_mount(past, OK, 'ok') == (OK, 'ok')


def test_an_upside_down_camera_goes_to_error_unless_its_frame_already_is():
    upside_down = CameraMountState(in_error=True, cusum=12.0, log_ratio=-3.1, steps=20)
    level, message = assess_camera_mount(upside_down, OK, 'ok')
    assert level == ERROR and message.startswith('upside down')
    upright = CameraMountState(in_error=False, cusum=0.0, log_ratio=3.0, steps=20)
    assert assess_camera_mount(upright, WARN, 'blurred') == (WARN, 'blurred')
    assert assess_camera_mount(upside_down, ERROR, 'frozen') == (ERROR, 'frozen')


def test_gps_in_multipath_reads_the_jump_hold():
    assert gps_in_multipath(np.array([1.0, 0.1, 0.3, 0.1]))
    assert not gps_in_multipath(np.array([1.0, 0.1, 0.0, 0.1]))
