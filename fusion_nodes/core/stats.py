"""Rolling statistics for processing times, rates and rejection counts."""

from collections import Counter, deque

import numpy as np


class RollingPercentiles:
    """Keeps the last `size` samples and reports percentiles over them."""

    def __init__(self, size: int = 1000) -> None:
        if size <= 0:
            raise ValueError(f'window size must be positive, got {size}')
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._samples.append(float(value))

    def __len__(self) -> int:
        return len(self._samples)

    def percentile(self, q: float) -> float:
        """q-th percentile, NaN with no samples."""
        if not self._samples:
            return float('nan')
        return float(np.percentile(np.fromiter(self._samples, float), q))

    def clear(self) -> None:
        self._samples.clear()


class RejectionCounter:
    """Counts rejected inputs by reason so that nothing is lost silently."""

    def __init__(self) -> None:
        self.by_reason: Counter[str] = Counter()

    def add(self, reason: str) -> None:
        self.by_reason[reason] += 1

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())
