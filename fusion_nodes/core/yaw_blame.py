"""Which sensor turned, when the network's yaw check sees the camera and lidar disagree.

The yaw check (model/yaw_check.py, the model's yaw_disagreement output) sees from the first
frame that the lidar's objects agree with the camera's better turned by some angle than as
mounted; a lidar turned one way and a camera turned the other look the same to it. The
lidar's heading of travel (core/lidar_mount.py) tells them apart: a car does not slide
sideways, so a lidar that still sees the world stream straight back is mounted as
calibrated and the camera turned, while a lidar whose travel runs off its x axis turned
itself. In between, without recent travel, or right after the lidar's registration jumped,
it cannot tell, and both sensors are kept (what the network does without this rule).
"""

from dataclasses import dataclass
import math


@dataclass(frozen=True)
class YawBlameConfig:
    """Lidar heading of travel, in degrees off its x axis, read as steady or as turned.

    Measured on generator recordings (README): the lidar mount check's recent-heading median
    stays within a few degrees on straight travel; a lidar turned 20 degrees reads 15-25.
    """

    steady_deg: float = 3.0
    turned_deg: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 < self.steady_deg < self.turned_deg:
            raise ValueError('need 0 < steady_deg < turned_deg, got '
                             f'{self.steady_deg} and {self.turned_deg}')


def blame_for_yaw(lidar_travel_heading_deg: float,
                  cfg: YawBlameConfig = YawBlameConfig()) -> str | None:
    """'camera' or 'lidar', the sensor to drop for a yaw disagreement; None to keep both.

    lidar_travel_heading_deg is LidarMountState.travel_heading_deg: NaN when the lidar has
    no recent evidence.
    """
    heading = float(lidar_travel_heading_deg)
    if not math.isfinite(heading):
        return None
    if abs(heading) >= cfg.turned_deg:
        return 'lidar'
    if abs(heading) <= cfg.steady_deg:
        return 'camera'
    return None
