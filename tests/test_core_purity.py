"""fusion_nodes/core must stay ROS-free: no rclpy and no *_msgs imports."""

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / 'fusion_nodes' / 'core'
FORBIDDEN_ROOTS = ('rclpy', 'rosidl_runtime_py', 'builtin_interfaces', 'ament_index_python')


def _imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _is_ros(module: str) -> bool:
    root = module.split('.')[0]
    return root in FORBIDDEN_ROOTS or root.endswith('_msgs')


def test_core_has_no_ros_imports():
    files = sorted(CORE.rglob('*.py'))
    assert len(files) >= 5, 'core package not found where expected'
    offenders = [f'{path.relative_to(CORE)}: {module}'
                 for path in files for module in _imported_modules(path) if _is_ros(module)]
    assert offenders == []


def test_detector_catches_ros_imports(tmp_path):
    sample = tmp_path / 'bad.py'
    sample.write_text('import rclpy\nfrom sensor_msgs.msg import Image\nimport numpy\n')
    assert [m for m in _imported_modules(sample) if _is_ros(m)] == ['rclpy', 'sensor_msgs.msg']
