"""The torch CUDA path on a GPU: accuracy against float64, latency against the CPU runtimes.

Where CUDA is present this checks the shipped model's torch backend on the GPU (CUDA graph
and eager, full float32 and TF32) against the same network in float64 on the CPU, over
several input sets in turn, so a graph that replayed stale inputs would fail: random ones
and, where rosbags is installed or given `--feeds` (written by `--save-feeds`), demo-bag
frames as the sensor nodes preprocess them. The network cast to float16 stands in for a
TensorRT fp16 engine, which cannot be built here, to show what half precision does to the
class map and the gates. Then it times one frame per infer() call, host arrays in and out as
fusion_node calls it, beside ONNX Runtime and torch on the CPU in the same run; CUDA events
time the graph replay alone, so the host-device copies show as the difference. Elsewhere it
says there is no GPU and times nothing. `--json PATH` writes every figure.
"""

import argparse
from contextlib import ExitStack
import importlib.util
import json
import os
from pathlib import Path
import platform
import sys
import time
from typing import Any, Callable

import numpy as np

from fusion_nodes.benchmarks.inference import fixed_feed, MODEL, time_in_turns
from fusion_nodes.inference.metadata import load_metadata, ModelMetadata
from fusion_nodes.inference.onnxruntime_backend import cpu_threads
from fusion_nodes.inference.registry import make_backend
from fusion_nodes.model.export import json_finite, load_trained_model

FEEDS = 6
DEMO_BAG = MODEL.parents[1] / 'bags' / 'demo'
DEMO_OVERLAY = MODEL.parents[1] / 'config' / 'demo_bag.yaml'
DEMO_FRAMES = 24
FRAMES = 300
EVENT_REPLAYS = 200


def environment() -> dict[str, Any]:
    """Versions and the device, as this process sees them."""
    import onnxruntime
    import torch
    info: dict[str, Any] = {
        'python': platform.python_version(), 'torch': torch.__version__,
        'torch_cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(),
        'onnxruntime': onnxruntime.__version__,
        'onnxruntime_providers': onnxruntime.get_available_providers(),
        'tensorrt_importable': importlib.util.find_spec('tensorrt') is not None,
        'cpu_cores': os.cpu_count(), 'cuda_available': torch.cuda.is_available()}
    if info['cuda_available']:
        properties = torch.cuda.get_device_properties(0)
        info.update(device=properties.name, capability=f'{properties.major}.{properties.minor}',
                    multiprocessors=properties.multi_processor_count,
                    memory_gib=round(properties.total_memory / 2**30, 1))
    return info


def demo_bag_inputs() -> dict[str, np.ndarray]:
    """DEMO_FRAMES camera frames of the demo bag, spread evenly, as the model's inputs.

    The sensor nodes' parameters are fusion.yaml with the demo overlay, as `make demo` and
    `fusion-eval --bag` run them.
    """
    from fusion_nodes.model.bag_samples import extract_bag_samples
    from fusion_nodes.model.predict import INPUT_KEYS
    from fusion_nodes.tools.node_set import default_params_file
    from fusion_nodes.tools.params_overlay import merged_parameters
    params = merged_parameters(default_params_file(), DEMO_OVERLAY)
    samples = extract_bag_samples(DEMO_BAG, node_params=params)
    rows = np.linspace(0, len(samples['camera']) - 1, DEMO_FRAMES).round().astype(int)
    return {key: samples[key][rows] for key in INPUT_KEYS}


def split_feeds(arrays: Any, metadata: ModelMetadata) -> list[dict[str, np.ndarray]]:
    """One feed per row of batched inputs (a dict or an npz), checked against the metadata."""
    names = [spec['name'] for spec in metadata.inputs]
    missing = [name for name in names if name not in arrays]
    if missing:
        raise ValueError(f'the saved inputs lack {missing}')
    rows = len(arrays[names[0]])
    return [{spec['name']: np.ascontiguousarray(arrays[spec['name']][row:row + 1],
                                                dtype=spec['dtype'])
             for spec in metadata.inputs} for row in range(rows)]


