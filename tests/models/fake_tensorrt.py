"""A fake `tensorrt` module and host-memory CUDA, to test the TensorRT backend's logic.

The fake mirrors the TensorRT 10 Python names the backend uses. Its "engine" is the ONNX
graph serialised with its I/O table; its execution context reads the inputs from the fake
device memory at the bound addresses, runs the graph with onnxruntime and writes the outputs
back, so wrong bindings, shapes or copies give wrong numbers. Every call is recorded.
"""

import enum
import json
import types

import numpy as np
import onnx
import onnxruntime as ort

_ONNX_TYPES = {onnx.TensorProto.FLOAT: 'float32', onnx.TensorProto.INT64: 'int64'}


class FakeCuda:
    """CudaApi over host memory; tracks live allocations and streams."""

    def __init__(self, compute_capability: str = '8.7') -> None:
        self.capability = compute_capability
        self.memory: dict[int, np.ndarray] = {}
        self.host: list[int] = []
        self.streams: set[int] = set()
        self.calls: list[tuple] = []
        self._next = 0x1000

    def _id(self) -> int:
        self._next += 0x1000
        return self._next

    def malloc(self, nbytes):
        pointer = self._id()
        self.memory[pointer] = np.zeros(nbytes, np.uint8)
        self.calls.append(('malloc', pointer, nbytes))
        return pointer

    def free(self, pointer):
        del self.memory[pointer]
        self.calls.append(('free', pointer))

    def host_empty(self, shape, dtype):
        array = np.empty(shape, dtype)
        self.host.append(array.ctypes.data)
        return array

    def host_free(self, array):
        self.host.remove(array.ctypes.data)

    def stream_create(self):
        stream = self._id()
        self.streams.add(stream)
        return stream

    def stream_destroy(self, stream):
        self.streams.remove(stream)

    def stream_synchronize(self, stream):
        assert stream in self.streams
        self.calls.append(('sync', stream))

    def copy_to_device(self, pointer, host, stream):
        assert stream in self.streams
        self.memory[pointer][:] = np.frombuffer(np.ascontiguousarray(host).tobytes(), np.uint8)
        self.calls.append(('htod', pointer))

    def copy_to_host(self, host, pointer, stream):
        assert stream in self.streams
        host[...] = np.frombuffer(self.memory[pointer].tobytes(), host.dtype).reshape(host.shape)
        self.calls.append(('dtoh', pointer))

    def compute_capability(self):
        return self.capability

    def read(self, pointer, shape, dtype):
        return np.frombuffer(self.memory[pointer].tobytes(), dtype).reshape(shape)


