"""Registry, the Backend contract, ONNX Runtime and torch, and ORT-vs-torch parity."""

import hashlib
import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

from fusion_nodes.inference import registry
from fusion_nodes.inference.metadata import load_metadata
from fusion_nodes.inference.onnxruntime_backend import (
    OnnxRuntimeBackend, PREFERRED_PROVIDERS, select_providers)
from fusion_nodes.inference.registry import make_backend
from fusion_nodes.inference.torch_backend import TorchBackend
from tests.models.make_models import (
    fixed_feed, identity_onnx, metadata_dict, tiny_factory, TinyFusion, write_tiny_model)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp('tiny'))


def _identity_bundle(directory, onnx_specs, meta_in, meta_out):
    """An Identity graph over onnx_specs, described by metadata with meta_in/meta_out."""
    onnx_bytes = identity_onnx(onnx_specs, [s['name'] + '_out' for s in onnx_specs])
    (directory / 'id.onnx').write_bytes(onnx_bytes)
    meta = metadata_dict('id.onnx', hashlib.sha256(onnx_bytes).hexdigest(), name='identity')
    meta['inputs'], meta['outputs'] = meta_in, meta_out
    (directory / 'id.json').write_text(json.dumps(meta))
    return directory / 'id.json'


X = {'name': 'x', 'shape': [1, 4], 'dtype': 'float32'}
Y = {'name': 'x_out', 'shape': [1, 4], 'dtype': 'float32'}


def test_unknown_backend_lists_the_known_ones(tiny):
    with pytest.raises(ValueError, match=r"unknown backend 'tensorflow'; known backends: "
                                         r"\['auto', 'onnxruntime', 'tensorrt', 'torch'\]"):
        make_backend('tensorflow', tiny)


def test_missing_runtime_is_a_runtime_error_with_an_install_hint(tiny, monkeypatch):
    # None in sys.modules makes `import onnxruntime` raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    monkeypatch.delitem(sys.modules, 'fusion_nodes.inference.onnxruntime_backend')
    with pytest.raises(RuntimeError, match="backend 'onnxruntime' cannot be used.*"
                                           'pip install onnxruntime') as info:
        make_backend('onnxruntime', tiny)
    assert isinstance(info.value.__cause__, ImportError)


@pytest.mark.skipif(importlib.util.find_spec('tensorrt') is not None,
                    reason='tensorrt is installed here')
def test_tensorrt_without_tensorrt_says_how_to_install(tiny):
    with pytest.raises(RuntimeError, match="'tensorrt' cannot be used.*install TensorRT 10"):
        make_backend('tensorrt', tiny)


@pytest.mark.parametrize('gpu, usable, expected', [
    (True, {'tensorrt', 'onnxruntime', 'torch'}, 'tensorrt'),
    (True, {'onnxruntime', 'torch'}, 'onnxruntime'),
    (True, {'torch'}, 'torch'),
    (True, set(), 'onnxruntime'),
    (False, {'tensorrt', 'onnxruntime', 'torch'}, 'onnxruntime')])
def test_auto_picks_the_fastest_runtime_the_machine_has(monkeypatch, gpu, usable, expected):
    monkeypatch.setattr(registry, '_gpu_present', lambda: gpu)
    monkeypatch.setattr(registry, '_GPU_PREFERENCE', tuple(
        (name, lambda name=name: name in usable) for name, _ in registry._GPU_PREFERENCE))
    assert registry.resolve_auto() == expected


