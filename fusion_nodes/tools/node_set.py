"""The fusion node set, described once for launch/fusion.launch.py and fusion-bringup.

Both start the same executables, with the same node names, the same parameter file and the
same remappings; tests/test_launch_bringup.py holds them to that.
"""

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class NodeSpec:
    """One node: its executable (console script), module (for python -m), class and wiring."""

    name: str
    executable: str
    module: str
    class_name: str
    remappings: tuple[tuple[str, str], ...] = ()
    parameters: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class StackOptions:
    """What a user picks when starting the stack (launch arguments / bringup flags)."""

    backend: str = 'onnxruntime'
    model: str = ''
    camera_topic: str = '/camera/image_raw'
    camera_transport: str = 'raw'
    lidar_topic: str = '/lidar/points'
    gps_topic: str = '/gps/fix'
    use_sim_time: bool = False
    enable_overlay: bool = True

    def __post_init__(self) -> None:
        if self.camera_transport not in ('raw', 'compressed'):
            raise ValueError(f'camera_transport must be raw or compressed, '
                             f'got {self.camera_transport!r}')


def node_specs(options: StackOptions) -> list[NodeSpec]:
    """The four nodes with remappings and the parameters the options override."""
    camera_input = ('camera/image_raw/compressed' if options.camera_transport == 'compressed'
                    else 'camera/image_raw')
    camera_source = (options.camera_topic + '/compressed'
                     if options.camera_transport == 'compressed' else options.camera_topic)
    sim_time = {'use_sim_time': options.use_sim_time}
    return [
        NodeSpec('camera_node', 'camera_node', 'fusion_nodes.nodes.camera_node', 'CameraNode',
                 ((camera_input, camera_source),),
                 {**sim_time, 'input_transport': options.camera_transport}),
        NodeSpec('lidar_node', 'lidar_node', 'fusion_nodes.nodes.lidar_node', 'LidarNode',
                 (('lidar/points', options.lidar_topic),), dict(sim_time)),
        NodeSpec('gps_node', 'gps_node', 'fusion_nodes.nodes.gps_node', 'GpsNode',
                 (('gps/fix', options.gps_topic),), dict(sim_time)),
        NodeSpec('fusion_node', 'fusion_node', 'fusion_nodes.nodes.fusion_node', 'FusionNode',
                 ((camera_input, camera_source),),
                 {**sim_time, 'backend': options.backend, 'model': options.model,
                  'enable_overlay': options.enable_overlay,
                  'overlay_input': camera_input,
                  'overlay_transport': options.camera_transport}),
    ]


# The composed mode: every node of node_specs in one process and one executor.
STACK_SPEC = NodeSpec('fusion_stack', 'fusion_stack', 'fusion_nodes.tools.stack', '')


def stack_arguments(options: StackOptions, params_file: Path) -> list[str]:
    """fusion_stack's command-line flags for the same options and parameter file."""
    flags = ['--params-file', str(params_file), '--backend', options.backend,
             '--model', options.model, '--camera-topic', options.camera_topic,
             '--camera-transport', options.camera_transport,
             '--lidar-topic', options.lidar_topic, '--gps-topic', options.gps_topic]
    if options.use_sim_time:
        flags.append('--use-sim-time')
    if not options.enable_overlay:
        flags.append('--no-overlay')
    return flags


def ros_arguments(spec: NodeSpec, params_file: Path) -> list[str]:
    """The --ros-args a process needs to run spec exactly as the launch file would."""
    args = ['--ros-args', '-r', f'__node:={spec.name}', '--params-file', str(params_file)]
    for source, target in spec.remappings:
        args += ['-r', f'{source}:={target}']
    for name, value in spec.parameters.items():
        args += ['-p', f'{name}:={_param_literal(value)}']
    return args


def _param_literal(value: object) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        return f"'{value}'" if value == '' else value
    return str(value)


def default_params_file() -> Path:
    """config/fusion.yaml from the source tree, else from the installed share dir."""
    source = Path(__file__).resolve().parents[2] / 'config' / 'fusion.yaml'
    if source.is_file():
        return source
    from ament_index_python.packages import get_package_share_directory
    return Path(get_package_share_directory('fusion_nodes')) / 'config' / 'fusion.yaml'
