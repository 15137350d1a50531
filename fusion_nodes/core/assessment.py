"""Diagnostic levels from each sensor's health features, and which sensors are in error.

The sensor nodes report these levels on /diagnostics; fusion_node and the offline evaluation
use the same functions to keep a sensor in error out of the fusion (see sensors_in_error).
"""

import numpy as np

from fusion_nodes.core.camera import CAMERA_HEALTH_FEATURES
from fusion_nodes.core.camera_mount import CameraMountState
from fusion_nodes.core.config import SENSORS
from fusion_nodes.core.gps import GPS_HEALTH_FEATURES, GpsSample
from fusion_nodes.core.lidar import LIDAR_HEALTH_FEATURES
from fusion_nodes.core.lidar_mount import LidarMountState
from fusion_nodes.core.watchdog import ERROR, OK, WARN


def assess_camera(health: np.ndarray) -> tuple[int, str]:
    """Diagnostic level and message from camera health features."""
    brightness, contrast, sharpness, frozen = (float(v) for v in health)
    if frozen:
        return ERROR, 'frozen: image stopped changing'
    if brightness < 0.06:
        return ERROR, 'blackout: image is dark'
    if brightness > 0.92 or (brightness > 0.8 and contrast < 0.1):
        return ERROR, 'overexposed or glare'
    if sharpness < 0.45:
        return WARN, 'blurred'
    if contrast < 0.08:
        return WARN, 'low contrast'
    return OK, 'ok'


def assess_lidar(health: np.ndarray) -> tuple[int, str]:
    """Diagnostic level and message from lidar health features."""
    point_ratio, valid_ratio, frozen, near_clutter = (float(v) for v in health)
    if frozen:
        return ERROR, 'frozen: scan identical to the previous one'
    if point_ratio < 0.2:
        return ERROR, 'dropout: too few points'
    if near_clutter > 0.15:
        return WARN, 'near-range clutter (rain, spray or dirt)'
    if point_ratio < 0.6:
        return WARN, 'sparse scan'
    return OK, 'ok'


def assess_camera_mount(state: CameraMountState, level: int, message: str
                        ) -> tuple[int, str]:
    """The camera's level and message with its mount check (camera_mount) taken into account.

    An image whose top streams past faster than its bottom while driving is upside down:
    every pixel lands in the wrong BEV cell, however healthy the frame looks.
    """
    if state.in_error and level < ERROR:
        return ERROR, 'upside down: the top of the image flows faster than the bottom'
    return level, message


def assess_lidar_mount(state: LidarMountState, level: int, message: str) -> tuple[int, str]:
    """The lidar's level and message with its mount check (lidar_mount) taken into account.

    A lidar whose travel runs off its x axis gives every point in the wrong place, however
    healthy its scan looks: ERROR, so the fusion drops it. A recent mount jump is a WARN.
    """
    if state.in_error and level < ERROR:
        return ERROR, (f'travel {state.heading_deg:+.0f} deg off the x axis: extrinsic yaw '
                       f'wrong or mount turned')
    if np.isfinite(state.jump_deg) and level < WARN:
        # Not ERROR on one match: the alarm confirms it over the next steps, and meanwhile
        # the jump is the yaw blame's evidence.
        return WARN, (f'scan turned {-state.jump_deg:+.0f} deg against the sweep before: '
                      f'mount knocked?')
    return level, message


def assess_gps(sample: GpsSample) -> tuple[int, str]:
    """Diagnostic level and message for one processed fix."""
    fix_valid, sigma_h, multipath, age = (float(v) for v in sample.health)
    if not fix_valid:
        return ERROR, 'no fix'
    if sample.jump:
        return WARN, 'position jump rejected (multipath?)'
    if multipath > 0.0:
        return WARN, 'recent position jumps (multipath?)'
    if sigma_h >= 0.5:
        return WARN, 'poor accuracy (sigma >= 5 m)'
    return OK, 'ok'


def _gps_health_level(health: np.ndarray) -> int:
    # assess_gps's only ERROR is a missing fix, which the health vector alone shows.
    return ERROR if not float(health[0]) else OK


# The order of each health vector the functions here read.
HEALTH_FEATURES = {'camera': tuple(CAMERA_HEALTH_FEATURES), 'lidar': tuple(LIDAR_HEALTH_FEATURES),
                   'gps': tuple(GPS_HEALTH_FEATURES)}
_LEVEL_OF_HEALTH = {
    'camera': lambda health: assess_camera(health)[0],
    'lidar': lambda health: assess_lidar(health)[0],
    'gps': _gps_health_level,
}


def gps_in_multipath(gps_health: np.ndarray) -> bool:
    """Whether the GPS health (GPS_HEALTH_FEATURES) shows a position jump rejected within
    its jump_hold_s: a receiver inside a multipath episode, whose fixes may sit on a
    reflected solution however steady they look (its node says WARN)."""
    return float(gps_health[GPS_HEALTH_FEATURES.index('multipath')]) > 0.0


def sensor_in_error(sensor: str, health: np.ndarray) -> bool:
    """Whether one sensor's health (ordered as HEALTH_FEATURES) puts it at ERROR.

    ERROR means frozen, dark or glaring, a lidar dropout, or no GPS fix.
    """
    level_of = _LEVEL_OF_HEALTH.get(sensor)
    if level_of is None:
        raise ValueError(f'unknown sensor {sensor!r}; expected one of {SENSORS}')
    return level_of(health) >= ERROR


def sensors_in_error(health: np.ndarray) -> np.ndarray:
    """Bool (..., 3): sensor_in_error for each sensor of health shaped (..., 3, features).

    Such a sensor is dropped from the fusion as if it had not delivered, whatever its learned
    gate says: the gate is a soft judgement, an ERROR from the sensor's own node is not.
    """
    health = np.asarray(health, dtype=np.float64)
    if health.ndim < 2 or health.shape[-2] != len(SENSORS):
        raise ValueError(f'health must have shape (..., {len(SENSORS)}, features), '
                         f'got {health.shape}')
    rows = health.reshape(-1, *health.shape[-2:])
    out = np.array([[sensor_in_error(s, row[k]) for k, s in enumerate(SENSORS)]
                    for row in rows], dtype=bool).reshape(-1, len(SENSORS))
    return out.reshape(health.shape[:-1])
