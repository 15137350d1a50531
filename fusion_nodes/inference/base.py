"""The one interface every inference backend implements (Polygraphy's runner pattern).

Backends are cheap to construct; the expensive work (loading a session, building or
deserialising an engine, allocating buffers) happens in activate(), and everything is
released explicitly in deactivate(), never in a finaliser. Use them as context managers:

    with make_backend('onnxruntime', 'models/gated_fusion.json') as backend:
        outputs = backend.infer(feed)
"""

from abc import ABC, abstractmethod
import time
from typing import Mapping

import numpy as np

from fusion_nodes.inference.metadata import ModelMetadata


class Backend(ABC):
    """Runs one model: a feed dict of named arrays in, a dict of named arrays out.

    Subclasses override _activate_impl, _infer_impl and _deactivate_impl, not the public
    methods, so that state checks, input checks and timing live in one place.
    """

    name = 'backend'

    def __init__(self, metadata: ModelMetadata) -> None:
        if not isinstance(metadata, ModelMetadata):
            raise ValueError(f'{type(self).__name__} needs a ModelMetadata, '
                             f'got {type(metadata).__name__}')
        self.metadata = metadata
        self.is_active = False
        self.last_latency_s: float | None = None
        self._input_metadata = {
            spec['name']: (tuple(spec['shape']), np.dtype(spec['dtype']))
            for spec in metadata.inputs}

    @property
    def input_metadata(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Input name -> (shape, dtype), in the model's input order."""
        return dict(self._input_metadata)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(spec['name'] for spec in self.metadata.outputs)

    def describe(self) -> str:
        """What actually runs the model, for logs and /diagnostics (the runtime's name here)."""
        return self.name

    def activate(self) -> None:
        """Load the model and allocate what inference needs; idempotent."""
        if self.is_active:
            return
        try:
            self._activate_impl()
        except BaseException:
            # Free whatever was allocated before the failure; the original error wins.
            try:
                self._deactivate_impl()
            except Exception:  # noqa: BLE001 - secondary cleanup error, original re-raised
                pass
            raise
        self.is_active = True

    def deactivate(self) -> None:
        """Release sessions, engines and buffers; idempotent."""
        if not self.is_active:
            return
        try:
            self._deactivate_impl()
        finally:
            self.is_active = False

    def infer(self, feed: Mapping[str, np.ndarray],
              check_inputs: bool = True) -> dict[str, np.ndarray]:
        """Run one inference; returns output name -> array, in the model's output order.

        Backends may reuse their output buffers between calls, so the arrays returned are
        only valid until the next infer(); copy them to keep them longer.
        check_inputs=False skips the name, shape and dtype checks (the caller guarantees them).
        """
        if not self.is_active:
            raise ValueError(f'{type(self).__name__}.infer() called before activate()')
        if check_inputs:
            self.check_feed(feed)
        started = time.perf_counter()
        outputs = self._infer_impl(feed)
        self.last_latency_s = time.perf_counter() - started
        return outputs

    def check_feed(self, feed: Mapping[str, np.ndarray]) -> None:
        """Raise ValueError naming every input that is missing, unexpected or ill-formed."""
        if not isinstance(feed, Mapping):
            raise ValueError(f'feed must be a mapping of input name to array, '
                             f'got {type(feed).__name__}')
        problems = []
        missing = [name for name in self._input_metadata if name not in feed]
        if missing:
            problems.append(f'missing inputs {missing}')
        unexpected = sorted(set(feed) - set(self._input_metadata))
        if unexpected:
            problems.append(f'unexpected inputs {unexpected} '
                            f'(the model takes {list(self._input_metadata)})')
        for name, (shape, dtype) in self._input_metadata.items():
            if name not in feed:
                continue
            value = feed[name]
            if not isinstance(value, np.ndarray):
                problems.append(f'{name} is a {type(value).__name__}, not a numpy array')
                continue
            if value.shape != shape:
                problems.append(f'{name} has shape {list(value.shape)}, expected {list(shape)}')
            if value.dtype != dtype:
                problems.append(f'{name} has dtype {value.dtype}, expected {dtype}')
        if problems:
            raise ValueError(f'invalid feed for {self.metadata.name}: ' + '; '.join(problems))

    def __enter__(self) -> 'Backend':
        self.activate()
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        self.deactivate()

    @abstractmethod
    def _activate_impl(self) -> None:
        """Load and allocate; raise on any mismatch with the metadata."""

    @abstractmethod
    def _infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on a checked feed."""

    @abstractmethod
    def _deactivate_impl(self) -> None:
        """Free everything _activate_impl allocated."""
