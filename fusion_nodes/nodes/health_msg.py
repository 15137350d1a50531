"""Per-message health: a DiagnosticArray stamped like the sensor message it describes.

There is no standard stamped float-vector message and a custom one would need a rosidl
build, so health rides in DiagnosticArray key/values: human-readable in any tool, and the
fusion node matches it to the sensor's feature message by exact stamp.
"""

import math

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np

from fusion_nodes.core.lidar_odometry import ODOMETRY_FIELDS, OdometryEstimate


def make_health_msg(header, sensor: str, level: int, message: str,
                    values: dict[str, float]) -> DiagnosticArray:
    """One DiagnosticStatus named after the sensor, keyed float values as text."""
    status = DiagnosticStatus(level=bytes([level]), name=sensor, message=message,
                              hardware_id=header.frame_id)
    status.values = [KeyValue(key=key, value=repr(float(value))) for key, value in values.items()]
    return DiagnosticArray(header=header, status=[status])


def parse_health_msg(msg: DiagnosticArray) -> tuple[str, int, dict[str, float]]:
    """Sensor name, level and values of a health message; ValueError when malformed."""
    if len(msg.status) != 1:
        raise ValueError(f'health message must hold one status, got {len(msg.status)}')
    status = msg.status[0]
    try:
        values = {kv.key: float(kv.value) for kv in status.values}
    except ValueError as error:
        raise ValueError(f'health value is not a number: {error}') from None
    level = status.level[0] if isinstance(status.level, (bytes, bytearray)) else int(status.level)
    return status.name, level, values


def vector(values: dict[str, float], prefix: str, names: tuple[str, ...]) -> np.ndarray:
    """Pick prefix.name entries in order into a float32 vector; ValueError if one is missing."""
    try:
        return np.array([values[f'{prefix}.{name}'] for name in names], dtype=np.float32)
    except KeyError as error:
        raise ValueError(f'health message lacks {error.args[0]}') from None


def flatten(prefix: str, names: tuple[str, ...], array: np.ndarray) -> dict[str, float]:
    """prefix.name -> value for a feature vector."""
    return {f'{prefix}.{name}': float(v) for name, v in zip(names, array)}


def odometry_values(estimate: OdometryEstimate) -> dict[str, float]:
    """A lidar odometry estimate as health values: odometry.<field> and odometry.var_<field>
    (NaN for none), read back by odometry_from_values."""
    values = {}
    for k, name in enumerate(ODOMETRY_FIELDS):
        values[f'odometry.{name}'] = float(estimate.velocity[k])
        values[f'odometry.var_{name}'] = float(estimate.variance[k])
    return values


def odometry_from_values(values: dict[str, float]) -> OdometryEstimate:
    """The estimate odometry_values wrote; no estimate when the values are absent."""
    velocity = [values.get(f'odometry.{name}', math.nan) for name in ODOMETRY_FIELDS]
    variance = [values.get(f'odometry.var_{name}', math.nan) for name in ODOMETRY_FIELDS]
    return OdometryEstimate(np.array(velocity, dtype=np.float64),
                            np.array(variance, dtype=np.float64))
