"""TensorRT backend logic against a fake tensorrt module and host-memory CUDA (no GPU here)."""

import importlib
import logging
import sys
import types

import numpy as np
import pytest

import fusion_nodes.inference
from fusion_nodes.inference.metadata import load_metadata
from fusion_nodes.inference.registry import make_backend
from tests.models.fake_tensorrt import FakeCuda, make_fake_tensorrt
from tests.models.make_models import fixed_feed, write_tiny_model

MODULE = 'fusion_nodes.inference.tensorrt_backend'


@pytest.fixture(scope='module')
def tiny_path(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp('tiny'))


@pytest.fixture
def fake(monkeypatch):
    """(fake trt, fake cuda, the tensorrt_backend module imported against the fake)."""
    cuda = FakeCuda()
    trt = make_fake_tensorrt(cuda)
    monkeypatch.setitem(sys.modules, 'tensorrt', trt)
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    module = importlib.import_module(MODULE)
    yield trt, cuda, module
    sys.modules.pop(MODULE, None)
    if hasattr(fusion_nodes.inference, 'tensorrt_backend'):
        delattr(fusion_nodes.inference, 'tensorrt_backend')


def _events(trt, kind):
    return [details for event, details in trt.log if event == kind]


def test_activate_binds_every_tensor_warms_up_and_matches_onnxruntime(fake, tiny_path, tmp_path):
    trt, cuda, _ = fake
    meta = load_metadata(tiny_path)
    backend = make_backend('tensorrt', meta, cuda=cuda, cache_dir=tmp_path)
    backend.activate()
    assert [b.flags for b in trt.builds] == [{'fp16'}]
    assert trt.builds[0].pool == {'workspace': 1024 << 20}
    assert _events(trt, 'set_input_shape') == [
        (s['name'], tuple(s['shape'])) for s in meta.inputs]
    bound = dict(_events(trt, 'set_tensor_address'))
    assert set(bound) == {s['name'] for s in meta.inputs + meta.outputs}
    assert len(set(bound.values())) == len(bound)  # one buffer per tensor
    for spec in meta.inputs + meta.outputs:
        nbytes = int(np.prod(spec['shape'])) * 4
        assert cuda.memory[bound[spec['name']]].nbytes == nbytes
    # Exactly one warm-up run, on zeros, before the first real frame.
    warmups = _events(trt, 'execute')
    assert len(warmups) == 1 and all(not v.any() for v in warmups[0].values())

    feed = fixed_feed(2)
    got = backend.infer(feed)
    with make_backend('onnxruntime', meta) as reference:
        expected = reference.infer(feed)
        for name in meta.output_shapes():
            np.testing.assert_allclose(got[name], expected[name], atol=1e-6)
    sent = _events(trt, 'execute')[-1]
    for name in sent:
        np.testing.assert_array_equal(sent[name], feed[name])

    backend.deactivate()
    assert cuda.memory == {} and cuda.host == [] and cuda.streams == set()
    assert backend.engine is None and backend.context is None
    backend.deactivate()  # idempotent
    with pytest.raises(ValueError, match='before activate'):
        backend.infer(feed)


def test_release_is_explicit_not_a_finaliser(fake):
    _, _, module = fake
    assert '__del__' not in vars(module.TensorRtBackend)


def test_second_start_reuses_the_cached_engine(fake, tiny_path, tmp_path):
    trt, cuda, _ = fake
    for _ in range(2):
        with make_backend('tensorrt', tiny_path, cuda=cuda, cache_dir=tmp_path) as backend:
            backend.infer(fixed_feed())
    assert len(trt.builds) == 1
    assert backend.cache_result.built is False
    assert cuda.memory == {}


def test_a_tensorrt_upgrade_rebuilds_and_logs_why(fake, tiny_path, tmp_path, caplog):
    trt, cuda, _ = fake
    with make_backend('tensorrt', tiny_path, cuda=cuda, cache_dir=tmp_path):
        pass
    trt.__version__ = '10.4.0'
    with caplog.at_level(logging.WARNING), \
            make_backend('tensorrt', tiny_path, cuda=cuda, cache_dir=tmp_path) as backend:
        assert backend.cache_result.built
    assert len(trt.builds) == 2
    assert "tensorrt_version: '10.3.0' -> '10.4.0'" in caplog.text


