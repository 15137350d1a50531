"""fusion-build-engine: build (or confirm) the cached TensorRT engine, then exit.

The deployment step that Autoware calls build_only: run it once on the target machine, so
the fusion node starts from a valid cache instead of building for minutes on first boot.

    fusion-build-engine --model models/gated_fusion.json --precision fp16

Exit status: 0 the cache is valid or was built; 1 --check-only and the cache needs a build;
2 bad arguments or model metadata; 3 TensorRT (or cuda-python) is not installed.
"""

import argparse
import logging
from pathlib import Path
import sys
import time

from fusion_nodes.inference.engine_cache import (
    BuildOptions, EngineBuilder, EngineCache, make_key, Platform, PRECISIONS)
from fusion_nodes.inference.metadata import file_sha256, load_metadata, ModelMetadata


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='fusion-build-engine', description=__doc__.split(
        '\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', required=True, type=Path,
                        help='model metadata JSON (or the directory holding it)')
    parser.add_argument('--precision', choices=PRECISIONS, default='fp16')
    parser.add_argument('--cache-dir', type=Path, default=None,
                        help='engine cache directory (default: <model dir>/engines)')
    parser.add_argument('--workspace-mb', type=int, default=1024)
    parser.add_argument('--dla-core', type=int, default=None)
    parser.add_argument('--calibration-cache', type=Path, default=None,
                        help='int8: a TensorRT calibration table to calibrate from')
    parser.add_argument('--check-only', action='store_true',
                        help='report whether the cache is valid; never build')
    return parser.parse_args(argv)


def build_options(args: argparse.Namespace) -> BuildOptions:
    calibration_id = None
    if args.precision == 'int8':
        if args.calibration_cache is None or not args.calibration_cache.is_file():
            raise ValueError('--precision int8 needs --calibration-cache naming an existing '
                             'TensorRT calibration table')
        calibration_id = 'cache:' + file_sha256(args.calibration_cache)
    return BuildOptions(precision=args.precision, workspace_mb=args.workspace_mb,
                        dla_core=args.dla_core, calibration_id=calibration_id)


def describe(metadata: ModelMetadata, options: BuildOptions) -> list[str]:
    """The parts of the cache key that need no TensorRT."""
    profile = ', '.join(f'{s["name"]}{list(s["shape"])}' for s in metadata.inputs)
    return [f'model            {metadata.name} {metadata.version} ({metadata.onnx_path})',
            f'onnx_sha256      {metadata.onnx_sha256}',
            f'precision        {options.precision}',
            f'input_profile    {profile}',
            f'workspace_mb     {options.workspace_mb}',
            f'dla_core         {options.dla_core}',
            f'calibration_id   {options.calibration_id}']


def run(metadata: ModelMetadata, options: BuildOptions, cache: EngineCache,
        platform: Platform, builder: EngineBuilder, check_only: bool) -> int:
    """Report the full key and the cache's state; build unless check_only. Returns exit code."""
    key = make_key(metadata, options, platform)
    print(f'tensorrt_version {key.tensorrt_version}')
    print(f'compute_cap      {key.compute_capability}')
    engine_path = cache.engine_path(metadata, options)
    status = cache.check(engine_path, key)
    if status.valid:
        print(f'cache valid: {engine_path}')
        return 0
    print(f'cache needs a build: {status.reason}')
    if check_only:
        return 1
    started = time.monotonic()
    result = cache.ensure(metadata, options, platform, builder)
    verb = 'built' if result.built else 'found'
    print(f'{verb} {result.engine_path} in {time.monotonic() - started:.1f} s')
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    args = parse_args(argv)
    try:
        metadata = load_metadata(args.model)
        options = build_options(args)
    except ValueError as error:
        print(f'fusion-build-engine: {error}', file=sys.stderr)
        return 2
    for line in describe(metadata, options):
        print(line)
    try:
        from fusion_nodes.inference import tensorrt_backend
        from fusion_nodes.inference.cuda_memory import CudaRuntime
        cuda = CudaRuntime()
    except ImportError as error:
        print(f'fusion-build-engine: cannot build: {error}. Install TensorRT 10 for Python and '
              'cuda-python on the target machine (with its NVIDIA GPU).', file=sys.stderr)
        return 3
    trt = tensorrt_backend.trt
    cache = EngineCache(args.cache_dir or tensorrt_backend.default_cache_dir(metadata))
    builder = tensorrt_backend.TrtEngineBuilder(
        metadata, cuda, trt.Logger(trt.Logger.INFO), calibration_cache=args.calibration_cache)
    return run(metadata, options, cache, tensorrt_backend.TrtPlatform(cuda), builder,
               args.check_only)


if __name__ == '__main__':
    sys.exit(main())
