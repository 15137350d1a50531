"""A missing or corrupt model, or a bad setting, stops fusion_node at startup with a clear
error and a non-zero exit, never a half-running node."""

import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

from fusion_nodes.tools import dds_env

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / 'models' / 'gated_fusion.json'

pytestmark = pytest.mark.ros


def _run_fusion_node(*ros_args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, '-m', 'fusion_nodes.nodes.fusion_node', '--ros-args', *ros_args],
        env=dds_env.isolated_env(os.environ), capture_output=True, text=True, timeout=60)


def _copy_model(tmp_path: Path) -> Path:
    if not MODEL.is_file():
        pytest.fail(f'the shipped model {MODEL} is missing')
    for path in MODEL.parent.glob('gated_fusion.*'):
        shutil.copy2(path, tmp_path / path.name)
    return tmp_path / MODEL.name


def test_missing_model_exits_non_zero(tmp_path):
    result = _run_fusion_node('-p', f'model:={tmp_path / "nope.json"}')
    assert result.returncode == 2
    assert 'startup failed' in result.stderr and 'nope.json' in result.stderr


def test_corrupt_model_fails_its_checksum(tmp_path):
    metadata = _copy_model(tmp_path)
    onnx = tmp_path / 'gated_fusion.onnx'
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    result = _run_fusion_node('-p', f'model:={metadata}')
    assert result.returncode == 2
    assert 'startup failed' in result.stderr and 'sha256' in result.stderr.lower()


def test_unknown_backend_is_refused(tmp_path):
    result = _run_fusion_node('-p', 'backend:=tpu-magic')
    assert result.returncode == 2 and 'tpu-magic' in result.stderr


def test_truncated_metadata_is_refused(tmp_path):
    metadata = _copy_model(tmp_path)
    metadata.write_text(metadata.read_text()[:40])
    result = _run_fusion_node('-p', f'model:={metadata}')
    assert result.returncode == 2 and 'startup failed' in result.stderr


def test_negative_cpu_threads_is_refused():
    result = _run_fusion_node('-p', 'cpu_threads:=-2')
    assert result.returncode == 2 and 'cpu_threads' in result.stderr


def test_an_implausible_time_offset_is_refused():
    result = _run_fusion_node('-p', 'lidar_time_offset_ms:=2500.0')
    assert result.returncode == 2 and 'lidar_time_offset_ms' in result.stderr


def test_gps_node_refuses_a_non_positive_jump_hold():
    result = subprocess.run(
        [sys.executable, '-m', 'fusion_nodes.nodes.gps_node', '--ros-args',
         '-p', 'jump_hold_s:=0.0'],
        env=dds_env.isolated_env(os.environ), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert 'startup failed' in result.stderr and 'jump_hold_s' in result.stderr


def test_an_unknown_tensorrt_precision_is_refused_whatever_the_backend():
    result = _run_fusion_node('-p', 'tensorrt_precision:=int4')
    assert result.returncode == 2 and 'tensorrt_precision' in result.stderr


@pytest.mark.parametrize('runtime, expected', [
    ('tensorrt', {'precision': 'fp32'}),
    ('onnxruntime', {'providers': ['CPUExecutionProvider'], 'intra_op_threads': 2}),
    ('torch', {'threads': 2}),
])
def test_each_runtime_gets_only_the_options_that_apply_to_it(runtime, expected):
    from fusion_nodes.nodes.fusion_node import backend_options
    providers = ['CPUExecutionProvider'] if runtime == 'onnxruntime' else []
    assert backend_options(runtime, providers, 2, 'fp32', '/var/cache/engines') == (
        {**expected, 'cache_dir': '/var/cache/engines'} if runtime == 'tensorrt' else expected)
    assert 'intra_op_threads' not in backend_options('onnxruntime', [], 0, 'fp16')
    assert 'cache_dir' not in backend_options('tensorrt', [], 0, 'fp16', '')
