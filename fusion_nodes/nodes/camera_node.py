"""camera_node: decodes Image or CompressedImage, publishes network input and health."""

import math
import sys

import cv2
import numpy as np
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from fusion_nodes import conversions
from fusion_nodes.core.align.ego_speed import GroundPatchSpeed
from fusion_nodes.core.assessment import assess_camera, assess_camera_mount
from fusion_nodes.core.camera import (
    CAMERA_HEALTH_FEATURES, CameraHealthConfig, CameraHealthTracker, grey_from_network_input,
    preprocess_camera)
from fusion_nodes.core.camera_mount import CameraMountMonitor
from fusion_nodes.core.config import CameraModel, CameraPreprocessConfig
from fusion_nodes.nodes.params import CAMERA_PARAMS
from fusion_nodes.nodes.runner import run_node
from fusion_nodes.nodes.sensor_node import ERROR, RELIABLE_OUTPUT, SensorNode

_TRANSPORTS = {
    'raw': (Image, 'camera/image_raw', conversions.image_to_rgb8),
    'compressed': (CompressedImage, 'camera/image_raw/compressed',
                   conversions.compressed_to_rgb8),
}


class CameraNode(SensorNode):
    """Publishes camera/features (32FC3, network size, normalised) and camera/health."""

    def __init__(self, **kwargs) -> None:
        super().__init__('camera_node', 'camera', CAMERA_PARAMS, CAMERA_HEALTH_FEATURES,
                         **kwargs)
        p = self.params
        transport = str(p['input_transport'])
        if transport not in _TRANSPORTS:
            raise ValueError(f'input_transport must be one of {sorted(_TRANSPORTS)}, '
                             f'got {transport!r}')
        self.preprocess_cfg = CameraPreprocessConfig(
            width=int(p['network_width']), height=int(p['network_height']),
            mean=tuple(p['normalisation_mean']), std=tuple(p['normalisation_std']))
        self.tracker = CameraHealthTracker(CameraHealthConfig(
            sharpness_ref=float(p['sharpness_ref']), frozen_diff=float(p['frozen_diff']),
            frozen_frames=int(p['frozen_frames'])))
        msg_type, topic, self._decode = _TRANSPORTS[transport]
        self.ground_speed = GroundPatchSpeed(camera_model_from_params(p))
        self.mount_monitor = CameraMountMonitor() if p['mount_check'] else None
        self.features_pub = self.create_publisher(Image, 'camera/features', RELIABLE_OUTPUT)
        self.create_subscription(msg_type, topic, self._on_image, qos_profile_sensor_data)

    def _on_image(self, msg) -> None:
        self.process_message(msg, self._process)

    def _signature(self, rgb: np.ndarray, level: int) -> float:
        """The road's forward shift since the last frame; NaN when there is none to trust."""
        if rgb.shape[1::-1] != self.ground_speed.image_size:
            self.get_logger().warning(
                f'{rgb.shape[1]}x{rgb.shape[0]} frames against a {self.ground_speed.image_size[0]}'
                f'x{self.ground_speed.image_size[1]} calibration: no clock-offset signature',
                throttle_duration_sec=float(self.params['warn_throttle_s']))
        if level >= ERROR:
            # A black, glaring, frozen or upside-down frame shows no road moving while the car
            # moves: a false stop in the signature would pull the offset estimate.
            self.ground_speed.reset()
            return math.nan
        return self.ground_speed.update(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))

    def _process(self, msg) -> None:
        rgb = self._decode(msg)
        features = preprocess_camera(rgb, self.preprocess_cfg)
        health = self.tracker.update(rgb)
        grey = grey_from_network_input(features, self.preprocess_cfg)
        level, message = assess_camera(health)
        out = conversions.numpy_to_image(
            np.ascontiguousarray(features.transpose(1, 2, 0)), '32FC3', header=msg.header)
        self.features_pub.publish(out)
        extra = {}
        if self.mount_monitor is not None:
            # A frozen, dark or glaring frame would only feed the check noise.
            mount = (self.mount_monitor.update(conversions.stamp_to_ns(msg.header.stamp), grey)
                     if level < ERROR else self.mount_monitor.state())
            level, message = assess_camera_mount(mount, level, message)
            extra.update({'mount.log_ratio': mount.log_ratio, 'mount.cusum': mount.cusum,
                          'mount.steps': mount.steps})
        extra['signature'] = self._signature(rgb, level)
        self.publish_health(msg.header, health, level, message, extra)


def camera_model_from_params(p) -> CameraModel:
    """The pinhole model and base_link pose that camera_node's parameters describe."""
    matrix = [float(v) for v in p['camera_matrix']]
    translation = tuple(float(v) for v in p['extrinsic_translation'])
    rpy = tuple(float(v) for v in p['extrinsic_rpy'])
    if len(matrix) != 4 or len(translation) != 3 or len(rpy) != 3:
        raise ValueError('camera_matrix needs fx, fy, cx, cy; extrinsic_translation and '
                         'extrinsic_rpy need 3 values each')
    if min(matrix[:2]) <= 0.0 or min(int(p['image_width']), int(p['image_height'])) <= 0:
        raise ValueError('camera_matrix focal lengths and the image size must be positive')
    return CameraModel(width=int(p['image_width']), height=int(p['image_height']),
                       fx=matrix[0], fy=matrix[1], cx=matrix[2], cy=matrix[3],
                       translation=translation, rpy=rpy)


def main(args: list[str] | None = None) -> None:
    """Entry point: ros2 run fusion_nodes camera_node."""
    sys.exit(run_node(CameraNode, args))


if __name__ == '__main__':
    main()
