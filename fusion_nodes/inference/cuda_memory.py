"""CUDA memory and streams through cuda-python (cuda.bindings.runtime), for the TensorRT backend.

The only module that touches the CUDA runtime. The TensorRT backend talks to it through the
small CudaApi surface below, so tests can substitute a host-memory fake. Never run on a
real GPU in this project's CI: written against cuda-python 12 and checked only with fakes.
"""

import ctypes
from typing import Any, Protocol

import numpy as np


class CudaApi(Protocol):
    """What the TensorRT backend needs from CUDA. Pointers and streams are ints."""

    def malloc(self, nbytes: int) -> int: ...

    def free(self, pointer: int) -> None: ...

    def host_empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray: ...

    def host_free(self, array: np.ndarray) -> None: ...

    def stream_create(self) -> int: ...

    def stream_destroy(self, stream: int) -> None: ...

    def stream_synchronize(self, stream: int) -> None: ...

    def copy_to_device(self, pointer: int, host: np.ndarray, stream: int) -> None: ...

    def copy_to_host(self, host: np.ndarray, pointer: int, stream: int) -> None: ...

    def compute_capability(self) -> str: ...


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python < 12.6 layout
        except ImportError as error:
            raise ImportError('cuda-python is not installed (pip install cuda-python); the '
                              'TensorRT backend needs it for device memory') from error
    return runtime


class CudaRuntime:
    """CudaApi on cuda-python's runtime bindings, for one device."""

    def __init__(self, device: int = 0) -> None:
        self._rt = _import_cudart()
        self.device = device
        self._call(self._rt.cudaSetDevice(device))
        self._host_pointers: dict[int, int] = {}

    def _call(self, result: Any) -> Any:
        error, *values = result if isinstance(result, tuple) else (result,)
        if error != self._rt.cudaError_t.cudaSuccess:
            _, name = self._rt.cudaGetErrorName(error)
            name = name.decode() if isinstance(name, bytes) else name
            raise RuntimeError(f'CUDA runtime error {name}')
        return values[0] if len(values) == 1 else values

    def malloc(self, nbytes: int) -> int:
        return int(self._call(self._rt.cudaMalloc(nbytes)))

    def free(self, pointer: int) -> None:
        self._call(self._rt.cudaFree(pointer))

    def host_empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A page-locked host array, so copies to and from the device run asynchronously."""
        dtype = np.dtype(dtype)
        nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
        pointer = int(self._call(self._rt.cudaMallocHost(nbytes)))
        buffer = (ctypes.c_byte * nbytes).from_address(pointer)
        array = np.frombuffer(buffer, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
        self._host_pointers[array.ctypes.data] = pointer
        return array

    def host_free(self, array: np.ndarray) -> None:
        pointer = self._host_pointers.pop(array.ctypes.data, None)
        if pointer is not None:
            self._call(self._rt.cudaFreeHost(pointer))

    def stream_create(self) -> int:
        return int(self._call(self._rt.cudaStreamCreate()))

    def stream_destroy(self, stream: int) -> None:
        self._call(self._rt.cudaStreamDestroy(stream))

    def stream_synchronize(self, stream: int) -> None:
        self._call(self._rt.cudaStreamSynchronize(stream))

    def copy_to_device(self, pointer: int, host: np.ndarray, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self._rt.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes, kind, stream))

    def copy_to_host(self, host: np.ndarray, pointer: int, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self._rt.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes, kind, stream))

    def compute_capability(self) -> str:
        attr = self._rt.cudaDeviceAttr
        major = self._call(self._rt.cudaDeviceGetAttribute(
            attr.cudaDevAttrComputeCapabilityMajor, self.device))
        minor = self._call(self._rt.cudaDeviceGetAttribute(
            attr.cudaDevAttrComputeCapabilityMinor, self.device))
        return f'{major}.{minor}'
