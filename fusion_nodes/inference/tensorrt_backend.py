"""TensorRT 10 backend: engine built from the ONNX file (cached), run by tensor name.

Uses only the TensorRT 10 name-based API: num_io_tensors, get_tensor_name, get_tensor_mode,
get_tensor_shape, set_input_shape, set_tensor_address, execute_async_v3. Host (page-locked)
and device buffers are allocated once in activate, a warm-up inference runs before the
backend reports ready, and everything is freed explicitly in deactivate (never in __del__).
Device memory and streams come from fusion_nodes.inference.cuda_memory (cuda-python).

Status: this module has never run on a real GPU here. Its binding, shape, warm-up and
release sequence is tested against a fake tensorrt module and host-memory CUDA fake
(tests/test_inference_tensorrt.py); the engine cache logic is tested without TensorRT.
"""

import logging
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import tensorrt as trt

from fusion_nodes.inference.base import Backend
from fusion_nodes.inference.cuda_memory import CudaApi, CudaRuntime
from fusion_nodes.inference.engine_cache import BuildOptions, EngineCache
from fusion_nodes.inference.metadata import file_sha256, ModelMetadata

CalibrationFeed = Callable[[], Iterable[Mapping[str, np.ndarray]]]
_LOG = logging.getLogger(__name__)


def default_cache_dir(metadata: ModelMetadata) -> Path:
    return metadata.directory / 'engines'


class TrtPlatform:
    """engine_cache.Platform for this process's TensorRT and GPU."""

    def __init__(self, cuda: CudaApi) -> None:
        self.cuda = cuda

    def tensorrt_version(self) -> str:
        return str(trt.__version__)

    def compute_capability(self) -> str:
        return self.cuda.compute_capability()


class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
    """INT8 calibration fed by a callable that yields feed dicts (batch 1, metadata shapes).

    With a cache_path holding a calibration table from an earlier run, TensorRT reads that
    instead of asking for batches.
    """

    def __init__(self, feed: CalibrationFeed | None, input_specs: tuple[dict, ...],
                 cuda: CudaApi, cache_path: Path | None) -> None:
        trt.IInt8EntropyCalibrator2.__init__(self)
        self.cuda = cuda
        self.cache_path = cache_path
        self.specs = input_specs
        self._batches = iter(feed()) if feed is not None else iter(())
        self._device: dict[str, int] = {}
        self._stream: int | None = None
        self.batches_used = 0

    def get_batch_size(self) -> int:
        return 1

    def get_batch(self, names: list[str]) -> list[int] | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        if self._stream is None:
            self._stream = self.cuda.stream_create()
            for spec in self.specs:
                nbytes = int(np.prod(spec['shape'])) * np.dtype(spec['dtype']).itemsize
                self._device[spec['name']] = self.cuda.malloc(nbytes)
        for spec in self.specs:
            array = np.ascontiguousarray(batch[spec['name']], dtype=spec['dtype'])
            if array.shape != tuple(spec['shape']):
                raise ValueError(f'calibration batch {spec["name"]} has shape '
                                 f'{list(array.shape)}, expected {list(spec["shape"])}')
            self.cuda.copy_to_device(self._device[spec['name']], array, self._stream)
        self.cuda.stream_synchronize(self._stream)
        self.batches_used += 1
        return [self._device[name] for name in names]

    def read_calibration_cache(self) -> bytes | None:
        if self.cache_path is not None and self.cache_path.is_file():
            return self.cache_path.read_bytes()
        return None

    def write_calibration_cache(self, cache: bytes) -> None:
        if self.cache_path is not None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            self.cache_path.write_bytes(bytes(cache))

    def release(self) -> None:
        for pointer in self._device.values():
            self.cuda.free(pointer)
        self._device = {}
        if self._stream is not None:
            self.cuda.stream_destroy(self._stream)
            self._stream = None


