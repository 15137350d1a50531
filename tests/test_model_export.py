"""ONNX export: static shapes, TensorRT-parseable ops, ORT parity and the metadata beside it."""

import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fusion_nodes.inference.metadata import load_metadata
from fusion_nodes.model.export import (
    check_onnx_graph, example_inputs, export_onnx, main, onnx_op_types, TENSORRT_OPS, write_model)
from fusion_nodes.model.network import build_model, INPUT_NAMES, OUTPUT_NAMES


# Gate-normalised fusion (model 1.1.0), learned absent codes (tried, not shipped), gates that
# see the single-sensor heads' agreement (1.2.0), that plus feature novelty (1.3), a novelty
# veto (1.4) and the camera-lidar yaw vetoes (1.5).
ARCHITECTURES = {'normalised': {},
                 'absent_code': {'absent_code': True, 'mask_in_head': True, 'gate_floor': 0.1},
                 'consistency': {'gate_consistency': True, 'mask_in_head': True,
                                 'gate_floor': 0.1},
                 'novelty': {'gate_consistency': True, 'gate_novelty': True,
                             'mask_in_head': True, 'gate_floor': 0.1},
                 'novelty_veto': {'gate_consistency': True, 'gate_novelty': True,
                                  'mask_in_head': True, 'gate_floor': 0.1,
                                  'novelty_veto': (1.5, 1.5)},
                 'yaw_vetoes': {'gate_consistency': True, 'gate_novelty': True,
                                'mask_in_head': True, 'gate_floor': 0.1,
                                'novelty_veto': (1.5, 1.5), 'lidar_yaw_veto': (0.05, 0.3),
                                'camera_disagreement_veto': (0.45, 1.5)}}


@pytest.fixture(scope='module', params=sorted(ARCHITECTURES))
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    model = build_model({'architecture': ARCHITECTURES[request.param]}).eval()
    if model.cfg.absent_code:
        with torch.no_grad():  # zeros at init; a trained model's are not
            for code in (model.camera_absent_scale, model.camera_absent_bias,
                         model.lidar_absent_bias):
                code.normal_()
    if model.cfg.gate_novelty:  # identity statistics at init; a trained model's are not
        for novelty in (model.camera_novelty, model.lidar_novelty):
            features = torch.randn(64, novelty.dim) * 0.5 + 0.2
            novelty.track(features, torch.ones(64))
    directory = tmp_path_factory.mktemp('model')
    json_path = write_model(model, directory, 'gated_fusion', '0.0-test',
                            {'data_sha256': 'none', 'seeds': [], 'epochs': 0})
    return model, json_path


def test_exported_graph_is_static_and_uses_only_checked_ops(exported):
    _, json_path = exported
    data = (json_path.parent / 'gated_fusion.onnx').read_bytes()
    ops = onnx_op_types(data)
    print('exported ONNX op set:', sorted(ops))
    assert ops <= TENSORRT_OPS
    assert 'GridSample' in ops and 'Conv' in ops
    graph = onnx.load_from_string(data).graph
    assert [v.name for v in graph.input] == list(INPUT_NAMES)
    assert [v.name for v in graph.output] == list(OUTPUT_NAMES)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(graph.input) + list(graph.output)}
    assert shapes['camera'] == [1, 3, 96, 128] and shapes['lidar'] == [1, 4, 64, 64]
    assert shapes['bev_logits'] == [1, 6, 64, 64] and shapes['gates'] == [1, 3]
    check_onnx_graph(data)


def test_check_rejects_dynamic_shapes_and_foreign_ops():
    x = onnx.helper.make_tensor_value_info('x', onnx.TensorProto.FLOAT, ['batch', 3])
    y = onnx.helper.make_tensor_value_info('y', onnx.TensorProto.FLOAT, ['batch', 3])
    dynamic = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node('Relu', ['x'], ['y'])], 'g', [x], [y]))
    with pytest.raises(ValueError, match='dynamic'):
        check_onnx_graph(dynamic.SerializeToString())
    xs = onnx.helper.make_tensor_value_info('x', onnx.TensorProto.FLOAT, [1, 3])
    ys = onnx.helper.make_tensor_value_info('y', onnx.TensorProto.FLOAT, [1, 3])
    foreign = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node('Hardmax', ['x'], ['y'])], 'g', [xs], [ys]))
    with pytest.raises(ValueError, match='Hardmax'):
        check_onnx_graph(foreign.SerializeToString())


@pytest.mark.parametrize('available', [(1.0, 1.0, 1.0), (1.0, 0.0, 1.0), (0.0, 1.0, 0.0)])
def test_onnxruntime_matches_torch(exported, available):
    model, json_path = exported
    session = ort.InferenceSession(str(json_path.parent / 'gated_fusion.onnx'),
                                   providers=['CPUExecutionProvider'])
    feed = example_inputs(model, seed=7)
    feed['available'] = np.array([available], dtype=np.float32)
    ort_out = session.run(list(OUTPUT_NAMES), feed)
    with torch.no_grad():
        torch_out = model(*(torch.from_numpy(feed[name]) for name in INPUT_NAMES))
    for name, a, b in zip(OUTPUT_NAMES, ort_out, torch_out):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-4, rtol=0, err_msg=name)


