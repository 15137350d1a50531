"""Torch backend: the reference implementation, eager on CPU, CUDA graphs on a GPU."""

import contextlib
import importlib
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from fusion_nodes.inference.base import Backend
from fusion_nodes.inference.metadata import ModelMetadata

DEFAULT_FACTORY = 'fusion_nodes.model.network:build_model'
WARMUP_ITERATIONS = 3
_CAPTURE_STREAMS: dict[int, Any] = {}
ModelFactory = Callable[[ModelMetadata], torch.nn.Module]


def default_factory(metadata: ModelMetadata) -> torch.nn.Module:
    """fusion_nodes.model.network.build_model, imported only when it is needed."""
    module_name, function_name = DEFAULT_FACTORY.split(':')
    return getattr(importlib.import_module(module_name), function_name)(metadata)


class TorchBackend(Backend):
    """Builds the module from a factory and loads the weights named in the metadata.

    Weights are read with torch.load(weights_only=True): tensors only, nothing unpickled.
    The module is called with the inputs in metadata order and must return the outputs in
    metadata order (a tuple) or by name (a dict). device 'auto' means CUDA when available;
    on CUDA one static-shape graph is captured after warm-up and replayed per inference.
    threads, when given, sets torch's intra-op thread count, which is process-wide, so each
    inference puts it back if something else in the process changed it since.
    On CUDA, float32 convolutions and matrix products run in full float32 unless allow_tf32:
    torch's default lets cuDNN use TF32, whose 10-bit mantissa moved the shipped model's
    logits by up to 0.027 on an H200 (3e-4 relative), far past the 1e-4 parity bound this
    reference is held to, for no measurable speed (a graph replay took 0.38-0.40 ms either way).
    """

    name = 'torch'

    @staticmethod
    def cuda_usable() -> bool:
        """Whether this torch build can run on a GPU here (backend 'auto' asks)."""
        return torch.cuda.is_available()

    def __init__(self, metadata: ModelMetadata, model_factory: ModelFactory | None = None,
                 device: str = 'auto', use_cuda_graph: bool = True,
                 threads: int | None = None, allow_tf32: bool = False) -> None:
        super().__init__(metadata)
        if metadata.torch_weights_path is None:
            raise ValueError(f'model {metadata.name} has no torch_weights_file in its metadata; '
                             'the torch backend needs the weights')
        if device == 'auto':
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        if device not in ('cpu', 'cuda') and not device.startswith('cuda:'):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
        if device.startswith('cuda') and not torch.cuda.is_available():
            raise ValueError(f'device {device} requested but torch.cuda is not available')
        if threads is not None and threads < 1:
            raise ValueError(f'threads must be >= 1, got {threads}')
        self.device = torch.device(device)
        self.use_cuda_graph = use_cuda_graph and self.device.type == 'cuda'
        self.threads = threads
        self.allow_tf32 = allow_tf32
        self.model_factory = model_factory or default_factory
        self.model: torch.nn.Module | None = None
        self._graph: Any = None
        self._static_inputs: list[torch.Tensor] = []
        self._static_outputs: list[torch.Tensor] = []

    def describe(self) -> str:
        """torch, the device and how it runs there, e.g. 'torch (cuda:0, CUDA graph)'."""
        if self.device.type == 'cuda':
            mode = 'CUDA graph' if self.use_cuda_graph else 'eager'
            math = ', TF32' if self.allow_tf32 else ''
            return f'torch ({self.device}, {mode}{math})'
        threads = self.threads if self.threads is not None else torch.get_num_threads()
        return f'torch (cpu, {threads} thread{"s" if threads != 1 else ""})'

    def _activate_impl(self) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        model = self.model_factory(self.metadata)
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f'model factory returned {type(model).__name__}, not a torch Module')
        state = torch.load(self.metadata.torch_weights_path, map_location='cpu',
                           weights_only=True)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ValueError(f'{self.metadata.torch_weights_path} does not fit the module the '
                             f'factory built: {error}') from error
        self.model = model.eval().to(self.device)
        if self.use_cuda_graph:
            self._capture_graph()

    def _capture_graph(self) -> None:
        self._static_inputs = [
            torch.zeros(shape, dtype=_torch_dtype(dtype), device=self.device)
            for shape, dtype in self._input_metadata.values()]
        # Warm-up on a side stream, as CUDA graph capture requires (lazy init, autotuning).
        side = _capture_stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        # The math mode is fixed when kernels are chosen, so it need only hold for capture.
        with _cuda_float32_math(self.allow_tf32):
            with torch.cuda.stream(side), torch.inference_mode():
                for _ in range(WARMUP_ITERATIONS):
                    self._run(self._static_inputs)
            torch.cuda.current_stream(self.device).wait_stream(side)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph, stream=side), torch.inference_mode():
                self._static_outputs = self._run(self._static_inputs)
        torch.cuda.synchronize(self.device)

    def _run(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        result = self.model(*inputs)
        if isinstance(result, Mapping):
            missing = [name for name in self.output_names if name not in result]
            if missing:
                raise ValueError(f'the module returned no outputs {missing}')
            return [result[name] for name in self.output_names]
        result = list(result) if isinstance(result, (tuple, list)) else [result]
        if len(result) != len(self.output_names):
            raise ValueError(f'the module returned {len(result)} outputs, the metadata names '
                             f'{len(self.output_names)}: {list(self.output_names)}')
        return result

    def _infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        if self._graph is not None:
            for static, name in zip(self._static_inputs, self._input_metadata):
                static.copy_(torch.from_numpy(np.ascontiguousarray(feed[name])),
                             non_blocking=False)
            self._graph.replay()
            outputs = self._static_outputs
        else:
            math = (_cuda_float32_math(self.allow_tf32) if self.device.type == 'cuda'
                    else contextlib.nullcontext())
            with torch.inference_mode(), math:
                inputs = [torch.from_numpy(np.ascontiguousarray(feed[name])).to(self.device)
                          for name in self._input_metadata]
                outputs = self._run(inputs)
        return {name: tensor.detach().cpu().numpy()
                for name, tensor in zip(self.output_names, outputs)}

    def _deactivate_impl(self) -> None:
        self._graph = None
        self._static_inputs = []
        self._static_outputs = []
        self.model = None
        if self.device.type == 'cuda':
            torch.cuda.empty_cache()


def _capture_stream(device: torch.device) -> torch.cuda.Stream:
    """The one side stream per GPU that warm-up and graph capture run on.

    cuBLAS keeps a workspace (about 32 MiB) for each stream it has run on, for the life of the
    process, so a fresh stream per activation grew GPU memory with every lifecycle cycle.
    """
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _CAPTURE_STREAMS:
        _CAPTURE_STREAMS[index] = torch.cuda.Stream(index)
    return _CAPTURE_STREAMS[index]


@contextlib.contextmanager
def _cuda_float32_math(allow_tf32: bool) -> Iterator[None]:
    """cuDNN's and cuBLAS's TF32 switches set for the block, then put back (process-wide)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype)).dtype
