"""fusion_node's blame for a camera-lidar yaw disagreement, from the lidar's travel."""

import math

import pytest

from fusion_nodes.core.yaw_blame import blame_for_yaw, YawBlameConfig


@pytest.mark.parametrize('heading, blamed', [
    (0.0, 'camera'), (-2.9, 'camera'), (3.0, 'camera'),
    (19.0, 'lidar'), (-10.0, 'lidar'),
    (6.0, None), (-9.9, None), (math.nan, None)])
def test_the_lidar_travel_heading_decides_which_sensor_turned(heading, blamed):
    assert blame_for_yaw(heading) == blamed


def test_the_thresholds_come_from_the_config():
    cfg = YawBlameConfig(steady_deg=1.0, turned_deg=5.0)
    assert blame_for_yaw(2.0, cfg) is None
    assert blame_for_yaw(-6.0, cfg) == 'lidar'


@pytest.mark.parametrize('steady, turned', [(0.0, 5.0), (5.0, 5.0), (6.0, 5.0)])
def test_bad_thresholds_are_refused(steady, turned):
    with pytest.raises(ValueError):
        YawBlameConfig(steady_deg=steady, turned_deg=turned)