def network_in(model_json: Path, dtype: Any, device: str) -> Callable[[dict], dict]:
    """infer(feed) for a saved network with its weights, cast to dtype on device."""
    import torch
    model, metadata = load_trained_model(model_json)
    model = model.to(device=device, dtype=dtype)
    names = [spec['name'] for spec in metadata.outputs]

    def infer(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            outputs = model(*(torch.from_numpy(feed[spec['name']]).to(device, dtype)
                              for spec in metadata.inputs))
        if isinstance(outputs, dict):
            outputs = [outputs[name] for name in names]
        return {name: tensor.double().cpu().numpy() for name, tensor in zip(names, outputs)}
    return infer


def errors(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> dict[str, float]:
    """Worst max-abs and relative-norm error over the outputs and on the gates alone (inf
    where any output is not finite), and the share of BEV cells whose class differs."""
    finite = bool(all(np.isfinite(got[k]).all() for k in want))
    max_abs = max(float(np.abs(got[k] - want[k]).max()) for k in want) if finite else np.inf
    relative = max(float(np.linalg.norm(got[k] - want[k]) / max(np.linalg.norm(want[k]), 1e-30))
                   for k in want) if finite else np.inf
    result = {'max_abs': max_abs, 'relative': relative, 'finite': finite}
    if 'gates' in want:
        result['gates_max_abs'] = (float(np.abs(got['gates'] - want['gates']).max())
                                   if finite else np.inf)
    logits = [k for k in want if want[k].ndim == 4]
    if logits:
        k = logits[0]
        result['bev_argmax_disagree'] = float(
            (got[k].argmax(axis=1) != want[k].argmax(axis=1)).mean())
    return result


def accuracy(infers: dict[str, Callable[[dict], dict]], reference: Callable[[dict], dict],
             feeds: list[dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Each infer function's worst error against the reference over the feeds, visited twice
    in turn."""
    wanted = [reference(feed) for feed in feeds]
    order = list(range(len(feeds))) + list(reversed(range(len(feeds))))
    table = {}
    for label, infer in infers.items():
        worst: dict[str, float] = {}
        for index in order:
            got = {k: v.astype(np.float64) for k, v in infer(feeds[index]).items()}
            for key, value in errors(got, wanted[index]).items():
                worst[key] = (min(worst.get(key, True), value) if key == 'finite'
                              else max(worst.get(key, 0.0), value))
        table[label] = worst
    return table


def replay_ms(backend: Any) -> float:
    """Median CUDA-event time of one replay of an active torch backend's graph, without the
    host-device copies."""
    import torch
    graph = backend._graph  # the benchmark reaches in: only the replay is timed here
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(5):
        torch.cuda.synchronize()
        start.record()
        for _ in range(EVENT_REPLAYS):
            graph.replay()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / EVENT_REPLAYS)
    return float(np.median(times))


def activation(metadata: ModelMetadata) -> dict[str, float]:
    """Seconds to activate (weights, warm-up, graph capture) and memory before and after."""
    import torch
    result = {}
    for attempt in ('first', 'second'):
        started = time.perf_counter()
        backend = make_backend('torch', metadata, device='cuda')
        backend.activate()
        result[f'activate_s_{attempt}'] = time.perf_counter() - started
        result[f'allocated_mib_active_{attempt}'] = torch.cuda.memory_allocated() / 2**20
        backend.deactivate()
        result[f'allocated_mib_after_{attempt}'] = torch.cuda.memory_allocated() / 2**20
    result['peak_allocated_mib'] = torch.cuda.max_memory_allocated() / 2**20
    return result


def run(json_path: str | None = None, feeds_path: str | None = None
        ) -> dict[str, Any] | None:
    import torch
    info = environment()
    print(json.dumps(info))
    if not info['cuda_available']:
        print('skipped: torch sees no CUDA device here; run this where a GPU is present')
        return None
    if not MODEL.is_file():
        print(f'skipped: {MODEL} does not exist yet (fusion-train writes it)')
        return None
    metadata = load_metadata(MODEL)
    report: dict[str, Any] = {'environment': info, 'model': str(MODEL),
                              'model_version': metadata.version}
    report['activation'] = activation(metadata)
    print('activation', json.dumps(report['activation']))
    cpu = {'threads': cpu_threads()}
    variants = {
        'torch cuda graph': ('torch', {'device': 'cuda'}),
        'torch cuda graph, tf32': ('torch', {'device': 'cuda', 'allow_tf32': True}),
        'torch cuda eager': ('torch', {'device': 'cuda', 'use_cuda_graph': False}),
        'torch cpu': ('torch', {'device': 'cpu', **cpu}),
        'onnxruntime cpu': ('onnxruntime', {'providers': ['CPUExecutionProvider']}),
    }
    if 'CUDAExecutionProvider' in info['onnxruntime_providers']:
        variants['onnxruntime cuda'] = ('onnxruntime', {'providers': ['CUDAExecutionProvider']})
    feed_sets = {'random': [fixed_feed(metadata, seed) for seed in range(FEEDS)]}
    if feeds_path:
        with np.load(feeds_path) as arrays:
            feed_sets['demo bag'] = split_feeds(arrays, metadata)
    elif importlib.util.find_spec('rosbags') is not None and DEMO_BAG.is_dir():
        feed_sets['demo bag'] = split_feeds(demo_bag_inputs(), metadata)
    reference = network_in(MODEL, torch.float64, 'cpu')
    with ExitStack() as stack:
        backends = {label: stack.enter_context(make_backend(name, metadata, **options))
                    for label, (name, options) in variants.items()}
        infers = {label: backend.infer for label, backend in backends.items()}
        infers['torch cuda float16'] = network_in(MODEL, torch.float16, 'cuda')
        for set_name, feeds in feed_sets.items():
            table = accuracy(infers, reference, feeds)
            report[f'accuracy_vs_float64 ({set_name})'] = table
            print(f'-- worst error against float64 on {len(feeds)} {set_name} inputs')
            for label, row in table.items():
                print(f'{label:24s} ' + ', '.join(f'{k} {v:.3g}' for k, v in row.items()))
        times = time_in_turns(backends, fixed_feed(metadata), FRAMES)
        report['graph_replay_ms'] = {
            'float32': replay_ms(backends['torch cuda graph']),
            'tf32': replay_ms(backends['torch cuda graph, tf32'])}
    report['latency_ms'] = {}
    for label, values in times.items():
        p50, p99 = np.percentile(values, [50, 99])
        report['latency_ms'][label] = {'p50': float(p50), 'p99': float(p99)}
        print(f'{label:24s} infer() p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  ({FRAMES} frames)')
    print('graph replay alone (CUDA events):', json.dumps(report['graph_replay_ms']))
    baseline = report['latency_ms']['torch cpu']['p50']
    graph = report['latency_ms']['torch cuda graph']['p50']
    ort = report['latency_ms']['onnxruntime cpu']['p50']
    print(f'ratio: torch cuda graph is {baseline / graph:.2f}x faster than torch cpu '
          f'({cpu["threads"]} threads) and {ort / graph:.2f}x faster than onnxruntime cpu at '
          f'p50; torch {torch.__version__}, {info.get("device")}')
    if json_path:
        Path(json_path).write_text(json.dumps(json_finite(report), indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--json', help='write every figure to this file')
    parser.add_argument('--feeds', help='an npz of model inputs from --save-feeds')
    parser.add_argument('--save-feeds', metavar='NPZ',
                        help='write demo-bag inputs here (needs rosbags) and exit')
    args = parser.parse_args(argv)
    try:
        if args.save_feeds:
            np.savez_compressed(args.save_feeds, **demo_bag_inputs())
        else:
            run(args.json, args.feeds)
    except ImportError as error:
        print(f'error: {error}; --save-feeds reads the demo bag with rosbags and the ROS '
              'message packages (make venv installs them)', file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