class TrtEngineBuilder:
    """engine_cache.EngineBuilder: parse the ONNX file and build a serialised engine."""

    def __init__(self, metadata: ModelMetadata, cuda: CudaApi, logger: 'trt.ILogger',
                 calibration_feed: CalibrationFeed | None = None,
                 calibration_cache: Path | None = None) -> None:
        self.metadata = metadata
        self.cuda = cuda
        self.logger = logger
        self.calibration_feed = calibration_feed
        self.calibration_cache = calibration_cache

    def build(self, onnx_path: Path, options: BuildOptions) -> bytes:
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)  # TensorRT 10 networks are always explicit-batch
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(Path(onnx_path).read_bytes()):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise RuntimeError(f'TensorRT could not parse {onnx_path}: {errors}')
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
        calibrator = None
        if options.precision in ('fp16', 'int8') and not hasattr(trt.BuilderFlag, 'FP16'):
            raise RuntimeError(f'TensorRT {trt.__version__} has no weakly typed fp16 or int8 '
                               '(removed in TensorRT 11); build with precision fp32 '
                               '(fusion_node: tensorrt_precision fp32)')
        if options.precision in ('fp16', 'int8'):
            # int8 keeps fp16 as the fallback for layers that have no int8 kernel.
            config.set_flag(trt.BuilderFlag.FP16)
        if options.precision == 'int8':
            if self.calibration_feed is None and self.calibration_cache is None:
                raise ValueError('int8 needs a calibration feed or a calibration cache file')
            config.set_flag(trt.BuilderFlag.INT8)
            calibrator = EntropyCalibrator(self.calibration_feed, self.metadata.inputs,
                                           self.cuda, self.calibration_cache)
            config.int8_calibrator = calibrator
        if options.dla_core is not None:
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = options.dla_core
            # Layers the DLA cannot run fall back to the GPU instead of failing the build.
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        try:
            serialized = builder.build_serialized_network(network, config)
        finally:
            if calibrator is not None:
                calibrator.release()
        if serialized is None:
            raise RuntimeError(f'TensorRT failed to build an engine from {onnx_path} '
                               f'({options}); see the TensorRT log above')
        return bytes(serialized)


