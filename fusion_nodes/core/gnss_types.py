"""GpsFix: one validated GNSS fix, the plain-value form of sensor_msgs/NavSatFix.

Constructing a GpsFix checks it, so whatever holds one can trust it. Per REP-145 a fix
without a position (NO_FIX) may carry NaN or any other values there; a fix with status
>= FIX must have a finite position within WGS84 bounds.
"""

from dataclasses import dataclass, field
import math

import numpy as np

# sensor_msgs/NavSatStatus
STATUS_UNKNOWN = -2
STATUS_NO_FIX = -1
STATUS_FIX = 0
STATUS_SBAS_FIX = 1
STATUS_GBAS_FIX = 2
STATUSES = (STATUS_NO_FIX, STATUS_FIX, STATUS_SBAS_FIX, STATUS_GBAS_FIX)

# sensor_msgs/NavSatFix position_covariance_type
COVARIANCE_TYPE_UNKNOWN = 0
COVARIANCE_TYPE_APPROXIMATED = 1
COVARIANCE_TYPE_DIAGONAL_KNOWN = 2
COVARIANCE_TYPE_KNOWN = 3
COVARIANCE_TYPES = (COVARIANCE_TYPE_UNKNOWN, COVARIANCE_TYPE_APPROXIMATED,
                    COVARIANCE_TYPE_DIAGONAL_KNOWN, COVARIANCE_TYPE_KNOWN)


def _integer(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f'{what} must be an integer, got {value!r}')
    return int(value)


def _real(value, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f'{what} must be a float64 number, got {value!r}') from None


@dataclass(frozen=True, eq=False)
class GpsFix:
    """A checked fix; position_covariance is a read-only 3x3 float64 (ENU, m^2)."""

    stamp_ns: int
    frame_id: str
    latitude: float
    longitude: float
    altitude: float
    status: int
    service: int
    position_covariance: np.ndarray = field(repr=False)
    covariance_type: int

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalised values go in through the back door
        set_(self, 'stamp_ns', _integer(self.stamp_ns, 'stamp_ns'))
        if not isinstance(self.frame_id, str):
            raise ValueError(f'frame_id must be a string, got {self.frame_id!r}')
        status = _integer(self.status, 'status')
        if status == STATUS_UNKNOWN:
            raise ValueError('fix status is STATUS_UNKNOWN (-2): the driver did not set it')
        if status not in STATUSES:
            raise ValueError(f'unknown fix status {status} (expected -1, 0, 1 or 2)')
        set_(self, 'status', status)
        service = _integer(self.service, 'service')
        if not 0 <= service <= 0xFFFF:
            raise ValueError(f'service bitfield {service} is outside uint16')
        set_(self, 'service', service)
        for name in ('latitude', 'longitude', 'altitude'):
            set_(self, name, _real(getattr(self, name), name))
        if status >= STATUS_FIX:
            self._check_position()
        covariance_type = _integer(self.covariance_type, 'covariance_type')
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f'unknown position_covariance_type {covariance_type} '
                             '(expected 0..3)')
        set_(self, 'covariance_type', covariance_type)
        set_(self, 'position_covariance', self._checked_covariance(covariance_type))

    def _check_position(self) -> None:
        for name in ('latitude', 'longitude', 'altitude'):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f'fix with status {self.status} has {name} '
                                 f'{getattr(self, name)}')
        if not -90.0 <= self.latitude <= 90.0:
            raise ValueError(f'latitude {self.latitude} is outside [-90, 90]')
        if not -180.0 <= self.longitude <= 180.0:
            raise ValueError(f'longitude {self.longitude} is outside [-180, 180]')

    def _checked_covariance(self, covariance_type: int) -> np.ndarray:
        try:
            cov = np.array(self.position_covariance, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise ValueError('position_covariance must be 9 numbers') from None
        if cov.size != 9:
            raise ValueError(f'position_covariance must be 9 numbers, got {cov.size}')
        cov = cov.reshape(3, 3)
        if covariance_type != COVARIANCE_TYPE_UNKNOWN:
            if not np.all(np.isfinite(cov)):
                raise ValueError(f'position_covariance of type {covariance_type} is not '
                                 'finite')
            if np.any(np.diag(cov) < 0.0):
                raise ValueError(f'position_covariance has a negative variance: '
                                 f'{np.diag(cov).tolist()}')
        cov.setflags(write=False)
        return cov

    @property
    def has_position(self) -> bool:
        """True for any status at or above FIX (the position was checked)."""
        return self.status >= STATUS_FIX
