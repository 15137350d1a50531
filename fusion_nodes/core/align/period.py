"""Stamp de-jittering for periodic sensors: an exponentially weighted line fit of stamp on index.

Cameras and lidars sample on a fixed period, so their true capture times lie on a line;
software stamping adds white jitter and a clock adds drift. Each stamp gets its sample index
(counting dropped samples from the gap to the fit's prediction) and is replaced by the fitted
line at that index, which removes most of the jitter and follows drift. When the residuals
show the stream is not periodic after all, the raw stamps are passed through unchanged.
"""

import math

_WARMUP_DIFFS = 8


class PeriodFit:
    """Online fit stamp ~ a + b * index with forgetting factor alpha (int ns in, int ns out)."""

    def __init__(self, alpha: float = 1.0 / 64.0, max_rel_residual: float = 0.25) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f'alpha must be in (0, 1), got {alpha}')
        self.alpha = alpha
        self.max_rel_residual = max_rel_residual
        self._anchor: int | None = None
        self._diffs: list[int] = []
        self.period_ns: float | None = None
        self._index = 0
        self._last_rel = 0.0
        self._mk = self._ms = self._ckk = self._cks = 0.0
        self._resid_var = 0.0
        self._count = 0

    @property
    def periodic(self) -> bool:
        """Whether stamps are being replaced by the fitted line."""
        return (self.period_ns is not None and self._count > _WARMUP_DIFFS
                and math.sqrt(self._resid_var) <= self.max_rel_residual * self.period_ns)

    def min_next_step_ns(self) -> float:
        """Least plausible gap from the last de-jittered stamp to the next one (0 if unknown).

        On a periodic stream that is the fitted period less three residual deviations; otherwise
        half the period, since without a fit the next stamp may come early.
        """
        if self.period_ns is None:
            return 0.0
        if not self.periodic:
            return 0.5 * self.period_ns
        return max(0.5 * self.period_ns, self._slope() - 3.0 * math.sqrt(self._resid_var))

    def _slope(self) -> float:
        if self._ckk > 1e-9 and self._count > 3:
            return self._cks / self._ckk
        return self.period_ns or 1.0

    def _fitted(self, index: float) -> float:
        return self._ms + self._slope() * (index - self._mk)

    def push(self, stamp_ns: int) -> int:
        """Fold one in-order stamp in; returns its de-jittered stamp."""
        if self._anchor is None:
            self._anchor = int(stamp_ns)
            self._observe(0, 0.0)
            return int(stamp_ns)
        rel = float(int(stamp_ns) - self._anchor)
        if self.period_ns is None:
            diff = rel - self._last_rel
            if diff > 0:
                self._diffs.append(int(diff))
            typical = sorted(self._diffs)[len(self._diffs) // 2] if self._diffs else 0
            # Counting indices with the running median period already covers a single drop.
            step = max(1, round(diff / typical)) if typical > 0 else 1
            if len(self._diffs) >= _WARMUP_DIFFS:
                self.period_ns = float(typical)
            self._observe(self._index + step, rel)
            return int(stamp_ns)
        slope = self._slope()
        gap = (rel - self._fitted(self._index)) / slope if slope > 0 else 1.0
        step = max(1, round(gap)) if math.isfinite(gap) else 1
        predicted = self._fitted(self._index + step)
        self._resid_var += self.alpha * ((rel - predicted) ** 2 - self._resid_var)
        self._observe(self._index + step, rel)
        if not self.periodic:
            return int(stamp_ns)
        return self._anchor + int(round(self._fitted(self._index)))

    def _observe(self, index: int, rel: float) -> None:
        self._index = index
        self._last_rel = rel
        self._count += 1
        if self._count == 1:
            self._mk, self._ms = float(index), rel
            return
        # West's exponentially weighted mean and covariance update (numerically stable).
        a = max(self.alpha, 1.0 / self._count)
        dk = index - self._mk
        ds = rel - self._ms
        self._mk += a * dk
        self._ms += a * ds
        self._ckk = (1.0 - a) * (self._ckk + a * dk * dk)
        self._cks = (1.0 - a) * (self._cks + a * dk * ds)