class TensorRtBackend(Backend):
    """Runs a cached TensorRT engine built from the metadata's ONNX file.

    Options: cache_dir (default <model dir>/engines), precision fp16|fp32|int8,
    workspace_mb, dla_core, calibration_feed or calibration_cache for int8, cuda (a
    CudaApi; default cuda-python on device 0), and allow_build=False to refuse to build at
    start-up (deployments that pre-build with fusion-build-engine).
    """

    name = 'tensorrt'

    def __init__(self, metadata: ModelMetadata, cache_dir: str | Path | None = None,
                 precision: str = 'fp16', workspace_mb: int = 1024,
                 dla_core: int | None = None, calibration_feed: CalibrationFeed | None = None,
                 calibration_cache: str | Path | None = None, calibration_id: str | None = None,
                 cuda: CudaApi | None = None, allow_build: bool = True) -> None:
        super().__init__(metadata)
        calibration_cache = Path(calibration_cache) if calibration_cache else None
        if precision == 'int8' and calibration_id is None and calibration_cache is not None \
                and calibration_cache.is_file():
            calibration_id = 'cache:' + file_sha256(calibration_cache)
        self.options = BuildOptions(precision=precision, workspace_mb=workspace_mb,
                                    dla_core=dla_core, calibration_id=calibration_id)
        self.cache = EngineCache(cache_dir or default_cache_dir(metadata))
        self.calibration_feed = calibration_feed
        self.calibration_cache = calibration_cache
        self.allow_build = allow_build
        self._cuda = cuda
        self.cache_result = None
        self._reset_state()

    def _reset_state(self) -> None:
        self.cuda: CudaApi | None = None
        self._runtime = None
        self.engine = None
        self.context = None
        self._stream: int | None = None
        self._device: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}

    def describe(self) -> str:
        """tensorrt, its precision and DLA core, and the engine file once there is one."""
        dla = f', DLA {self.options.dla_core}' if self.options.dla_core is not None else ''
        engine = (f', {self.cache_result.engine_path.name}' if self.cache_result is not None
                  else '')
        return f'tensorrt ({self.options.precision}{dla}{engine})'

    def _activate_impl(self) -> None:
        self.cuda = self._cuda or CudaRuntime()
        logger = trt.Logger(trt.Logger.WARNING)
        platform = TrtPlatform(self.cuda)
        builder = TrtEngineBuilder(self.metadata, self.cuda, logger, self.calibration_feed,
                                   self.calibration_cache)
        if self.allow_build:
            self.cache_result = self.cache.ensure(self.metadata, self.options, platform, builder)
        else:
            self.cache_result = self.cache.require(self.metadata, self.options, platform)
        self._runtime = trt.Runtime(logger)
        engine_path = self.cache_result.engine_path
        self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f'TensorRT could not deserialise {engine_path}; delete it to '
                               'force a rebuild')
        self._check_engine_io()
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RuntimeError('TensorRT could not create an execution context')
        self._stream = self.cuda.stream_create()
        for spec in (*self.metadata.inputs, *self.metadata.outputs):
            name, shape = spec['name'], tuple(spec['shape'])
            self._host[name] = self.cuda.host_empty(shape, np.dtype(spec['dtype']))
            self._device[name] = self.cuda.malloc(self._host[name].nbytes)
            if name in self._input_metadata:
                self.context.set_input_shape(name, shape)
            self.context.set_tensor_address(name, self._device[name])
        # One warm-up run, so the first real frame does not pay for lazy initialisation.
        for name in self._input_metadata:
            self._host[name].fill(0)
        self._run()

    def _check_engine_io(self) -> None:
        """The engine's tensors must be exactly the metadata's, by name, mode, shape and dtype."""
        engine_io = {}
        for index in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(index)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            engine_io[name] = ('input' if is_input else 'output',
                               tuple(self.engine.get_tensor_shape(name)),
                               np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))))
        wanted = {spec['name']: (kind, tuple(spec['shape']), np.dtype(spec['dtype']))
                  for kind, specs in (('input', self.metadata.inputs),
                                      ('output', self.metadata.outputs)) for spec in specs}
        if set(engine_io) != set(wanted):
            raise ValueError(f'engine tensors {sorted(engine_io)} differ from the metadata '
                             f'{sorted(wanted)}')
        for name, (kind, shape, dtype) in wanted.items():
            got_kind, got_shape, got_dtype = engine_io[name]
            static = all(d > 0 for d in got_shape)
            if got_kind != kind or (static and got_shape != shape) or got_dtype != dtype:
                raise ValueError(f'engine tensor {name} is {got_kind} {list(got_shape)} '
                                 f'{got_dtype}, metadata says {kind} {list(shape)} {dtype}')

    def _run(self) -> None:
        for name in self._input_metadata:
            self.cuda.copy_to_device(self._device[name], self._host[name], self._stream)
        if not self.context.execute_async_v3(self._stream):
            raise RuntimeError('TensorRT execute_async_v3 failed')
        for name in self.output_names:
            self.cuda.copy_to_host(self._host[name], self._device[name], self._stream)
        self.cuda.stream_synchronize(self._stream)

    def _infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name in self._input_metadata:
            np.copyto(self._host[name], feed[name], casting='same_kind')
        self._run()
        return {name: self._host[name] for name in self.output_names}

    def _deactivate_impl(self) -> None:
        cuda = self.cuda
        try:
            if cuda is not None and self._stream is not None:
                cuda.stream_synchronize(self._stream)
            # The context goes before the engine it came from, and both before the memory.
            self.context = None
            self.engine = None
            self._runtime = None
            if cuda is not None:
                for pointer in self._device.values():
                    cuda.free(pointer)
                for array in self._host.values():
                    cuda.host_free(array)
                if self._stream is not None:
                    cuda.stream_destroy(self._stream)
        finally:
            self._reset_state()
