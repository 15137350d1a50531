"""Backend selection by name, from a table; each runtime is imported only by its own module."""

import importlib
import importlib.metadata
import importlib.util
import os
from typing import Any

from fusion_nodes.inference.base import Backend
from fusion_nodes.inference.metadata import load_metadata, ModelMetadata

BACKENDS = {
    'onnxruntime': 'fusion_nodes.inference.onnxruntime_backend:OnnxRuntimeBackend',
    'tensorrt': 'fusion_nodes.inference.tensorrt_backend:TensorRtBackend',
    'torch': 'fusion_nodes.inference.torch_backend:TorchBackend',
}
AUTO = 'auto'
INSTALL_HINTS = {
    'onnxruntime': 'pip install onnxruntime (or onnxruntime-gpu for the CUDA/TensorRT EPs)',
    'tensorrt': 'install TensorRT 10 for Python (pip install tensorrt) and cuda-python, '
                'on a machine with an NVIDIA GPU',
    'torch': 'pip install torch (the pinned CPU wheel is in requirements.txt)',
}


def known_backends() -> tuple[str, ...]:
    return (AUTO, *BACKENDS)


def backend_class(name: str) -> type[Backend]:
    """The Backend subclass registered under name, importing its module (and runtime) now."""
    if name not in BACKENDS:
        raise ValueError(f'unknown backend {name!r}; known backends: {list(known_backends())}')
    module_name, class_name = BACKENDS[name].split(':')
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise RuntimeError(f'backend {name!r} cannot be used: its runtime is not installed '
                           f'({error}). To enable it: {INSTALL_HINTS[name]}') from error
    return getattr(module, class_name)


def resolve_auto() -> str:
    """The fastest runtime this machine has, in the order measured (README, "Choosing
    backend"): with a GPU, tensorrt, then onnxruntime-gpu (its TensorRT and CUDA providers),
    then torch on CUDA; else onnxruntime on the CPU."""
    if _gpu_present():
        for name, usable in _GPU_PREFERENCE:
            if usable():
                return name
    return 'onnxruntime'


def make_backend(name: str, model: str | os.PathLike | ModelMetadata,
                 **options: Any) -> Backend:
    """A not-yet-activated backend for the model (metadata JSON, its directory, or metadata).

    options go to the backend's constructor, e.g. providers=[...] for onnxruntime or
    precision='fp16' for tensorrt. Raises ValueError for an unknown name or bad metadata and
    RuntimeError when the backend's runtime is not installed.
    """
    if not isinstance(name, str) or name not in known_backends():
        raise ValueError(f'unknown backend {name!r}; known backends: {list(known_backends())}')
    if name == AUTO:
        name = resolve_auto()
    metadata = model if isinstance(model, ModelMetadata) else load_metadata(model)
    return backend_class(name)(metadata, **options)


def _tensorrt_importable() -> bool:
    return importlib.util.find_spec('tensorrt') is not None


def _onnxruntime_gpu_installed() -> bool:
    # The GPU build is its own distribution; asking for it avoids importing the runtime.
    try:
        importlib.metadata.distribution('onnxruntime-gpu')
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _torch_cuda_usable() -> bool:
    try:
        return backend_class('torch').cuda_usable()
    except RuntimeError:
        return False


_GPU_PREFERENCE = (('tensorrt', _tensorrt_importable),
                   ('onnxruntime', _onnxruntime_gpu_installed),
                   ('torch', _torch_cuda_usable))


def _gpu_present() -> bool:
    # Device nodes the driver creates (desktop GPUs; Jetson's integrated GPU): asking them
    # avoids importing a CUDA runtime just to choose a backend.
    nodes = ('/dev/nvidia0', '/dev/nvidiactl', '/dev/nvhost-ctrl-gpu')
    if any(os.path.exists(node) for node in nodes):
        return True
    return os.path.isdir('/proc/driver/nvidia/gpus') and bool(
        os.listdir('/proc/driver/nvidia/gpus'))
