"""ONNX export with static shapes, a TensorRT-parser op check, and the metadata beside it."""

import argparse
from dataclasses import asdict, replace
import hashlib
import io
import json
import math
from pathlib import Path
import sys
from typing import Any
import warnings

import numpy as np
import torch

from fusion_nodes.core.camera import CAMERA_HEALTH_FEATURES
from fusion_nodes.core.config import (
    BevGrid, CameraPreprocessConfig, SEMANTIC_CLASSES, SENSORS)
from fusion_nodes.core.gps import GPS_HEALTH_FEATURES
from fusion_nodes.core.lidar import LIDAR_HEALTH_FEATURES
from fusion_nodes.model.network import build_model, GatedFusionNet, INPUT_NAMES, OUTPUT_NAMES

METADATA_FORMAT = 'fusion_nodes.model/1'
OPSET = 17
# ONNX ops the TensorRT 10 ONNX parser imports natively (onnx-tensorrt docs/operators.md);
# GridSample needs opset 16+ and TensorRT 8.6+. The exported graph must stay inside this set.
TENSORRT_OPS = frozenset({
    'Add', 'AveragePool', 'BatchNormalization', 'Cast', 'Clip', 'Concat', 'Constant', 'Conv',
    'Div', 'Flatten', 'Gather', 'Gemm', 'GlobalAveragePool', 'GridSample', 'Identity', 'Log',
    'MatMul', 'MaxPool', 'Mul', 'Pad', 'ReduceMax', 'ReduceMean', 'Relu', 'Reshape', 'Resize',
    'Sigmoid', 'Slice', 'Softmax', 'Sqrt', 'Squeeze', 'Sub', 'Tanh', 'Transpose', 'Unsqueeze',
})
HEALTH_FEATURE_NAMES = {
    'camera': list(CAMERA_HEALTH_FEATURES),
    'lidar': list(LIDAR_HEALTH_FEATURES),
    'gps': list(GPS_HEALTH_FEATURES),
}


def io_specs(model: GatedFusionNet) -> tuple[list[dict], list[dict]]:
    """[{name, shape, dtype}] of the deployed batch-1 inputs and outputs."""
    rows, cols = model.grid.shape
    cfg = CameraPreprocessConfig()
    inputs = [
        {'name': 'camera', 'shape': [1, 3, cfg.height, cfg.width], 'dtype': 'float32'},
        {'name': 'lidar', 'shape': [1, 4, rows, cols], 'dtype': 'float32'},
        {'name': 'gps', 'shape': [1, 8], 'dtype': 'float32'},
        {'name': 'health', 'shape': [1, len(SENSORS), 4], 'dtype': 'float32'},
        {'name': 'available', 'shape': [1, len(SENSORS)], 'dtype': 'float32'},
    ]
    outputs = [
        {'name': 'bev_logits', 'shape': [1, model.num_classes, rows, cols], 'dtype': 'float32'},
        {'name': 'ego_velocity', 'shape': [1, 3], 'dtype': 'float32'},
        {'name': 'ego_log_variance', 'shape': [1, 3], 'dtype': 'float32'},
        {'name': 'gates', 'shape': [1, len(SENSORS)], 'dtype': 'float32'},
        {'name': 'yaw_disagreement', 'shape': [1, 1], 'dtype': 'float32'},
    ]
    return inputs, outputs


def example_inputs(model: GatedFusionNet, seed: int = 0) -> dict[str, np.ndarray]:
    """Reproducible random inputs of the deployed shapes (availability all 1)."""
    rng = np.random.default_rng(seed)
    inputs, _ = io_specs(model)
    feed = {spec['name']: rng.standard_normal(spec['shape']).astype(np.float32)
            for spec in inputs}
    feed['health'] = rng.random(feed['health'].shape).astype(np.float32)
    feed['available'] = np.ones_like(feed['available'])
    return feed


