"""Parameter overlays: a robot's few values over config/fusion.yaml, checked before use."""

from pathlib import Path

import pytest
import yaml

from fusion_nodes.tools.node_set import default_params_file
from fusion_nodes.tools.params_overlay import merged_parameters, write_parameters

DEMO_OVERLAY = Path(__file__).resolve().parents[1] / 'config' / 'demo_bag.yaml'


def _write(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def test_overlay_replaces_only_its_own_values(tmp_path):
    base = yaml.safe_load(default_params_file().read_text())
    merged = merged_parameters(default_params_file(), DEMO_OVERLAY)
    assert merged['lidar_node']['expected_points'] == 5000
    assert base['lidar_node']['ros__parameters']['expected_points'] == 24000
    for node, section in base.items():
        for name, value in section['ros__parameters'].items():
            if (node, name) != ('lidar_node', 'expected_points'):
                assert merged[node][name] == value
    # Written back, it is a parameter file ROS 2 and the overlay reader both accept.
    path = write_parameters(merged, tmp_path / 'params.yaml')
    assert merged_parameters(path, DEMO_OVERLAY) == merged


@pytest.mark.parametrize('document, message', [
    ({'lidar_nod': {'ros__parameters': {'expected_points': 1}}}, "node 'lidar_nod'"),
    ({'lidar_node': {'ros__parameters': {'expected_point': 1}}}, "['expected_point']"),
    ({'lidar_node': {'expected_points': 1}}, 'no ros__parameters'),
    (['not', 'a', 'mapping'], 'not a ROS 2 parameter file'),
])
def test_a_typo_in_an_overlay_is_an_error_not_a_no_op(tmp_path, document, message):
    overlay = _write(tmp_path / 'overlay.yaml', document)
    with pytest.raises(ValueError, match=message.replace('[', r'\[').replace(']', r'\]')):
        merged_parameters(default_params_file(), overlay)


def test_unreadable_overlay_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match='cannot read'):
        merged_parameters(default_params_file(), tmp_path / 'missing.yaml')
    broken = tmp_path / 'broken.yaml'
    broken.write_text('lidar_node: [unclosed')
    with pytest.raises(ValueError, match='cannot read'):
        merged_parameters(default_params_file(), broken)
