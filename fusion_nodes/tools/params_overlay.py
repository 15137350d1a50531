"""A parameter overlay: the few values one robot (or one recorded bag) changes in fusion.yaml.

ROS 2 applies several --params-file in order, later ones winning; fusion-bringup, the demo and
fusion-eval --bag take one merged file or dict instead, so an overlay is checked here first:
a node or parameter the base file does not have is a typo, and an error, not a silent no-op.
"""

from pathlib import Path
from typing import Any, Mapping

import yaml

ROS_PARAMETERS = 'ros__parameters'


def _sections(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f'cannot read parameter file {path}: {error}') from error
    if not isinstance(data, dict):
        raise ValueError(f'{path} is not a ROS 2 parameter file (no node sections)')
    out = {}
    for node, section in data.items():
        if not isinstance(section, dict) or not isinstance(section.get(ROS_PARAMETERS), dict):
            raise ValueError(f'{path}: node {node!r} has no {ROS_PARAMETERS} mapping')
        out[str(node)] = dict(section[ROS_PARAMETERS])
    return out


def merged_parameters(base: Path, overlay: Path) -> dict[str, dict[str, Any]]:
    """{node: {param: value}} of base with overlay's values on top."""
    merged = _sections(base)
    for node, values in _sections(overlay).items():
        if node not in merged:
            raise ValueError(f'{overlay}: node {node!r} is not in {base} '
                             f'(nodes: {sorted(merged)})')
        unknown = sorted(set(values) - set(merged[node]))
        if unknown:
            raise ValueError(f'{overlay}: {node} has no parameters {unknown} in {base}')
        merged[node].update(values)
    return merged


def write_parameters(parameters: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """parameters as a ROS 2 parameter file at path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {node: {ROS_PARAMETERS: dict(values)} for node, values in parameters.items()}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path
