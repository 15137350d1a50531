"""Per-sensor feature extraction for training, by the very calls the sensor nodes make.

Each extractor holds the same core tracker a sensor node holds, built from the node's own
parameter defaults (fusion_nodes.nodes.params), and turns one decoded bag message into the
network features and health features that node would publish. Feeding messages in stream
order keeps the stateful health trackers (frozen-frame counters, the GPS Kalman filter)
in the same state as on the robot, so there is no train/serve skew to learn around.
"""

from dataclasses import dataclass

import numpy as np

from fusion_nodes import conversions
from fusion_nodes.core.camera import CameraHealthConfig, CameraHealthTracker, preprocess_camera
from fusion_nodes.core.config import BevGrid, CameraPreprocessConfig, PillarConfig, rotation_rpy
from fusion_nodes.core.gps import GpsTracker, GpsTrackerConfig
from fusion_nodes.core.lidar import (
    lidar_points_to_base, LidarHealthConfig, LidarHealthTracker, pillarize)
from fusion_nodes.nodes.params import CAMERA_PARAMS, GPS_PARAMS, LIDAR_PARAMS


@dataclass(frozen=True)
class SensorFeatures:
    """One message's network features and health features, at its header stamp."""

    stamp_ns: int
    features: np.ndarray
    health: np.ndarray


def camera_preprocess_config(params: dict = CAMERA_PARAMS) -> CameraPreprocessConfig:
    return CameraPreprocessConfig(
        width=int(params['network_width']), height=int(params['network_height']),
        mean=tuple(params['normalisation_mean']), std=tuple(params['normalisation_std']))


class CameraExtractor:
    """camera_node's processing: decode, preprocess_camera, CameraHealthTracker."""

    def __init__(self, params: dict = CAMERA_PARAMS) -> None:
        self.preprocess_cfg = camera_preprocess_config(params)
        self.tracker = CameraHealthTracker(CameraHealthConfig(
            sharpness_ref=float(params['sharpness_ref']),
            frozen_diff=float(params['frozen_diff']),
            frozen_frames=int(params['frozen_frames'])))

    def decode(self, msg) -> np.ndarray:
        """RGB8 from an Image or a CompressedImage (told apart by the 'format' field)."""
        if hasattr(msg, 'format') and not hasattr(msg, 'encoding'):
            return conversions.compressed_to_rgb8(msg)
        return conversions.image_to_rgb8(msg)

    def update(self, msg, with_features: bool = True) -> SensorFeatures:
        """Health always (the tracker must see every frame); features only when asked."""
        rgb = self.decode(msg)
        health = self.tracker.update(rgb)
        features = preprocess_camera(rgb, self.preprocess_cfg) if with_features else None
        return SensorFeatures(conversions.stamp_to_ns(msg.header.stamp), features, health)


def pillar_config(params: dict = LIDAR_PARAMS) -> PillarConfig:
    grid = BevGrid(x_min=float(params['grid_x_min']), x_max=float(params['grid_x_max']),
                   y_min=float(params['grid_y_min']), y_max=float(params['grid_y_max']),
                   resolution=float(params['grid_resolution']))
    return PillarConfig(grid=grid, z_min=float(params['z_min']), z_max=float(params['z_max']),
                        obstacle_min_z=float(params['obstacle_min_z']),
                        density_norm=float(params['density_norm']))


class LidarExtractor:
    """lidar_node's processing: cloud_to_xyzi, LidarHealthTracker, base_link, pillarize."""

    def __init__(self, params: dict = LIDAR_PARAMS) -> None:
        self.pillar_cfg = pillar_config(params)
        self.translation = tuple(float(v) for v in params['extrinsic_translation'])
        rpy = tuple(float(v) for v in params['extrinsic_rpy'])
        self.rotation = None if not any(rpy) else rotation_rpy(*rpy)
        self.tracker = LidarHealthTracker(LidarHealthConfig(
            expected_points=int(params['expected_points']),
            near_range=float(params['near_range'])))

    def update(self, msg) -> SensorFeatures:
        xyzi = conversions.cloud_to_xyzi(msg, skip_nans=True)
        total = int(msg.width) * int(msg.height)
        health = self.tracker.update(xyzi, total)
        base = lidar_points_to_base(xyzi, self.translation, self.rotation)
        bev = pillarize(base, self.pillar_cfg)
        return SensorFeatures(conversions.stamp_to_ns(msg.header.stamp), bev, health)


class GpsExtractor:
    """gps_node's processing: navsatfix_to_fix, GpsTracker (ENU origin at the first fix)."""

    def __init__(self, params: dict = GPS_PARAMS) -> None:
        self.tracker = GpsTracker(GpsTrackerConfig.from_params(params))

    def update(self, msg) -> SensorFeatures:
        sample = self.tracker.update(conversions.navsatfix_to_fix(msg))
        return SensorFeatures(int(sample.stamp_ns), sample.features, sample.health)
