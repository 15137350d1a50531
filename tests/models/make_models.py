"""Tiny models with the gated-fusion I/O contract, written as ONNX + weights + metadata.

Like Polygraphy's tests/models/make_models.py, but run at test time into a temporary
directory. TinyFusion has the real input and output names and shapes with a few small layers,
so every backend can run it in milliseconds; identity_onnx uses the onnx helper API for graphs
whose I/O is chosen by the test.
"""

from dataclasses import asdict
import hashlib
import io
from pathlib import Path
from typing import Any
import warnings

import numpy as np
import onnx
from onnx import helper, TensorProto
import torch
from torch import nn

from fusion_nodes.core.config import (
    BevGrid, CameraModel, CameraPreprocessConfig, SEMANTIC_CLASSES, SENSORS)
from fusion_nodes.inference.metadata import METADATA_FORMAT, write_metadata

OPSET = 17
HEALTH_FEATURES = {
    'camera': ['brightness', 'contrast', 'sharpness', 'frozen'],
    'lidar': ['point_ratio', 'valid_ratio', 'frozen', 'near_clutter'],
    'gps': ['fix_valid', 'sigma_h', 'multipath', 'age'],
}


def contract_specs() -> tuple[list[dict], list[dict]]:
    """The deployed I/O contract, computed from core.config (independently of the exporter)."""
    rows, cols = BevGrid().shape
    cam = CameraPreprocessConfig()
    sensors = len(SENSORS)
    inputs = [
        {'name': 'camera', 'shape': [1, 3, cam.height, cam.width], 'dtype': 'float32'},
        {'name': 'lidar', 'shape': [1, 4, rows, cols], 'dtype': 'float32'},
        {'name': 'gps', 'shape': [1, 8], 'dtype': 'float32'},
        {'name': 'health', 'shape': [1, sensors, 4], 'dtype': 'float32'},
        {'name': 'available', 'shape': [1, sensors], 'dtype': 'float32'},
    ]
    outputs = [
        {'name': 'bev_logits', 'shape': [1, len(SEMANTIC_CLASSES), rows, cols],
         'dtype': 'float32'},
        {'name': 'ego_velocity', 'shape': [1, 3], 'dtype': 'float32'},
        {'name': 'ego_log_variance', 'shape': [1, 3], 'dtype': 'float32'},
        {'name': 'gates', 'shape': [1, sensors], 'dtype': 'float32'},
    ]
    return inputs, outputs


class TinyFusion(nn.Module):
    """A few layers per sensor with availability-scaled sigmoid gates."""

    def __init__(self) -> None:
        super().__init__()
        classes = len(SEMANTIC_CLASSES)
        self.camera = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.lidar = nn.Conv2d(4, classes, 3, padding=1)
        self.camera_to_bev = nn.Linear(4, classes)
        self.gps = nn.Linear(8, 6)
        self.gate = nn.Linear(5, 1)

    def forward(self, camera, lidar, gps, health, available):
        cam = torch.relu(self.camera(camera)).mean(dim=(2, 3))
        bev = self.lidar(lidar) + self.camera_to_bev(cam)[:, :, None, None]
        ego = self.gps(gps)
        gate_in = torch.cat([health, available[:, :, None]], dim=2)
        gates = torch.sigmoid(self.gate(gate_in))[:, :, 0] * available
        return bev, ego[:, :3], torch.tanh(ego[:, 3:]), gates


def tiny_factory(metadata: Any = None) -> TinyFusion:
    """Model factory for TorchBackend (ignores the metadata: the architecture is fixed)."""
    return TinyFusion()


def fixed_feed(seed: int = 0) -> dict[str, np.ndarray]:
    """Reproducible inputs of the contract shapes, one sensor marked missing."""
    rng = np.random.default_rng(seed)
    inputs, _ = contract_specs()
    feed = {s['name']: rng.standard_normal(s['shape']).astype(np.float32) for s in inputs}
    feed['health'] = rng.random(feed['health'].shape).astype(np.float32)
    feed['available'] = np.array([[1.0, 0.0, 1.0]], np.float32)
    return feed


def metadata_dict(onnx_file: str, onnx_sha256: str, weights_file: str | None = None,
                  weights_sha256: str | None = None, name: str = 'tiny_fusion') -> dict:
    inputs, outputs = contract_specs()
    cam = CameraPreprocessConfig()
    meta = {
        'format': METADATA_FORMAT, 'name': name, 'version': '0.0-test',
        'onnx_file': onnx_file, 'onnx_sha256': onnx_sha256, 'opset': OPSET,
        'inputs': inputs, 'outputs': outputs,
        'sensor_order': list(SENSORS), 'class_names': list(SEMANTIC_CLASSES),
        'grid': asdict(BevGrid()),
        'normalisation': {'camera': {'mean': list(cam.mean), 'std': list(cam.std)}},
        'camera_model': {k: list(v) if isinstance(v, tuple) else v
                         for k, v in asdict(CameraModel()).items()},
        'health_features': HEALTH_FEATURES,
        'training': {'data_sha256': '0' * 64, 'seeds': [0], 'epochs': 0, 'metrics': {}},
    }
    if weights_file is not None:
        meta['torch_weights_file'] = weights_file
        meta['torch_weights_sha256'] = weights_sha256
    return meta


def write_tiny_model(directory: Path, name: str = 'tiny_fusion', seed: int = 0) -> Path:
    """<name>.onnx, <name>.pt and <name>.json in directory; returns the JSON path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = TinyFusion().eval()
    feed = fixed_feed(seed)
    inputs, outputs = contract_specs()
    args = tuple(torch.from_numpy(feed[s['name']]) for s in inputs)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, args, buffer, input_names=[s['name'] for s in inputs],
                          output_names=[s['name'] for s in outputs], opset_version=OPSET,
                          dynamo=False)
    onnx_bytes = buffer.getvalue()
    (directory / f'{name}.onnx').write_bytes(onnx_bytes)
    weights = directory / f'{name}.pt'
    torch.save(model.state_dict(), weights)
    meta = metadata_dict(f'{name}.onnx', hashlib.sha256(onnx_bytes).hexdigest(),
                         weights.name, hashlib.sha256(weights.read_bytes()).hexdigest(), name)
    return write_metadata(meta, directory / f'{name}.json')


def identity_onnx(specs: list[dict], output_names: list[str] | None = None) -> bytes:
    """A graph with the given inputs, each passed through Identity to an output."""
    dtypes = {'float32': TensorProto.FLOAT, 'int64': TensorProto.INT64}
    output_names = output_names or [f'{s["name"]}_out' for s in specs]
    inputs = [helper.make_tensor_value_info(s['name'], dtypes[s['dtype']], s['shape'])
              for s in specs]
    outputs = [helper.make_tensor_value_info(out, dtypes[s['dtype']], s['shape'])
               for s, out in zip(specs, output_names)]
    nodes = [helper.make_node('Identity', [s['name']], [out])
             for s, out in zip(specs, output_names)]
    graph = helper.make_graph(nodes, 'identity', inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
