"""Fixed-capacity ring of (time ns, value) signature samples, read back in time order."""

import numpy as np


class SignatureSeries:
    """Keeps the newest `capacity` samples; appends are O(1), reads copy."""

    def __init__(self, capacity: int) -> None:
        if capacity < 8:
            raise ValueError(f'signature capacity must be at least 8, got {capacity}')
        self._t = np.zeros(capacity, np.int64)
        self._v = np.zeros(capacity, np.float64)
        self._head = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def clear(self) -> None:
        self._head = 0
        self._size = 0

    def last_time(self) -> int | None:
        if self._size == 0:
            return None
        return int(self._t[self._head - 1])

    def append(self, t_ns: int, value: float) -> None:
        self._t[self._head] = t_ns
        self._v[self._head] = value
        self._head = (self._head + 1) % self._t.size
        self._size = min(self._size + 1, self._t.size)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(times, values) oldest first."""
        if self._size < self._t.size:
            return self._t[:self._size].copy(), self._v[:self._size].copy()
        order = np.r_[self._head:self._t.size, 0:self._head]
        return self._t[order], self._v[order]
