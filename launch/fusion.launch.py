"""Launch the fusion node set on a real ROS 2 install (Humble, Jazzy, Kilted).

    ros2 launch fusion_nodes fusion.launch.py backend:=tensorrt use_sim_time:=true

Arguments: backend, model, camera_topic, camera_transport, lidar_topic, gps_topic,
use_sim_time, enable_overlay, params_file, composed (true: one process running every node in
one executor, as fusion_stack; false: a process per node). The node list itself comes from
fusion_nodes.tools.node_set, which fusion-bringup uses too.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from fusion_nodes.tools.node_set import (
    default_params_file, node_specs, stack_arguments, StackOptions)

_ARGUMENTS = {
    'backend': ('onnxruntime', 'onnxruntime | tensorrt | torch | auto'),
    'model': ('', "model metadata JSON ('' = shipped models/gated_fusion.json)"),
    'camera_topic': ('/camera/image_raw', 'camera image topic (without /compressed)'),
    'camera_transport': ('raw', 'raw or compressed'),
    'lidar_topic': ('/lidar/points', 'PointCloud2 topic'),
    'gps_topic': ('/gps/fix', 'NavSatFix topic'),
    'use_sim_time': ('false', 'follow /clock (bag replay)'),
    'enable_overlay': ('true', 'publish fusion/overlay'),
    'params_file': ('', "parameter YAML ('' = share/fusion_nodes/config/fusion.yaml)"),
    'composed': ('false', 'run every node in one process (fusion_stack)'),
}


def _truthy(text: str) -> bool:
    return text.strip().lower() in ('1', 'true', 'yes', 'on')


def _nodes(context):
    value = {name: LaunchConfiguration(name).perform(context) for name in _ARGUMENTS}
    options = StackOptions(
        backend=value['backend'], model=value['model'], camera_topic=value['camera_topic'],
        camera_transport=value['camera_transport'], lidar_topic=value['lidar_topic'],
        gps_topic=value['gps_topic'], use_sim_time=_truthy(value['use_sim_time']),
        enable_overlay=_truthy(value['enable_overlay']))
    params_file = value['params_file'] or str(default_params_file())
    specs = node_specs(options)
    if _truthy(value['composed']):
        return [Node(package='fusion_nodes', executable='fusion_stack', name='fusion_stack',
                     output='screen', arguments=stack_arguments(options, params_file))]
    return [Node(package='fusion_nodes', executable=spec.executable, name=spec.name,
                 output='screen', parameters=[params_file, spec.parameters],
                 remappings=list(spec.remappings)) for spec in specs]


def generate_launch_description() -> LaunchDescription:
    arguments = [DeclareLaunchArgument(name, default_value=default, description=text)
                 for name, (default, text) in _ARGUMENTS.items()]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
