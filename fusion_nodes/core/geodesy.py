"""WGS84 geodetic <-> local ENU conversions (exact, through ECEF)."""

import numpy as np

_A = 6378137.0
_F = 1.0 / 298.257223563
_E2 = _F * (2.0 - _F)


def geodetic_to_ecef(lat_deg: float, lon_deg: float, alt_m: float) -> np.ndarray:
    """ECEF position in metres of a WGS84 latitude, longitude and ellipsoid height."""
    lat, lon = np.radians(lat_deg), np.radians(lon_deg)
    n = _A / np.sqrt(1.0 - _E2 * np.sin(lat) ** 2)
    return np.array([
        (n + alt_m) * np.cos(lat) * np.cos(lon),
        (n + alt_m) * np.cos(lat) * np.sin(lon),
        (n * (1.0 - _E2) + alt_m) * np.sin(lat),
    ])


def _ecef_to_enu_rotation(lat_deg: float, lon_deg: float) -> np.ndarray:
    lat, lon = np.radians(lat_deg), np.radians(lon_deg)
    sl, cl = np.sin(lat), np.cos(lat)
    so, co = np.sin(lon), np.cos(lon)
    return np.array([[-so, co, 0.0], [-sl * co, -sl * so, cl], [cl * co, cl * so, sl]])


class EnuFrame:
    """A local East-North-Up frame anchored at a geodetic origin."""

    def __init__(self, lat_deg: float, lon_deg: float, alt_m: float) -> None:
        if not (np.isfinite(lat_deg) and np.isfinite(lon_deg) and np.isfinite(alt_m)):
            raise ValueError('ENU origin must be finite')
        if not -90.0 <= lat_deg <= 90.0 or not -180.0 <= lon_deg <= 180.0:
            raise ValueError(f'ENU origin out of range: lat {lat_deg}, lon {lon_deg}')
        self.origin = (float(lat_deg), float(lon_deg), float(alt_m))
        self._origin_ecef = geodetic_to_ecef(lat_deg, lon_deg, alt_m)
        self._rotation = _ecef_to_enu_rotation(lat_deg, lon_deg)

    def to_enu(self, lat_deg: float, lon_deg: float, alt_m: float) -> np.ndarray:
        """East, north, up in metres."""
        return self._rotation @ (geodetic_to_ecef(lat_deg, lon_deg, alt_m) - self._origin_ecef)

    def to_geodetic(self, enu: np.ndarray) -> tuple[float, float, float]:
        """Latitude, longitude, height of an ENU point (Bowring's iteration, < 1 mm)."""
        x, y, z = self._origin_ecef + self._rotation.T @ np.asarray(enu, dtype=np.float64)
        lon = np.arctan2(y, x)
        p = np.hypot(x, y)
        lat = np.arctan2(z, p * (1.0 - _E2))
        for _ in range(5):
            n = _A / np.sqrt(1.0 - _E2 * np.sin(lat) ** 2)
            alt = p / np.cos(lat) - n
            lat = np.arctan2(z, p * (1.0 - _E2 * n / (n + alt)))
        n = _A / np.sqrt(1.0 - _E2 * np.sin(lat) ** 2)
        alt = p / np.cos(lat) - n
        return float(np.degrees(lat)), float(np.degrees(lon)), float(alt)
