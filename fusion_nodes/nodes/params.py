"""Every node parameter, declared in one place with its default.

Defaults here match config/fusion.yaml; the YAML is what deployments edit. Each node reads
its table with declare_all() and turns the values into the core's frozen dataclasses, whose
__post_init__ checks reject bad values at startup with a clear error.
"""

from typing import Mapping

from rclpy.node import Node

COMMON_PARAMS = {
    'diagnostics_period_s': 1.0,
    'warn_throttle_s': 5.0,
}

CAMERA_PARAMS = {
    **COMMON_PARAMS,
    'input_transport': 'raw',
    'network_width': 128,
    'network_height': 96,
    'normalisation_mean': [0.45, 0.45, 0.45],
    'normalisation_std': [0.25, 0.25, 0.25],
    'sharpness_ref': 400.0,
    'frozen_diff': 0.25,
    'frozen_frames': 3,
    'mount_check': True,
    # Calibration for the clock-offset signature (road speed seen through the camera).
    'image_width': 640,
    'image_height': 480,
    'camera_matrix': [320.0, 320.0, 320.0, 240.0],
    'extrinsic_translation': [1.5, 0.0, 1.6],
    'extrinsic_rpy': [0.0, 0.08, 0.0],
}

LIDAR_PARAMS = {
    **COMMON_PARAMS,
    'extrinsic_translation': [0.0, 0.0, 1.8],
    'extrinsic_rpy': [0.0, 0.0, 0.0],
    'grid_x_min': 0.0,
    'grid_x_max': 32.0,
    'grid_y_min': -16.0,
    'grid_y_max': 16.0,
    'grid_resolution': 0.5,
    'z_min': -0.5,
    'z_max': 3.0,
    'obstacle_min_z': 0.25,
    'density_norm': 16.0,
    'expected_points': 24000,
    'near_range': 3.0,
    'mount_check': True,
}

GPS_PARAMS = {
    **COMMON_PARAMS,
    'origin_from_first_fix': True,
    'origin_latitude': 0.0,
    'origin_longitude': 0.0,
    'origin_altitude': 0.0,
    'default_sigma_m': 5.0,
    'jump_gate_chi2': 13.8,
    'jump_hold_s': 2.0,
    'stale_after_s': 2.0,
    'velocity_lag_s': 0.8,
    'velocity_floor_sigma': 0.3,
    'odom_frame': 'map',
}


FUSION_PARAMS = {
    **COMMON_PARAMS,
    'backend': 'onnxruntime',
    'model': '',
    'providers': [''],
    'cpu_threads': 1,
    'tensorrt_precision': 'fp16',
    'engine_cache_dir': '',
    'reference_sensor': 'camera',
    'max_wait_ms': 0.0,
    'lidar_time_offset_ms': 0.0,
    'gps_time_offset_ms': 0.0,
    'offset_min_correction_ms': 0.0,
    'camera_stale_ms': 100.0,
    'sensor_stale_ms': 500.0,
    'lidar_motion_compensation': True,
    'drop_sensor_on_error': True,
    'yaw_blame': True,
    'lidar_odometry': True,
    'drop_gps_on_multipath': True,
    'yaw_blame_steady_deg': 3.0,
    'yaw_blame_turned_deg': 10.0,
    'poll_period_ms': 10.0,
    'enable_overlay': True,
    'overlay_every_n': 3,
    'overlay_input': 'camera/image_raw',
    'overlay_transport': 'raw',
    'object_min_cells': 2,
    'object_min_confidence': 0.5,
    'processing_warn_ms': 25.0,
    'processing_error_ms': 33.0,
    'processing_error_consecutive': 5,
    'base_frame': 'base_link',
    'odom_frame': 'odom',
}


SENSOR_NODE_PARAMS = {'camera_node': CAMERA_PARAMS, 'lidar_node': LIDAR_PARAMS,
                      'gps_node': GPS_PARAMS}


def sensor_params_in_force(node_name: str,
                           overrides: Mapping[str, Mapping[str, object]] | None = None
                           ) -> dict[str, object]:
    """A sensor node's parameters as a robot's file sets them: its defaults, with
    overrides[node_name] ({'lidar_node': {...}, ...}, as merged_parameters gives) over them."""
    return {**SENSOR_NODE_PARAMS[node_name], **(overrides or {}).get(node_name, {})}


def declare_all(node: Node, table: dict[str, object]) -> dict[str, object]:
    """Declare every parameter of a table and return the values in force."""
    return {name: node.declare_parameter(name, default).value
            for name, default in table.items()}