def test_auto_checks_for_each_gpu_runtime(monkeypatch):
    order = [name for name, _ in registry._GPU_PREFERENCE]
    assert order == ['tensorrt', 'onnxruntime', 'torch']
    real_find_spec = importlib.util.find_spec
    for found in (True, False):
        monkeypatch.setattr(registry.importlib.util, 'find_spec', lambda name: (
            object() if found else None) if name == 'tensorrt' else real_find_spec(name))
        assert registry._tensorrt_importable() is found
    monkeypatch.undo()
    asked = []

    def distribution(name):
        asked.append(name)
        if name not in installed:
            raise registry.importlib.metadata.PackageNotFoundError(name)
        return object()
    monkeypatch.setattr(registry.importlib.metadata, 'distribution', distribution)
    for installed, expected in ((['onnxruntime'], False), (['onnxruntime-gpu'], True)):
        assert registry._onnxruntime_gpu_installed() is expected
    assert asked == ['onnxruntime-gpu'] * 2
    monkeypatch.undo()
    assert registry._torch_cuda_usable() is torch.cuda.is_available()

    def not_installed(name):
        raise RuntimeError(f'backend {name!r} cannot be used')
    monkeypatch.setattr(registry, 'backend_class', not_installed)
    assert registry._torch_cuda_usable() is False


def test_make_backend_builds_the_named_class_unactivated(tiny):
    backend = make_backend('auto' if registry.resolve_auto() == 'onnxruntime'
                           else 'onnxruntime', tiny)
    assert isinstance(backend, OnnxRuntimeBackend) and not backend.is_active
    assert backend.output_names == ('bev_logits', 'ego_velocity', 'ego_log_variance', 'gates')
    torch_backend = make_backend('torch', tiny.parent, model_factory=tiny_factory)
    assert isinstance(torch_backend, TorchBackend)


def test_provider_selection():
    available = ['AzureExecutionProvider', 'CPUExecutionProvider', 'CUDAExecutionProvider',
                 'TensorrtExecutionProvider']
    assert select_providers(None, available) == list(PREFERRED_PROVIDERS)
    assert select_providers(None, ['CPUExecutionProvider']) == ['CPUExecutionProvider']
    assert select_providers(['CPUExecutionProvider'], available) == ['CPUExecutionProvider']
    with pytest.raises(ValueError, match=r"\['CUDAExecutionProvider'\] are not available; "
                                         r"available providers: \['CPUExecutionProvider'\]"):
        select_providers(['CUDAExecutionProvider', 'CPUExecutionProvider'],
                         ['CPUExecutionProvider'])


def test_missing_provider_through_make_backend(tiny):
    with pytest.raises(ValueError, match='NoSuchExecutionProvider.*are not available'):
        make_backend('onnxruntime', tiny, providers=['NoSuchExecutionProvider'])


def test_feed_checks_name_every_problem(tiny):
    with make_backend('onnxruntime', tiny) as backend:
        feed = fixed_feed()
        feed['camera'] = feed['camera'][:, :, :48]
        feed['gps'] = feed['gps'].astype(np.float64)
        del feed['health']
        feed['radar'] = np.zeros(3, np.float32)
        with pytest.raises(ValueError) as info:
            backend.infer(feed)
        message = str(info.value)
        assert "missing inputs ['health']" in message
        assert "unexpected inputs ['radar']" in message
        assert 'camera has shape [1, 3, 48, 128], expected [1, 3, 96, 128]' in message
        assert 'gps has dtype float64, expected float32' in message
        with pytest.raises(ValueError, match='not a numpy array'):
            backend.infer({**fixed_feed(), 'gps': [[0.0] * 8]})
    with pytest.raises(ValueError, match=r'infer\(\) called before activate'):
        backend.infer(fixed_feed())


@pytest.mark.parametrize('io_binding', [True, False])
def test_ort_identity_returns_each_new_input(tmp_path, io_binding):
    path = _identity_bundle(tmp_path, [X], [X], [Y])
    with make_backend('onnxruntime', path, use_io_binding=io_binding) as backend:
        assert backend.active_providers == ['CPUExecutionProvider']
        for value in (1.5, -2.0):
            x = np.full((1, 4), value, np.float32)
            x[0, 0] = value * 3
            out = backend.infer({'x': x})
            np.testing.assert_array_equal(out['x_out'], x)
        assert backend.last_latency_s > 0.0


