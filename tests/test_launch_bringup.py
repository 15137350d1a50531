"""launch/fusion.launch.py and fusion-bringup start the same nodes, executables and params.

There is no `launch` or `launch_ros` on PyPI, so the launch file is loaded against minimal
stand-ins that record what it asks for; the check is on what it builds, not how it runs.
"""

import ast
import importlib.util
from pathlib import Path
import re
import sys
import types

import pytest

from fusion_nodes.tools.bringup import node_commands
from fusion_nodes.tools.node_set import default_params_file, node_specs, StackOptions

ROOT = Path(__file__).resolve().parents[1]


class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


def _fake_launch_modules(monkeypatch):
    launch = types.ModuleType('launch')
    launch.LaunchDescription = lambda entities: list(entities)
    actions = types.ModuleType('launch.actions')
    actions.DeclareLaunchArgument = type('DeclareLaunchArgument', (_Recorded,), {})
    actions.OpaqueFunction = type('OpaqueFunction', (_Recorded,), {})
    substitutions = types.ModuleType('launch.substitutions')
    substitutions.LaunchConfiguration = _LaunchConfiguration
    launch_ros = types.ModuleType('launch_ros')
    ros_actions = types.ModuleType('launch_ros.actions')
    ros_actions.Node = type('Node', (_Recorded,), {})
    for name, module in (('launch', launch), ('launch.actions', actions),
                         ('launch.substitutions', substitutions), ('launch_ros', launch_ros),
                         ('launch_ros.actions', ros_actions)):
        monkeypatch.setitem(sys.modules, name, module)


def _launch_nodes(monkeypatch, **overrides):
    _fake_launch_modules(monkeypatch)
    spec = importlib.util.spec_from_file_location('fusion_launch', ROOT / 'launch' /
                                                  'fusion.launch.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entities = module.generate_launch_description()
    declared = {e.args[0]: e.kwargs['default_value'] for e in entities
                if type(e).__name__ == 'DeclareLaunchArgument'}
    declared.update(overrides)
    opaque = [e for e in entities if type(e).__name__ == 'OpaqueFunction']
    assert len(opaque) == 1
    return declared, opaque[0].kwargs['function'](declared)


def _entry_points() -> dict[str, str]:
    """console_scripts of setup.py: executable -> 'module:function'."""
    tree = ast.parse((ROOT / 'setup.py').read_text())
    entries = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
               and isinstance(n.value, str) and re.fullmatch(r'[\w-]+ = [\w.]+:\w+', n.value)]
    return dict(entry.split(' = ') for entry in entries)


def _parse_ros_args(command: list[str]) -> tuple[str, dict, list, str]:
    args = command[command.index('--ros-args') + 1:]
    name, params, remaps, params_file = None, {}, [], None
    for flag, value in zip(args[::2], args[1::2]):
        if flag == '-r' and value.startswith('__node:='):
            name = value.split(':=')[1]
        elif flag == '-r':
            remaps.append(tuple(value.split(':=')))
        elif flag == '-p':
            key, literal = value.split(':=', 1)
            params[key] = literal
        elif flag == '--params-file':
            params_file = value
    return name, params, remaps, params_file


def _literal(value) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return "''" if value == '' else str(value)


@pytest.mark.parametrize('overrides, options', [
    ({}, StackOptions()),
    ({'backend': 'tensorrt', 'camera_transport': 'compressed', 'use_sim_time': 'true',
      'camera_topic': '/cam/front', 'enable_overlay': 'false'},
     StackOptions(backend='tensorrt', camera_transport='compressed', use_sim_time=True,
                  camera_topic='/cam/front', enable_overlay=False)),
])
def test_launch_file_and_bringup_describe_the_same_nodes(monkeypatch, overrides, options):
    _, launched = _launch_nodes(monkeypatch, **overrides)
    commands = node_commands(options)
    assert [n.kwargs['name'] for n in launched] == [s.name for s, _ in commands]
    entry_points = _entry_points()
    for node, (spec, command) in zip(launched, commands):
        kwargs = node.kwargs
        assert kwargs['package'] == 'fusion_nodes'
        assert kwargs['executable'] == spec.executable
        assert entry_points[spec.executable] == f'{spec.module}:main'
        assert command[1:3] == ['-m', spec.module]
        name, params, remaps, params_file = _parse_ros_args(command)
        assert name == kwargs['name']
        assert kwargs['parameters'][0] == params_file == str(default_params_file())
        assert {k: _literal(v) for k, v in kwargs['parameters'][1].items()} == params
        assert [tuple(r) for r in kwargs['remappings']] == remaps
    assert {s.name for s in node_specs(options)} == {
        'camera_node', 'lidar_node', 'gps_node', 'fusion_node'}


def test_composed_mode_runs_one_process_with_the_same_options(monkeypatch):
    _, launched = _launch_nodes(monkeypatch, composed='true', backend='torch')
    assert len(launched) == 1 and launched[0].kwargs['executable'] == 'fusion_stack'
    assert _entry_points()['fusion_stack'] == 'fusion_nodes.tools.stack:main'
    arguments = launched[0].kwargs['arguments']
    assert arguments[arguments.index('--backend') + 1] == 'torch'
    # fusion-bringup --composed starts the very same command line.
    [(spec, command)] = node_commands(StackOptions(backend='torch'), composed=True)
    assert spec.name == 'fusion_stack' and command[1:3] == ['-m', 'fusion_nodes.tools.stack']
    assert command[3:] == arguments


def test_every_yaml_section_is_a_node_in_the_set():
    import yaml
    sections = set(yaml.safe_load(default_params_file().read_text()))
    assert sections == {s.name for s in node_specs(StackOptions())}
