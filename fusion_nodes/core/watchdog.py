"""Processing-time watchdog: WARN above a budget, ERROR when over it for too long in a row."""

from dataclasses import dataclass

OK, WARN, ERROR = 0, 1, 2


@dataclass(frozen=True)
class WatchdogConfig:
    """warn_ms per frame; error when error_consecutive frames in a row exceed error_ms."""

    warn_ms: float = 25.0
    error_ms: float = 33.0
    error_consecutive: int = 5

    def __post_init__(self) -> None:
        if not 0.0 < self.warn_ms <= self.error_ms:
            raise ValueError('watchdog needs 0 < warn_ms <= error_ms')
        if self.error_consecutive < 1:
            raise ValueError('error_consecutive must be at least 1')


class ProcessingWatchdog:
    """Tracks per-frame processing times; level() is the worst state since the last read."""

    def __init__(self, cfg: WatchdogConfig = WatchdogConfig()) -> None:
        self._cfg = cfg
        self._over_in_row = 0
        self._worst = OK
        self.max_consecutive_over = 0

    def add(self, processing_ms: float) -> int:
        """Record one frame's time and return its level."""
        cfg = self._cfg
        self._over_in_row = self._over_in_row + 1 if processing_ms > cfg.error_ms else 0
        self.max_consecutive_over = max(self.max_consecutive_over, self._over_in_row)
        if self._over_in_row >= cfg.error_consecutive:
            level = ERROR
        elif processing_ms > cfg.warn_ms:
            level = WARN
        else:
            level = OK
        self._worst = max(self._worst, level)
        return level

    def level(self) -> int:
        """Worst level since the previous call (so a 1 Hz report misses no spike)."""
        worst, self._worst = self._worst, OK
        return worst