@pytest.mark.parametrize('onnx_spec, message', [
    ({**X, 'name': 'z'}, r"input names \['z'\] differ from \['x'\]"),
    ({**X, 'shape': [1, 5]}, r'input x has shape \[1, 5\], metadata says \[1, 4\]'),
])
def test_ort_refuses_a_graph_that_is_not_the_metadata(tmp_path, onnx_spec, message):
    out_spec = {**onnx_spec, 'name': onnx_spec['name'] + '_out'}
    path = _identity_bundle(tmp_path, [onnx_spec], [X], [out_spec])
    backend = make_backend('onnxruntime', path)
    with pytest.raises(ValueError, match=message):
        backend.activate()
    assert not backend.is_active and backend.session is None


@pytest.mark.parametrize('seed', [0, 1])
def test_ort_matches_torch_within_1e4(tiny, seed):
    feed = fixed_feed(seed)
    with make_backend('onnxruntime', tiny) as ort_backend, \
            make_backend('torch', tiny, model_factory=tiny_factory) as torch_backend:
        # Copy: ORT may reuse its output buffers on the next call.
        expected = {k: v.copy() for k, v in torch_backend.infer(feed).items()}
        got = ort_backend.infer(feed)
    assert list(got) == list(expected)
    for name in expected:
        assert got[name].shape == expected[name].shape
        diff = float(np.max(np.abs(got[name] - expected[name])))
        assert diff <= 1e-4, f'{name}: max abs diff {diff}'
    # The missing sensor (available = 0) has a gate of exactly 0 in both.
    assert got['gates'][0, 1] == 0.0 and expected['gates'][0, 1] == 0.0


def test_torch_loads_the_saved_weights_not_a_fresh_init(tiny):
    feed = fixed_feed(3)
    with make_backend('onnxruntime', tiny) as ort_backend:
        reference = ort_backend.infer(feed)['bev_logits'].copy()
    with make_backend('torch', tiny, model_factory=tiny_factory) as loaded:
        assert np.max(np.abs(loaded.infer(feed)['bev_logits'] - reference)) <= 1e-4
    fresh = TinyFusion().eval()
    import torch
    with torch.inference_mode():
        untrained = fresh(*(torch.from_numpy(feed[n]) for n in loaded.input_metadata))[0]
    assert np.max(np.abs(untrained.numpy() - reference)) > 1e-2


def test_torch_restores_its_thread_count_which_is_process_wide(tiny):
    import torch
    before = torch.get_num_threads()
    try:
        with make_backend('torch', tiny, model_factory=tiny_factory, threads=1) as one, \
                make_backend('torch', tiny, model_factory=tiny_factory, threads=2) as two:
            assert torch.get_num_threads() == 2  # the last one activated set it
            one.infer(fixed_feed(0))
            assert torch.get_num_threads() == 1
            two.infer(fixed_feed(0))
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_torch_refuses_weights_for_another_module(tiny):
    import torch

    def other(_metadata):
        return torch.nn.Linear(3, 3)
    backend = make_backend('torch', tiny, model_factory=other)
    with pytest.raises(ValueError, match='does not fit the module the factory built'):
        backend.activate()
    assert not backend.is_active


def test_torch_needs_weights(tmp_path):
    path = _identity_bundle(tmp_path, [X], [X], [Y])
    with pytest.raises(ValueError, match='has no torch_weights_file'):
        make_backend('torch', path)


def test_torch_default_factory_runs_the_real_network_like_ort(tmp_path):
    """The shipped architecture through both runtimes (weights from the model's exporter)."""
    import torch
    from fusion_nodes.model.export import write_model
    from fusion_nodes.model.network import build_model
    torch.manual_seed(0)
    path = write_model(build_model().eval(), tmp_path, 'gated_fusion', '0.0-test',
                       {'data_sha256': '0' * 64, 'seeds': [0], 'epochs': 0})
    meta = load_metadata(path)
    feed = fixed_feed(5)
    with make_backend('torch', meta) as torch_backend, \
            make_backend('onnxruntime', meta) as ort_backend:
        expected = {k: v.copy() for k, v in torch_backend.infer(feed).items()}
        got = ort_backend.infer(feed)
    for name in expected:
        assert float(np.max(np.abs(got[name] - expected[name]))) <= 1e-4, name


