"""ONNX Runtime backend: TensorRT EP, then CUDA EP, then CPU, from what is installed."""

import os
from typing import Mapping, Sequence

import numpy as np
import onnxruntime as ort

from fusion_nodes.inference.base import Backend
from fusion_nodes.inference.metadata import ModelMetadata

PREFERRED_PROVIDERS = (
    'TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider')
_ORT_TYPES = {
    'tensor(float)': 'float32', 'tensor(float16)': 'float16', 'tensor(int32)': 'int32',
    'tensor(int64)': 'int64', 'tensor(uint8)': 'uint8', 'tensor(bool)': 'bool',
}


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def select_providers(requested: Sequence[str] | None = None,
                     available: Sequence[str] | None = None) -> list[str]:
    """The providers to use, best first.

    None: every preferred provider that is available. Otherwise the requested ones, in the
    given order; one that is not available is a ValueError listing what is.
    """
    available = list(available if available is not None else available_providers())
    if requested is None or len(requested) == 0:
        chosen = [p for p in PREFERRED_PROVIDERS if p in available]
        if not chosen:
            raise ValueError(f'none of {list(PREFERRED_PROVIDERS)} is available in this '
                             f'onnxruntime build; available providers: {available}')
        return chosen
    if isinstance(requested, str):
        requested = [requested]
    missing = [p for p in requested if p not in available]
    if missing:
        raise ValueError(f'requested onnxruntime providers {missing} are not available; '
                         f'available providers: {available}')
    return list(dict.fromkeys(requested))


def cpu_threads() -> int:
    """Cores this process may run on (respects taskset and cgroup cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class OnnxRuntimeBackend(Backend):
    """Runs the model's ONNX file in an InferenceSession.

    On the CPU provider, inputs and preallocated outputs are bound with IO binding, so each
    inference writes into the same output arrays (see Backend.infer on buffer reuse).
    """

    name = 'onnxruntime'

    def __init__(self, metadata: ModelMetadata, providers: Sequence[str] | None = None,
                 intra_op_threads: int | None = None, use_io_binding: bool = True,
                 provider_options: Mapping[str, Mapping[str, str]] | None = None,
                 allow_spinning: bool = False) -> None:
        super().__init__(metadata)
        self.allow_spinning = allow_spinning
        self.providers = select_providers(providers)
        if intra_op_threads is not None and intra_op_threads < 1:
            raise ValueError(f'intra_op_threads must be >= 1, got {intra_op_threads}')
        self.intra_op_threads = intra_op_threads or cpu_threads()
        self.use_io_binding = use_io_binding
        unknown = sorted(set(provider_options or {}) - set(self.providers))
        if unknown:
            raise ValueError(f'provider_options for providers not in use: {unknown}')
        self.provider_options = {k: dict(v) for k, v in (provider_options or {}).items()}
        self.session: ort.InferenceSession | None = None
        self._binding = None
        self._outputs: dict[str, np.ndarray] = {}

    @property
    def active_providers(self) -> list[str]:
        """What the session actually runs on (ORT may drop a provider that fails to load)."""
        return list(self.session.get_providers()) if self.session is not None else []

    def describe(self) -> str:
        """onnxruntime and the providers the session runs on (those asked for, if inactive)."""
        return f"onnxruntime ({', '.join(self.active_providers or self.providers)})"

    def _activate_impl(self) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        # One graph, run sequentially: inter-op threads would only compete for the same cores.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not self.allow_spinning:
            # ORT's idle worker threads busy-wait for the next run by default; on a robot the
            # other nodes need those cycles between frames.
            options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        providers = [(p, self.provider_options.get(p, {})) for p in self.providers]
        # The bytes were hashed by load_metadata; read them once more so the session runs
        # exactly the file that was verified even if the path is replaced meanwhile.
        self.session = ort.InferenceSession(self.metadata.onnx_path.read_bytes(), options,
                                            providers=providers)
        self._check_session()
        on_cpu_only = self.active_providers == ['CPUExecutionProvider']
        if self.use_io_binding and on_cpu_only:
            self._outputs = {spec['name']: np.empty(spec['shape'], np.dtype(spec['dtype']))
                             for spec in self.metadata.outputs}
            self._binding = self.session.io_binding()
            for name, array in self._outputs.items():
                self._binding.bind_output(name, 'cpu', 0, array.dtype, array.shape,
                                          array.ctypes.data)

    def _check_session(self) -> None:
        """The ONNX graph's I/O must be exactly what the metadata promises."""
        where = f'{self.metadata.onnx_path} vs its metadata'
        for kind, nodes, specs in (('input', self.session.get_inputs(), self.metadata.inputs),
                                   ('output', self.session.get_outputs(), self.metadata.outputs)):
            got = [node.name for node in nodes]
            want = [spec['name'] for spec in specs]
            if got != want:
                raise ValueError(f'{where}: {kind} names {got} differ from {want}')
            for node, spec in zip(nodes, specs):
                if list(node.shape) != list(spec['shape']):
                    raise ValueError(f'{where}: {kind} {node.name} has shape {node.shape}, '
                                     f'metadata says {list(spec["shape"])}')
                dtype = _ORT_TYPES.get(node.type, node.type)
                if dtype != spec['dtype']:
                    raise ValueError(f'{where}: {kind} {node.name} has type {node.type}, '
                                     f'metadata says {spec["dtype"]}')

    def _infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._binding is None:
            values = self.session.run(None, {name: feed[name] for name in self._input_metadata})
            return dict(zip(self.output_names, values))
        # ORT reads each input through its pointer: it must be C-contiguous, and any
        # contiguous copy must stay alive until the run has finished.
        bound = [np.ascontiguousarray(feed[name]) for name in self._input_metadata]
        for name, array in zip(self._input_metadata, bound):
            self._binding.bind_cpu_input(name, array)
        self.session.run_with_iobinding(self._binding)
        return dict(self._outputs)

    def _deactivate_impl(self) -> None:
        if self._binding is not None:
            self._binding.clear_binding_inputs()
            self._binding.clear_binding_outputs()
        self._binding = None
        self._outputs = {}
        self.session = None
