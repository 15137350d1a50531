"""Per-frame latency of the shipped model: ONNX Runtime on CPU against torch eager.

Both run the same metadata-described model on the same fixed inputs in this process; torch
eager (the training-time reference) is the baseline. The variants take turns in blocks, so a
change in machine load during the run falls on all of them alike instead of on whichever ran
last; each block starts after a pause and a short warm-up, so one runtime's spinning worker
threads never run into the next one's timing. Targets from issue 5: ORT p50 <= 3 ms per frame
and >= 1.5x faster than torch eager. Skipped, saying why, when models/ has no model.
"""

from contextlib import ExitStack
import os
from pathlib import Path
import time

import numpy as np

from fusion_nodes.inference.metadata import load_metadata, ModelMetadata
from fusion_nodes.inference.onnxruntime_backend import cpu_threads
from fusion_nodes.inference.registry import make_backend

MODEL = Path(__file__).resolve().parents[2] / 'models' / 'gated_fusion.json'
WARMUP = 20
FRAMES = 300
BLOCKS = 6
BLOCK_WARMUP = 5
BLOCK_PAUSE_S = 0.05
TARGET_P50_MS = 3.0
TARGET_SPEEDUP = 1.5


def fusion_node_cpu_threads() -> int:
    """fusion_node's cpu_threads from config/fusion.yaml (0 there means one per core)."""
    import yaml
    config = Path(__file__).resolve().parents[2] / 'config' / 'fusion.yaml'
    threads = int(yaml.safe_load(config.read_text())['fusion_node']['ros__parameters']
                  .get('cpu_threads', 0))
    return threads or cpu_threads()


def fixed_feed(metadata: ModelMetadata, seed: int = 0) -> dict[str, np.ndarray]:
    """Reproducible inputs of the metadata's shapes; availability and health inside [0, 1]."""
    rng = np.random.default_rng(seed)
    feed = {spec['name']: rng.standard_normal(spec['shape']).astype(spec['dtype'])
            for spec in metadata.inputs}
    for name in ('health', 'available'):
        if name in feed:
            feed[name] = rng.random(feed[name].shape).astype(feed[name].dtype).round()
    return feed


def time_backend(backend, feed: dict[str, np.ndarray], frames: int,
                 warmup: int = WARMUP) -> np.ndarray:
    """Milliseconds per infer() call, after a warm-up; inputs checked as the node does."""
    for _ in range(warmup):
        backend.infer(feed)
    times = np.empty(frames)
    for k in range(frames):
        started = time.perf_counter()
        backend.infer(feed)
        times[k] = (time.perf_counter() - started) * 1e3
    return times


def time_in_turns(backends: dict[str, object], feed: dict[str, np.ndarray],
                  frames: int = FRAMES, blocks: int = BLOCKS) -> dict[str, np.ndarray]:
    """frames per backend, in blocks that take turns (order rotated each round)."""
    for backend in backends.values():
        time_backend(backend, feed, 0, WARMUP)
    sizes = [frames // blocks + (k < frames % blocks) for k in range(blocks)]
    parts: dict[str, list[np.ndarray]] = {label: [] for label in backends}
    labels = list(backends)
    for round_index, size in enumerate(sizes):
        shift = round_index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            time.sleep(BLOCK_PAUSE_S)
            parts[label].append(time_backend(backends[label], feed, size, BLOCK_WARMUP))
    return {label: np.concatenate(chunks) for label, chunks in parts.items()}


def bench_model(path: Path, frames: int = FRAMES) -> dict[str, np.ndarray]:
    """Times per backend variant for one model; prints a line per variant and the verdict."""
    metadata = load_metadata(path)
    feed = fixed_feed(metadata)
    node_threads = fusion_node_cpu_threads()
    variants = {
        'onnxruntime cpu (io binding)': ('onnxruntime', {'providers': ['CPUExecutionProvider']}),
        f'onnxruntime cpu, {node_threads} thread(s) as fusion_node': (
            'onnxruntime', {'providers': ['CPUExecutionProvider'],
                            'intra_op_threads': node_threads}),
        'onnxruntime cpu (session.run)': ('onnxruntime', {'providers': ['CPUExecutionProvider'],
                                                          'use_io_binding': False}),
        'torch eager cpu': ('torch', {'device': 'cpu', 'threads': cpu_threads()}),
        # Under CPU contention torch's OpenMP pool can be far slower than one thread; the
        # baseline is whichever torch setting is faster, so the ratio is never flattered.
        'torch eager cpu, 1 thread': ('torch', {'device': 'cpu', 'threads': 1}),
    }
    with ExitStack() as stack:
        backends = {label: stack.enter_context(make_backend(name, metadata, **options))
                    for label, (name, options) in variants.items()}
        results = time_in_turns(backends, feed, frames)
    for label, times in results.items():
        p50, p99 = np.percentile(times, [50, 99])
        print(f'{label:32s} p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  ({frames} frames)')
    ort_p50 = float(np.median(results['onnxruntime cpu (io binding)']))
    torch_p50 = min(float(np.median(results[label])) for label in results if 'torch' in label)
    speedup = torch_p50 / ort_p50
    print(f'{cpu_threads()} cores, load average {os.getloadavg()[0]:.1f}; baseline torch eager '
          f'p50 {torch_p50:.3f} ms (its faster thread setting)')
    verdict = 'meets' if ort_p50 <= TARGET_P50_MS and speedup >= TARGET_SPEEDUP else 'MISSES'
    print(f'ratio: onnxruntime is {speedup:.2f}x faster than torch eager at p50; {verdict} the '
          f'targets (p50 <= {TARGET_P50_MS} ms, >= {TARGET_SPEEDUP}x)')
    return results


def run() -> None:
    if not MODEL.is_file():
        print(f'skipped: {MODEL} does not exist yet (fusion-train writes it); nothing to time')
        return
    print(f'model {MODEL}')
    bench_model(MODEL)


if __name__ == '__main__':
    run()