def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def test_torch_puts_the_process_wide_tf32_switches_back(tiny):
    import torch
    from fusion_nodes.inference import torch_backend
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        with torch_backend._cuda_float32_math(False):
            assert not torch.backends.cudnn.allow_tf32
            assert not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.skipif(not _cuda_available(), reason='needs a CUDA GPU (run on a lent device)')
@pytest.mark.parametrize('use_cuda_graph', [True, False])
def test_torch_cuda_matches_cpu_on_each_new_input(tiny, use_cuda_graph):
    """Each call's own inputs, in float32: a graph replaying stale buffers would fail."""
    feeds = [fixed_feed(seed) for seed in (0, 1, 2, 1, 0)]
    with make_backend('torch', tiny, model_factory=tiny_factory, device='cpu') as cpu:
        expected = [{k: v.copy() for k, v in cpu.infer(feed).items()} for feed in feeds]
    with make_backend('torch', tiny, model_factory=tiny_factory, device='cuda',
                      use_cuda_graph=use_cuda_graph) as cuda:
        assert (cuda._graph is not None) == use_cuda_graph
        for feed, want in zip(feeds, expected):
            got = cuda.infer(feed)
            for name in want:
                diff = float(np.max(np.abs(got[name] - want[name])))
                assert diff <= 1e-4, f'{name}: max abs diff {diff}'


@pytest.mark.skipif(not _cuda_available(), reason='needs a CUDA GPU (run on a lent device)')
@pytest.mark.parametrize('use_cuda_graph', [True, False])
def test_torch_cuda_memory_does_not_grow_over_lifecycle_cycles(tiny, use_cuda_graph):
    """The first cycle may leave cuBLAS's per-stream workspace; later cycles leave nothing."""
    import torch

    def cycle() -> tuple[int, int]:
        backend = make_backend('torch', tiny, model_factory=tiny_factory, device='cuda',
                               use_cuda_graph=use_cuda_graph)
        with backend:
            backend.infer(fixed_feed(0))
            active = torch.cuda.memory_allocated()
        return active, torch.cuda.memory_allocated()
    cycle()
    settled = torch.cuda.memory_allocated()
    for _ in range(3):
        active, after = cycle()
        assert active > settled
        assert after == settled


def test_ort_io_binding_takes_non_contiguous_inputs(tmp_path):
    path = _identity_bundle(tmp_path, [X], [X], [Y])
    wide = np.arange(8, dtype=np.float32).reshape(1, 8)
    with make_backend('onnxruntime', path) as backend:
        out = backend.infer({'x': wide[:, ::2]})
    np.testing.assert_array_equal(out['x_out'], [[0.0, 2.0, 4.0, 6.0]])


def test_each_backend_describes_what_actually_runs(tiny):
    with make_backend('onnxruntime', tiny, providers=['CPUExecutionProvider']) as ort_backend:
        assert ort_backend.describe() == 'onnxruntime (CPUExecutionProvider)'
    cpu = make_backend('torch', tiny, model_factory=tiny_factory, device='cpu', threads=1)
    assert cpu.describe() == 'torch (cpu, 1 thread)'
    eager = make_backend('torch', tiny, model_factory=tiny_factory, device='cpu', threads=2)
    assert eager.describe() == 'torch (cpu, 2 threads)'


@pytest.mark.skipif(not _cuda_available(), reason='needs a CUDA GPU (run on a lent device)')
def test_torch_on_cuda_describes_its_device_and_mode(tiny):
    graph = make_backend('torch', tiny, model_factory=tiny_factory, device='cuda:0')
    assert graph.describe() == 'torch (cuda:0, CUDA graph)'
    eager = make_backend('torch', tiny, model_factory=tiny_factory, device='cuda',
                         use_cuda_graph=False, allow_tf32=True)
    assert eager.describe() == 'torch (cuda, eager, TF32)'