def make_fake_tensorrt(cuda: FakeCuda, version: str = '10.3.0') -> types.ModuleType:
    trt = types.ModuleType('tensorrt')
    trt.__version__ = version
    trt.log = []            # (event, details) in call order
    trt.builds = []         # the BuilderConfig of every build
    trt.corrupt_shape = None  # (name, shape) the next build reports instead of the ONNX's

    class Logger:
        WARNING, INFO = 'warning', 'info'

        def __init__(self, severity):
            self.severity = severity

    class TensorIOMode(enum.Enum):
        INPUT = 1
        OUTPUT = 2

    trt.Logger, trt.ILogger, trt.TensorIOMode = Logger, Logger, TensorIOMode
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE='workspace')
    trt.BuilderFlag = types.SimpleNamespace(FP16='fp16', INT8='int8', GPU_FALLBACK='gpu_fallback')
    trt.DeviceType = types.SimpleNamespace(DLA='dla', GPU='gpu')
    trt.nptype = lambda dtype: np.dtype(dtype).type

    class IInt8EntropyCalibrator2:
        def __init__(self):
            trt.log.append(('calibrator_init', None))

    trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

    class Network:
        def __init__(self):
            self.onnx = None

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network
            self.num_errors = 0

        def parse(self, data):
            try:
                onnx.load_from_string(data)
            except Exception:  # noqa: BLE001 - the real parser reports, not raises
                self.num_errors = 1
                return False
            self.network.onnx = data
            return True

        def get_error(self, index):
            return 'fake parse error'

    class BuilderConfig:
        def __init__(self):
            self.flags, self.pool, self.int8_calibrator = set(), {}, None
            self.default_device_type, self.DLA_core = 'gpu', -1

        def set_flag(self, flag):
            self.flags.add(flag)

        def set_memory_pool_limit(self, pool, size):
            self.pool[pool] = size

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            assert flags == 0
            return Network()

        def create_builder_config(self):
            return BuilderConfig()

        def build_serialized_network(self, network, config):
            trt.log.append(('build', sorted(config.flags)))
            trt.builds.append(config)
            graph = onnx.load_from_string(network.onnx).graph
            io = []
            for mode, values in ((TensorIOMode.INPUT, graph.input),
                                 (TensorIOMode.OUTPUT, graph.output)):
                for value in values:
                    shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
                    if trt.corrupt_shape and trt.corrupt_shape[0] == value.name:
                        shape = list(trt.corrupt_shape[1])
                    io.append([value.name, mode.name, shape,
                               _ONNX_TYPES[value.type.tensor_type.elem_type]])
            calibrator = config.int8_calibrator
            if calibrator is not None:
                names = [n for n, mode, _, _ in io if mode == 'INPUT']
                if calibrator.read_calibration_cache() is None:
                    while (pointers := calibrator.get_batch(names)) is not None:
                        trt.log.append(('calibration_batch', [
                            cuda.read(p, s, d).copy() for p, (_, _, s, d) in zip(
                                pointers, [t for t in io if t[1] == 'INPUT'])]))
                    calibrator.write_calibration_cache(b'fake calibration table')
            header = json.dumps(io).encode()
            return len(header).to_bytes(4, 'little') + header + network.onnx

    class Engine:
        def __init__(self, io, onnx_bytes):
            self.io = io
            self.session = ort.InferenceSession(onnx_bytes, providers=['CPUExecutionProvider'])

        @property
        def num_io_tensors(self):
            return len(self.io)

        def get_tensor_name(self, index):
            return self.io[index][0]

        def _row(self, name):
            return next(row for row in self.io if row[0] == name)

        def get_tensor_mode(self, name):
            return TensorIOMode[self._row(name)[1]]

        def get_tensor_shape(self, name):
            return tuple(self._row(name)[2])

        def get_tensor_dtype(self, name):
            return np.dtype(self._row(name)[3])

        def create_execution_context(self):
            trt.log.append(('create_context', None))
            return Context(self)

    class Context:
        def __init__(self, engine):
            self.engine = engine
            self.addresses, self.shapes = {}, {}

        def set_input_shape(self, name, shape):
            trt.log.append(('set_input_shape', (name, tuple(shape))))
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name, pointer):
            trt.log.append(('set_tensor_address', (name, pointer)))
            self.addresses[name] = pointer
            return True

        def execute_async_v3(self, stream_handle):
            assert stream_handle in cuda.streams
            feed = {}
            for name, mode, shape, dtype in self.engine.io:
                if mode == 'INPUT':
                    assert self.shapes[name] == tuple(shape)
                    feed[name] = cuda.read(self.addresses[name], shape, dtype)
            trt.log.append(('execute', {k: v.copy() for k, v in feed.items()}))
            outputs = self.engine.session.run(None, feed)
            out_rows = [row for row in self.engine.io if row[1] == 'OUTPUT']
            for (name, _, _, _), value in zip(out_rows, outputs):
                cuda.memory[self.addresses[name]][:] = np.frombuffer(value.tobytes(), np.uint8)
            return True

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            try:
                size = int.from_bytes(data[:4], 'little')
                io = json.loads(data[4:4 + size])
                return Engine(io, data[4 + size:])
            except Exception:  # noqa: BLE001 - the real runtime returns None on bad bytes
                return None

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt
