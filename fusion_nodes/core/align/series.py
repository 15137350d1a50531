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


class StampRing:
    """The newest `capacity` int ns stamps as one contiguous array view, oldest first.

    Twice the capacity is allocated and the live stamps are moved to the front only when the
    end is reached, so append, drop_oldest and view are O(1) amortised and view() never
    copies: the matcher reads it on every frame.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f'stamp ring capacity must be positive, got {capacity}')
        self._buffer = np.zeros(2 * capacity, np.int64)
        self._start = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def clear(self) -> None:
        self._start = 0
        self._size = 0

    def append(self, stamp_ns: int) -> None:
        end = self._start + self._size
        if end == self._buffer.size:
            self._buffer[:self._size] = self._buffer[self._start:end]
            self._start, end = 0, self._size
        if self._size == self._buffer.size // 2:
            self._start += 1  # full: the oldest goes
            self._size -= 1
        self._buffer[end] = stamp_ns
        self._size += 1

    def drop_oldest(self) -> None:
        if self._size:
            self._start += 1
            self._size -= 1

    def newest(self) -> int:
        if self._size == 0:
            raise ValueError('the stamp ring is empty')
        return int(self._buffer[self._start + self._size - 1])

    def view(self) -> np.ndarray:
        """The stamps oldest first; valid until the next append."""
        return self._buffer[self._start:self._start + self._size]
