"""Per-sensor timing faults: rate, latency, clock offset, jitter, drift and drops.

Conventions (all int ns on the true clock):
- capture: when the sensor really sampled the world; the data is a function of this alone.
- stamp: what the sensor writes in header.stamp,
  ``capture + offset + drift_ppm * 1e-6 * (capture - start) + jitter``.
- arrival: when the message reaches the robot (bag log time), ``capture + latency + |noise|``,
  kept non-decreasing per sensor as a transport would.
"""

from dataclasses import dataclass

import numpy as np

from fusion_nodes.core.config import NS_PER_S

_MS = 1_000_000


@dataclass(frozen=True)
class SensorTiming:
    """Timing of one sensor stream; offset is stamp minus true capture time."""

    rate_hz: float
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    offset_ms: float = 0.0
    jitter_ms: float = 0.0
    drift_ppm: float = 0.0
    drop_prob: float = 0.0
    phase_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.rate_hz <= 0.0:
            raise ValueError(f'rate_hz must be positive, got {self.rate_hz}')
        if not 0.0 <= self.drop_prob < 1.0:
            raise ValueError(f'drop_prob must be in [0, 1), got {self.drop_prob}')
        if self.latency_ms < 0.0 or self.jitter_ms < 0.0 or self.latency_jitter_ms < 0.0:
            raise ValueError('latency and jitter must be non-negative')

    @property
    def period_ns(self) -> int:
        return round(NS_PER_S / self.rate_hz)


@dataclass(frozen=True)
class StreamTimes:
    """Times of the messages a sensor actually delivered (drops removed)."""

    capture_ns: np.ndarray
    stamp_ns: np.ndarray
    arrival_ns: np.ndarray

    def __len__(self) -> int:
        return int(self.capture_ns.size)


def capture_times(timing: SensorTiming, start_ns: int, duration_ns: int) -> np.ndarray:
    """True capture times of every sample the sensor takes over [start, start + duration)."""
    period = timing.period_ns
    first = start_ns + round(timing.phase_ms * _MS) % period
    return np.arange(first, start_ns + duration_ns, period, dtype=np.int64)


def apply_timing(timing: SensorTiming, capture_ns: np.ndarray, start_ns: int,
                 rng: np.random.Generator) -> tuple[StreamTimes, np.ndarray]:
    """Stamp, delay and drop captured samples; returns the delivered times and a keep mask."""
    capture = np.asarray(capture_ns, dtype=np.int64)
    n = capture.size
    jitter = rng.normal(0.0, timing.jitter_ms * _MS, n) if timing.jitter_ms else np.zeros(n)
    jitter = np.clip(jitter, -3.0 * timing.jitter_ms * _MS, 3.0 * timing.jitter_ms * _MS)
    drift = timing.drift_ppm * 1e-6 * (capture - start_ns)
    stamp = capture + round(timing.offset_ms * _MS) + np.round(drift + jitter).astype(np.int64)
    noise = np.abs(rng.normal(0.0, timing.latency_jitter_ms * _MS, n))
    arrival = capture + round(timing.latency_ms * _MS) + np.round(noise).astype(np.int64)
    arrival = np.maximum.accumulate(arrival)
    keep = rng.random(n) >= timing.drop_prob
    return StreamTimes(capture[keep], stamp[keep], arrival[keep]), keep


def schedule(timing: SensorTiming, start_ns: int, duration_ns: int,
             rng: np.random.Generator) -> StreamTimes:
    """Draw the delivered messages of one sensor over [start, start + duration)."""
    times, _ = apply_timing(timing, capture_times(timing, start_ns, duration_ns), start_ns, rng)
    return times