def export_onnx(model: GatedFusionNet, path: Path, opset: int = OPSET) -> str:
    """Write the eval-mode model as static-shape ONNX; returns the file's sha256."""
    model = model.eval()
    feed = example_inputs(model)
    args = tuple(torch.from_numpy(feed[name]) for name in INPUT_NAMES)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, which cannot yet
        # target opset 17 without a lossy version conversion; its warning is expected.
        warnings.simplefilter('ignore')
        torch.onnx.export(model, args, buffer, input_names=list(INPUT_NAMES),
                          output_names=list(OUTPUT_NAMES), opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    data = buffer.getvalue()
    check_onnx_graph(data)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def onnx_op_types(onnx_bytes: bytes) -> set[str]:
    """Op types used by the graph's nodes."""
    import onnx
    return {node.op_type for node in onnx.load_from_string(onnx_bytes).graph.node}


def check_onnx_graph(onnx_bytes: bytes) -> None:
    """Raise ValueError unless every I/O shape is static and every op is TensorRT-parseable."""
    import onnx
    graph = onnx.load_from_string(onnx_bytes).graph
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if not dims or any(not d.HasField('dim_value') for d in dims):
            raise ValueError(f'{value.name} has a dynamic or unknown shape')
    unsupported = onnx_op_types(onnx_bytes) - TENSORRT_OPS
    if unsupported:
        raise ValueError(f'ops outside the TensorRT-checked set: {sorted(unsupported)}')


def json_finite(value: Any) -> Any:
    """JSON has no NaN: a metric with no frames to average over becomes null."""
    if isinstance(value, dict):
        return {k: json_finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_metadata(model: GatedFusionNet, name: str, version: str, onnx_file: str,
                   onnx_sha256: str, weights_file: str, weights_sha256: str,
                   training: dict[str, Any], opset: int = OPSET) -> dict[str, Any]:
    """The 'fusion_nodes.model/1' metadata dict that travels beside the model."""
    inputs, outputs = io_specs(model)
    preprocess = CameraPreprocessConfig()
    grid: BevGrid = model.grid
    return {
        'format': METADATA_FORMAT,
        'name': name,
        'version': version,
        'onnx_file': onnx_file,
        'onnx_sha256': onnx_sha256,
        'torch_weights_file': weights_file,
        'torch_weights_sha256': weights_sha256,
        'opset': opset,
        'inputs': inputs,
        'outputs': outputs,
        'sensor_order': list(SENSORS),
        'class_names': list(SEMANTIC_CLASSES),
        'grid': asdict(grid),
        'normalisation': {'camera': {'mean': list(preprocess.mean), 'std': list(preprocess.std)}},
        'camera_model': {k: list(v) if isinstance(v, tuple) else v
                         for k, v in asdict(model.camera_model).items()},
        'health_features': HEALTH_FEATURE_NAMES,
        'architecture': model.cfg.to_dict(),
        'training': training,
    }


def write_model(model: GatedFusionNet, directory: Path, name: str, version: str,
                training: dict[str, Any]) -> Path:
    """ONNX, torch weights and metadata JSON as <directory>/<name>.{onnx,pt,json}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    onnx_path = directory / f'{name}.onnx'
    weights_path = directory / f'{name}.pt'
    onnx_sha = export_onnx(model, onnx_path)
    torch.save(model.state_dict(), weights_path)
    metadata = build_metadata(model, name, version, onnx_path.name, onnx_sha,
                              weights_path.name, file_sha256(weights_path), training)
    json_path = directory / f'{name}.json'
    _write_metadata_json(json_path, metadata)
    return json_path


def load_trained_model(json_path: Path) -> tuple[GatedFusionNet, Any]:
    """The eval-mode network of a saved model, its weights loaded, and its ModelMetadata."""
    from fusion_nodes.inference.metadata import load_metadata
    metadata = load_metadata(json_path)
    if metadata.torch_weights_path is None:
        raise ValueError(f'{json_path} names no torch weights to load')
    model = build_model(metadata)
    model.load_state_dict(torch.load(metadata.torch_weights_path, map_location='cpu',
                                     weights_only=True), strict=True)
    return model.eval(), metadata


def reexport_model(json_path: Path, version: str,
                   novelty_veto: tuple[float, ...] | None = None,
                   lidar_yaw_veto: tuple[float, ...] | None = None,
                   camera_disagreement_veto: tuple[float, ...] | None = None,
                   yaw_disagreement: tuple[float, ...] | None = None) -> Path:
    """Export a saved model's weights to its ONNX file again and rewrite its metadata.

    For a change in how the network is written or exported that keeps the weights: the
    weights file and the training record stay as they are; the ONNX file, its sha256 and the
    version are new. The vetoes and the yaw disagreement thresholds, when given, replace the
    architecture's (inference-only settings, see NetworkConfig).
    """
    model, metadata = load_trained_model(json_path)
    given = {'novelty_veto': novelty_veto, 'lidar_yaw_veto': lidar_yaw_veto,
             'camera_disagreement_veto': camera_disagreement_veto,
             'yaw_disagreement': yaw_disagreement}
    model.cfg = replace(model.cfg, **{name: tuple(value) for name, value in given.items()
                                      if value is not None})
    onnx_sha = export_onnx(model, metadata.onnx_path)
    rewritten = build_metadata(model, metadata.name, version, metadata.onnx_file, onnx_sha,
                               metadata.torch_weights_file, metadata.torch_weights_sha256,
                               metadata.training, metadata.opset)
    _write_metadata_json(Path(json_path), rewritten)
    return Path(json_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m fusion_nodes.model.export',
        description='Export a saved model to ONNX again from its torch weights (same weights, '
                    'new graph) and rewrite its metadata with the given version.')
    parser.add_argument('model', type=Path, help="the model's metadata JSON")
    parser.add_argument('--version', required=True, help='version to record, e.g. 1.3.1')
    args = parser.parse_args(argv)
    try:
        json_path = reexport_model(args.model, args.version)
    except (OSError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    print(f'wrote {json_path} (version {args.version})')
    return 0


def _write_metadata_json(path: Path, metadata: dict[str, Any]) -> None:
    try:
        from fusion_nodes.inference.metadata import write_metadata
    except ImportError:
        write_metadata = None
    if write_metadata is not None:
        write_metadata(path, metadata)
        return
    path.write_text(json.dumps(metadata, indent=2, sort_keys=False) + '\n')


if __name__ == '__main__':
    sys.exit(main())