def test_gate_floor_exports_and_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = build_model().eval()
    feed = example_inputs(model, seed=7)
    with torch.no_grad():
        gates = model(*(torch.from_numpy(feed[name]) for name in INPUT_NAMES))[3][0]
    ordered = gates.sort().values
    # The floor drops the lowest gate and keeps the others.
    floor = float(ordered[0] + ordered[1]) / 2.0
    floored = build_model({'architecture': {'gate_floor': floor}}).eval()
    floored.load_state_dict(model.state_dict())
    json_path = write_model(floored, tmp_path, 'floored', '0.0-test',
                            {'data_sha256': 'none', 'seeds': [], 'epochs': 0})
    data = (tmp_path / 'floored.onnx').read_bytes()
    check_onnx_graph(data)
    session = ort.InferenceSession(data, providers=['CPUExecutionProvider'])
    ort_out = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), feed)))
    assert ort_out['gates'][0, int(gates.argmin())] == 0.0
    with torch.no_grad():
        torch_out = floored(*(torch.from_numpy(feed[name]) for name in INPUT_NAMES))
    for name, b in zip(OUTPUT_NAMES, torch_out):
        np.testing.assert_allclose(ort_out[name], b.numpy(), atol=1e-4, rtol=0, err_msg=name)
    assert json.loads(json_path.read_text())['architecture']['gate_floor'] == floor


def test_metadata_describes_the_files_and_rebuilds_the_model(exported):
    model, json_path = exported
    metadata = json.loads(json_path.read_text())
    assert metadata['format'] == 'fusion_nodes.model/1'

    onnx_bytes = (json_path.parent / metadata['onnx_file']).read_bytes()
    assert metadata['onnx_sha256'] == hashlib.sha256(onnx_bytes).hexdigest()
    weights = json_path.parent / metadata['torch_weights_file']
    assert metadata['torch_weights_sha256'] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert metadata['sensor_order'] == ['camera', 'lidar', 'gps']
    assert [s['name'] for s in metadata['inputs']] == list(INPUT_NAMES)
    # The torch backend's path: validated ModelMetadata in, the same network out.
    rebuilt = build_model(load_metadata(json_path))
    rebuilt.load_state_dict(torch.load(weights, weights_only=True))
    rebuilt.eval()
    feed = {k: torch.from_numpy(v) for k, v in example_inputs(model, seed=3).items()}
    with torch.no_grad():
        for a, b in zip(model(**feed), rebuilt(**feed)):
            torch.testing.assert_close(a, b)


def test_reexport_writes_a_new_graph_from_the_saved_weights(tmp_path):
    torch.manual_seed(1)
    model = build_model({'camera_model': {'translation': [1.2, 0.0, 1.5]},
                         'architecture': ARCHITECTURES['consistency']}).eval()
    training = {'data_sha256': 'abc', 'seeds': [1, 2], 'epochs': 3}
    json_path = write_model(model, tmp_path, 'net', '1.0.0', training)
    before = json.loads(json_path.read_text())
    weights = (tmp_path / 'net.pt').read_bytes()
    # An intact older graph that computes something else: another model's export.
    torch.manual_seed(2)
    stale = build_model({'camera_model': {'translation': [1.2, 0.0, 1.5]},
                         'architecture': ARCHITECTURES['consistency']})
    stale_sha = export_onnx(stale, tmp_path / 'net.onnx')
    json_path.write_text(json.dumps(dict(before, onnx_sha256=stale_sha)))
    assert main([str(json_path), '--version', '1.0.1']) == 0
    after = json.loads(json_path.read_text())
    assert (tmp_path / 'net.pt').read_bytes() == weights
    assert after['version'] == '1.0.1' and after['training'] == training
    assert before['camera_model']['translation'] == [1.2, 0.0, 1.5]  # the model's own
    assert after['camera_model'] == before['camera_model']
    assert {k: v for k, v in after.items() if k not in ('version', 'onnx_sha256')} == {
        k: v for k, v in before.items() if k not in ('version', 'onnx_sha256')}
    metadata = load_metadata(json_path)  # checks both files' sha256
    session = ort.InferenceSession(str(metadata.onnx_path), providers=['CPUExecutionProvider'])
    feed = example_inputs(model, seed=5)
    with torch.no_grad():
        torch_out = model(*(torch.from_numpy(feed[name]) for name in INPUT_NAMES))
    for name, a, b in zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), feed), torch_out):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-4, rtol=0, err_msg=name)


def test_reexport_reports_a_model_it_cannot_read(tmp_path, capsys):
    assert main([str(tmp_path / 'missing.json'), '--version', '1.0.1']) == 2
    assert 'missing.json' in capsys.readouterr().err


def test_every_constant_of_the_shipped_graph_fits_float16():
    """A TensorRT fp16 build clamps (before 8: refuses) weights beyond float16's range; 1.4.0
    carried the novelty precision (1.7e5) and the gate step's gain (1e6)."""
    from pathlib import Path
    from onnx import numpy_helper
    graph = onnx.load(str(Path(__file__).resolve().parents[1] / 'models' /
                          'gated_fusion.onnx')).graph
    tensors = [(t.name, t) for t in graph.initializer] + [
        (node.name, attribute.t) for node in graph.node if node.op_type == 'Constant'
        for attribute in node.attribute if attribute.type == onnx.AttributeProto.TENSOR]
    assert len(tensors) > 20
    too_large = {name: float(np.abs(array).max()) for name, array in
                 ((name, numpy_helper.to_array(tensor)) for name, tensor in tensors)
                 if array.dtype.kind == 'f' and array.size and np.abs(array).max() > 65504}
    assert too_large == {}
