"""Model metadata: round trip, and a clear ValueError for every way it can be wrong."""

import copy
from dataclasses import asdict
import hashlib
import json

import pytest

from fusion_nodes.core.config import BevGrid, CameraModel, SEMANTIC_CLASSES
from fusion_nodes.inference.metadata import load_metadata, write_metadata
from tests.models.make_models import contract_specs, identity_onnx, metadata_dict


def _bundle(directory, mutate=None, weights=True):
    """An ONNX file (+ weights bytes) and its metadata JSON; mutate edits the dict first."""
    inputs, _ = contract_specs()
    onnx_bytes = identity_onnx(inputs[:1])
    (directory / 'm.onnx').write_bytes(onnx_bytes)
    weights_args = ()
    if weights:
        (directory / 'm.pt').write_bytes(b'not really weights')
        weights_args = ('m.pt', hashlib.sha256(b'not really weights').hexdigest())
    meta = metadata_dict('m.onnx', hashlib.sha256(onnx_bytes).hexdigest(), *weights_args)
    if mutate is not None:
        mutate(meta)
    path = directory / 'm.json'
    path.write_text(json.dumps(meta))
    return path, meta


def test_round_trip_keeps_every_field_and_matches_the_contract(tmp_path):
    path, raw = _bundle(tmp_path)
    meta = load_metadata(path)
    inputs, outputs = contract_specs()
    assert meta.input_shapes() == {s['name']: tuple(s['shape']) for s in inputs}
    assert meta.output_shapes() == {s['name']: tuple(s['shape']) for s in outputs}
    assert meta.class_names == SEMANTIC_CLASSES
    assert BevGrid(**meta.grid) == BevGrid()
    assert CameraModel(**meta.camera_model) == CameraModel()
    assert meta.onnx_path == tmp_path / 'm.onnx'
    assert meta.torch_weights_path == tmp_path / 'm.pt'
    out = tmp_path / 'copy' / 'm.json'
    (tmp_path / 'copy').mkdir()
    for name in ('m.onnx', 'm.pt'):
        (tmp_path / 'copy' / name).write_bytes((tmp_path / name).read_bytes())
    write_metadata(meta, out)
    again = load_metadata(out)
    assert again == meta
    assert json.loads(out.read_text()) == json.loads(json.dumps(raw))


def test_directory_resolves_to_the_single_json(tmp_path):
    path, _ = _bundle(tmp_path)
    assert load_metadata(tmp_path).onnx_sha256 == load_metadata(path).onnx_sha256
    (tmp_path / 'other.json').write_text('{}')
    with pytest.raises(ValueError, match='name the metadata JSON'):
        load_metadata(tmp_path)


def test_exporter_argument_order_is_accepted(tmp_path):
    _, raw = _bundle(tmp_path)
    written = write_metadata(tmp_path / 'swapped.json', raw)
    assert load_metadata(written).onnx_file == 'm.onnx'


def test_weights_are_optional(tmp_path):
    path, _ = _bundle(tmp_path, weights=False)
    assert load_metadata(path).torch_weights_path is None


def _set(key, value):
    def mutate(meta):
        meta[key] = value
    return mutate


def _spec(group, index, key, value):
    def mutate(meta):
        meta[group][index][key] = value
    return mutate


def _drop(*keys):
    def mutate(meta):
        for key in keys:
            del meta[key]
    return mutate


@pytest.mark.parametrize('mutate, message', [
    (_set('format', 'fusion_nodes.model/2'), r"unknown format 'fusion_nodes.model/2'"),
    (_drop('grid', 'opset'), r"missing keys \['opset', 'grid'\]"),
    (_set('colour', 'red'), r"unknown keys \['colour'\]"),
    (_set('onnx_sha256', 'abc'), 'onnx_sha256 must be 64 lowercase hex digits'),
    (_spec('inputs', 0, 'shape', ['batch', 3, 96, 128]), 'camera: dynamic or invalid shape'),
    (_spec('inputs', 1, 'shape', [-1, 4, 64, 64]), 'lidar: dynamic or invalid shape'),
    (_spec('outputs', 3, 'dtype', 'float64'), "gates: dtype 'float64' is not one of"),
    (_spec('outputs', 0, 'shape', [1, 5, 64, 64]), r'bev_logits has shape \[1, 5, 64, 64\]'),
    (_set('class_names', list(reversed(SEMANTIC_CLASSES))), 'class_names .* differ'),
    (_set('sensor_order', ['lidar', 'camera', 'gps']), 'sensor_order .* differs'),
    (_set('grid', {**asdict(BevGrid()), 'resolution': 0.25}), 'grid.resolution is 0.25'),
    (_set('onnx_file', '../elsewhere.onnx'), 'onnx_file must be a file name beside'),
    (_set('opset', 3), 'opset must be an integer >= 7'),
    (_set('training', {'seeds': [1]}), r"training is missing \['data_sha256', 'epochs'\]"),
    (_set('camera_model', {'fx': 320.0, 'lens': 'fisheye'}), 'only CameraModel fields'),
])
def test_invalid_metadata_is_a_clear_value_error(tmp_path, mutate, message):
    path, _ = _bundle(tmp_path, mutate)
    with pytest.raises(ValueError, match=message):
        load_metadata(path)


def test_a_changed_onnx_file_fails_its_sha256(tmp_path):
    path, meta = _bundle(tmp_path)
    data = bytearray((tmp_path / 'm.onnx').read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / 'm.onnx').write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(ValueError, match=f'has sha256 {actual}, but the metadata says '
                                         f'{meta["onnx_sha256"]}'):
        load_metadata(path)
    assert load_metadata(path, check_files=False).onnx_sha256 == meta['onnx_sha256']


def test_changed_weights_fail_their_sha256(tmp_path):
    path, _ = _bundle(tmp_path)
    (tmp_path / 'm.pt').write_bytes(b'other weights')
    with pytest.raises(ValueError, match='m.pt has sha256'):
        load_metadata(path)


@pytest.mark.parametrize('name', ['m.onnx', 'm.pt'])
def test_a_missing_file_is_named(tmp_path, name):
    path, _ = _bundle(tmp_path)
    (tmp_path / name).unlink()
    with pytest.raises(ValueError, match=f'{name} does not exist'):
        load_metadata(path)


def test_unreadable_json_and_missing_metadata(tmp_path):
    (tmp_path / 'bad.json').write_text('{"format": ')
    with pytest.raises(ValueError, match='not readable JSON'):
        load_metadata(tmp_path / 'bad.json')
    with pytest.raises(ValueError, match='does not exist'):
        load_metadata(tmp_path / 'absent.json')


def test_write_refuses_invalid_metadata(tmp_path):
    _, raw = _bundle(tmp_path)
    bad = copy.deepcopy(raw)
    bad['inputs'][0]['shape'] = [None, 3, 96, 128]
    with pytest.raises(ValueError, match='dynamic'):
        write_metadata(bad, tmp_path / 'bad.json')
    assert not (tmp_path / 'bad.json').exists()
