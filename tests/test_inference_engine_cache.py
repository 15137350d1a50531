"""Engine cache keys, rebuild reasons, the build lock and fusion-build-engine, without TensorRT."""

from dataclasses import replace
import importlib.util
import json
import logging
import threading

import pytest

from fusion_nodes.inference import build_engine
from fusion_nodes.inference.engine_cache import (
    BuildLock, BuildOptions, EngineCache, EngineKey, make_key)
from fusion_nodes.inference.metadata import load_metadata
from tests.models.make_models import write_tiny_model


class FakePlatform:
    def __init__(self, version='10.3.0', capability='8.7'):
        self.version, self.capability = version, capability

    def tensorrt_version(self):
        return self.version

    def compute_capability(self):
        return self.capability


class FakeBuilder:
    """Returns distinct engine bytes per build; can block or fail on demand."""

    def __init__(self, result=None, gate=None, error=None):
        self.calls = []
        self.result, self.gate, self.error = result, gate, error

    def build(self, onnx_path, options):
        self.calls.append((onnx_path, options))
        if self.gate is not None:
            self.gate.wait(5.0)
        if self.error is not None:
            raise self.error
        return self.result if self.result is not None else f'engine {len(self.calls)}'.encode()


@pytest.fixture(scope='module')
def meta(tmp_path_factory):
    return load_metadata(write_tiny_model(tmp_path_factory.mktemp('tiny')))


def test_first_use_builds_and_writes_the_key_beside_the_engine(meta, tmp_path):
    cache, builder, platform = EngineCache(tmp_path), FakeBuilder(), FakePlatform()
    result = cache.ensure(meta, BuildOptions(), platform, builder)
    assert result.built and result.engine_path == tmp_path / 'tiny_fusion.fp16.engine'
    assert result.engine_path.read_bytes() == b'engine 1'
    assert builder.calls == [(meta.onnx_path, BuildOptions())]
    sidecar = json.loads((tmp_path / 'tiny_fusion.fp16.engine.json').read_text())
    assert sidecar['key'] == {
        'onnx_sha256': meta.onnx_sha256, 'precision': 'fp16', 'tensorrt_version': '10.3.0',
        'compute_capability': '8.7',
        'input_profile': {s['name']: list(s['shape']) for s in meta.inputs},
        'workspace_mb': 1024, 'dla_core': None, 'calibration_id': None}
    again = cache.ensure(meta, BuildOptions(), platform, builder)
    assert not again.built and len(builder.calls) == 1
    assert cache.require(meta, BuildOptions(), platform).engine_path == result.engine_path


def _other_onnx(meta):
    return replace(meta, onnx_sha256='f' * 64)


def _other_profile(meta):
    inputs = tuple({**s, 'shape': (2, *s['shape'][1:])} if s['name'] == 'gps' else s
                   for s in meta.inputs)
    return replace(meta, inputs=inputs)


@pytest.mark.parametrize('change, field, old, new', [
    (lambda m, o, p: (m, o, FakePlatform(version='10.4.1')),
     'tensorrt_version', "'10.3.0'", "'10.4.1'"),
    (lambda m, o, p: (m, o, FakePlatform(capability='8.9')),
     'compute_capability', "'8.7'", "'8.9'"),
    (lambda m, o, p: (_other_onnx(m), o, p), 'onnx_sha256', None, "'" + 'f' * 64 + "'"),
    (lambda m, o, p: (_other_profile(m), o, p), 'input_profile', '[1, 8]', '[2, 8]'),
    (lambda m, o, p: (m, replace(o, workspace_mb=2048), p), 'workspace_mb', '1024', '2048'),
])
def test_each_key_field_change_rebuilds_and_logs_old_and_new(meta, tmp_path, caplog,
                                                             change, field, old, new):
    cache, builder, platform = EngineCache(tmp_path), FakeBuilder(), FakePlatform()
    options = BuildOptions()
    cache.ensure(meta, options, platform, builder)
    meta2, options2, platform2 = change(meta, options, platform)
    with caplog.at_level(logging.WARNING):
        result = cache.ensure(meta2, options2, platform2, builder)
    assert result.built and len(builder.calls) == 2
    assert result.engine_path.read_bytes() == b'engine 2'
    assert f'cache key changed: {field}:' in result.reason
    assert old is None or old in result.reason
    assert new in result.reason and result.reason in caplog.text
    status = cache.check(result.engine_path, make_key(meta2, options2, platform2))
    assert status.valid


def test_a_cache_directory_that_cannot_be_made_says_what_to_set(meta, tmp_path):
    blocker = tmp_path / 'not_a_directory'
    blocker.write_text('')  # even root cannot make a directory under a file
    builder = FakeBuilder()
    with pytest.raises(OSError, match='writable directory .fusion_node: engine_cache_dir'):
        EngineCache(blocker / 'engines').ensure(meta, BuildOptions(), FakePlatform(), builder)
    assert builder.calls == []


def test_precision_and_dla_variants_live_side_by_side(meta, tmp_path):
    cache, builder, platform = EngineCache(tmp_path), FakeBuilder(), FakePlatform()
    paths = {cache.ensure(meta, options, platform, builder).engine_path
             for options in (BuildOptions('fp16'), BuildOptions('fp32'),
                             BuildOptions('fp16', dla_core=0))}
    assert len(paths) == 3 and len(builder.calls) == 3
    for options in (BuildOptions('fp16'), BuildOptions('fp32')):
        assert not cache.ensure(meta, options, platform, builder).built