def test_allow_build_false_refuses_to_build(fake, tiny_path, tmp_path):
    _, cuda, _ = fake
    backend = make_backend('tensorrt', tiny_path, cuda=cuda, cache_dir=tmp_path,
                           allow_build=False)
    with pytest.raises(RuntimeError, match='no usable engine.*fusion-build-engine'):
        backend.activate()
    assert cuda.memory == {} and cuda.streams == set()


def test_an_engine_that_is_not_the_metadata_is_refused_and_freed(fake, tiny_path, tmp_path):
    trt, cuda, _ = fake
    trt.corrupt_shape = ('gps', [1, 9])
    backend = make_backend('tensorrt', tiny_path, cuda=cuda, cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r'engine tensor gps is input \[1, 9\]'):
        backend.activate()
    assert not backend.is_active and cuda.memory == {} and cuda.streams == set()


def test_fp32_and_dla_options_reach_the_builder(fake, tiny_path, tmp_path):
    trt, cuda, _ = fake
    with make_backend('tensorrt', tiny_path, cuda=cuda, cache_dir=tmp_path, precision='fp32',
                      workspace_mb=64, dla_core=1) as backend:
        assert backend.cache_result.engine_path.name == 'tiny_fusion.fp32.dla1.engine'
    config = trt.builds[0]
    assert config.flags == {'gpu_fallback'}
    assert config.pool == {'workspace': 64 << 20}
    assert config.default_device_type == 'dla' and config.DLA_core == 1


def test_describe_names_precision_dla_and_the_engine(fake, tiny_path, tmp_path):
    _, cuda, _ = fake
    backend = make_backend('tensorrt', tiny_path, cuda=cuda, cache_dir=tmp_path,
                           precision='fp32', dla_core=1)
    assert backend.describe() == 'tensorrt (fp32, DLA 1)'
    with backend:
        assert backend.describe() == 'tensorrt (fp32, DLA 1, tiny_fusion.fp32.dla1.engine)'


def test_a_tensorrt_without_weak_fp16_says_to_build_fp32(fake, tiny_path, tmp_path):
    trt, cuda, _ = fake
    trt.__version__ = '11.4.0'
    trt.BuilderFlag = types.SimpleNamespace(GPU_FALLBACK='gpu_fallback')  # as in TensorRT 11
    backend = make_backend('tensorrt', tiny_path, cuda=cuda, cache_dir=tmp_path)
    with pytest.raises(RuntimeError, match='TensorRT 11.4.0 has no weakly typed fp16.*'
                                           'tensorrt_precision fp32'):
        backend.activate()
    assert not backend.is_active and cuda.memory == {}
    with make_backend('tensorrt', tiny_path, cuda=cuda, cache_dir=tmp_path,
                      precision='fp32') as fp32:
        assert fp32.cache_result.built


def test_int8_calibration_feeds_every_batch_to_the_device(fake, tiny_path, tmp_path):
    trt, cuda, _ = fake
    batches = [fixed_feed(seed) for seed in (10, 11, 12)]
    meta = load_metadata(tiny_path)
    table = tmp_path / 'calib.table'
    with make_backend('tensorrt', meta, cuda=cuda, cache_dir=tmp_path, precision='int8',
                      calibration_feed=lambda: iter(batches), calibration_cache=table,
                      calibration_id='calib-set-1'):
        pass
    assert trt.builds[0].flags == {'fp16', 'int8'}
    seen = _events(trt, 'calibration_batch')
    assert len(seen) == len(batches)
    for arrays, batch in zip(seen, batches):
        for array, spec in zip(arrays, meta.inputs):
            np.testing.assert_array_equal(array, batch[spec['name']])
    assert table.read_bytes() == b'fake calibration table'
    assert cuda.memory == {} and cuda.streams == set()


def test_int8_needs_an_identified_calibration(fake, tiny_path, tmp_path):
    _, cuda, _ = fake
    with pytest.raises(ValueError, match='int8 needs calibration_id'):
        make_backend('tensorrt', tiny_path, cuda=cuda, cache_dir=tmp_path, precision='int8')