@pytest.mark.parametrize('damage, reason', [
    (lambda e, s: s.write_text('{"format": "fusion_nodes.engine-cache/1", "key": '),
     'unreadable sidecar'),
    (lambda e, s: s.write_text('{"format": "other/1"}'), 'unreadable sidecar'),
    (lambda e, s: s.write_text(json.dumps({**json.loads(s.read_text()), 'key': {'a': 1}})),
     'unreadable sidecar'),
    (lambda e, s: s.unlink(), 'no sidecar'),
    (lambda e, s: e.write_bytes(e.read_bytes()[:3]), 'does not match the sha256'),
    (lambda e, s: e.unlink(), 'no engine at'),
])
def test_damaged_cache_entries_rebuild(meta, tmp_path, damage, reason):
    cache, builder, platform = EngineCache(tmp_path), FakeBuilder(), FakePlatform()
    first = cache.ensure(meta, BuildOptions(), platform, builder)
    damage(first.engine_path, cache.sidecar_path(first.engine_path))
    result = cache.ensure(meta, BuildOptions(), platform, builder)
    assert result.built and reason in result.reason
    assert result.engine_path.read_bytes() == b'engine 2'


@pytest.mark.parametrize('builder, error', [
    (FakeBuilder(result=b''), RuntimeError), (FakeBuilder(error=OSError('boom')), OSError)])
def test_a_failed_build_leaves_no_valid_looking_entry(meta, tmp_path, builder, error):
    cache = EngineCache(tmp_path)
    with pytest.raises(error):
        cache.ensure(meta, BuildOptions(), FakePlatform(), builder)
    path = cache.engine_path(meta, BuildOptions())
    assert not cache.sidecar_path(path).exists()
    with pytest.raises(RuntimeError, match='no usable engine'):
        cache.require(meta, BuildOptions(), FakePlatform())


def test_concurrent_starts_build_once(meta, tmp_path):
    gate = threading.Event()
    builder = FakeBuilder(gate=gate)
    results = []

    def start():
        results.append(EngineCache(tmp_path).ensure(meta, BuildOptions(), FakePlatform(),
                                                    builder))
    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    while not builder.calls:
        threading.Event().wait(0.01)
    threading.Event().wait(0.3)  # the second caller is now waiting on the lock
    gate.set()
    for thread in threads:
        thread.join(10.0)
    assert len(builder.calls) == 1
    assert sorted(r.built for r in results) == [False, True]
    assert any('another process' in r.reason for r in results)


def test_lock_timeout_names_the_holder(tmp_path):
    path = tmp_path / 'x.lock'
    with BuildLock(path, timeout_s=1.0):
        with pytest.raises(TimeoutError, match=r'build lock .*x.lock \(held by pid \d+\)'):
            with BuildLock(path, timeout_s=0.2, poll_s=0.05):
                pass
    with BuildLock(path, timeout_s=0.2):
        pass  # released on exit


@pytest.mark.parametrize('kwargs, message', [
    ({'precision': 'fp8'}, "precision must be one of \\['fp32', 'fp16', 'int8'\\]"),
    ({'workspace_mb': 0}, 'workspace_mb must be a positive integer'),
    ({'dla_core': -1}, 'dla_core must be None or a non-negative integer'),
    ({'precision': 'int8'}, 'int8 needs calibration_id'),
])
def test_build_options_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BuildOptions(**kwargs)


def test_key_round_trips_and_rejects_malformed_input(meta):
    key = make_key(meta, BuildOptions(), FakePlatform())
    assert EngineKey.from_dict(json.loads(json.dumps(key.to_dict()))) == key
    broken = key.to_dict()
    broken['input_profile'] = {'camera': ['wide']}
    with pytest.raises(ValueError, match='input_profile is malformed'):
        EngineKey.from_dict(broken)


def test_build_engine_run_checks_then_builds(meta, tmp_path, capsys):
    cache, builder, platform = EngineCache(tmp_path), FakeBuilder(), FakePlatform()
    options = BuildOptions()
    assert build_engine.run(meta, options, cache, platform, builder, check_only=True) == 1
    assert 'cache needs a build: no engine at' in capsys.readouterr().out
    assert build_engine.run(meta, options, cache, platform, builder, check_only=False) == 0
    assert 'built ' in capsys.readouterr().out
    assert build_engine.run(meta, options, cache, platform, builder, check_only=True) == 0
    out = capsys.readouterr().out
    assert 'tensorrt_version 10.3.0' in out and 'cache valid:' in out
    assert len(builder.calls) == 1


@pytest.mark.skipif(importlib.util.find_spec('tensorrt') is not None,
                    reason='tensorrt is installed here')
def test_build_engine_without_tensorrt_reports_the_key_and_fails(meta, capsys):
    code = build_engine.main(['--model', str(meta.directory / 'tiny_fusion.json')])
    captured = capsys.readouterr()
    assert code == 3
    assert f'onnx_sha256      {meta.onnx_sha256}' in captured.out
    assert 'camera[1, 3, 96, 128]' in captured.out
    assert 'cannot build' in captured.err and 'Install TensorRT 10' in captured.err


def test_build_engine_rejects_bad_input(tmp_path, capsys):
    assert build_engine.main(['--model', str(tmp_path / 'absent.json')]) == 2
    assert 'does not exist' in capsys.readouterr().err
