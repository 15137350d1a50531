"""Online multi-stream aligner: DTW matching on offset-corrected stamps, bounded added wait.

Every reference frame (camera by default) is emitted once, with the best sample of each other
stream or None, as soon as no better sample can still arrive, and never later than max_wait
after the frame arrived. A stream sample's stamp is de-jittered (PeriodFit) and moved into the
reference clock by subtracting that stream's estimated offset; the match is then read off a
banded, monotone DTW over the last few reference frames (dtw.match_last). Offsets come from
the motion signatures (offset.py), re-estimated every reestimate_period_ns of reference time,
one stream per call, so the cost is spread over calls: inside poll(), or in update_offsets()
for a caller that runs it after its outputs are out (fusion_node does).

Time is int ns. stamp is the sensor's header stamp (its own clock); arrival is the receiver's
clock (when the message reached us). The two are never compared directly.
"""

import bisect
from collections import deque
from dataclasses import dataclass, field, replace
import math
import time
from typing import Callable

import numpy as np

from fusion_nodes.core.align.dtw import match_newest_ns, warm_up
from fusion_nodes.core.align.offset import (
    dtw_offset, OffsetEstimate, OffsetTracker, prepare_pair, WindowEstimate)
from fusion_nodes.core.align.period import PeriodFit
from fusion_nodes.core.align.series import SignatureSeries, StampRing
from fusion_nodes.core.align.signatures import GPS_SPAN_NS

RESET_CAUSES = ('time_jump', 'out_of_order')
_INT64_MIN, _INT64_MAX = -2 ** 63, 2 ** 63 - 1


@dataclass(frozen=True)
class AlignerConfig:
    """Aligner settings; every duration in int ns.

    difference_signatures: streams whose signature compares a message with the previous one
    (it is placed midway between the two stamps and scaled to one period).
    min_correction_ns: a locked estimate within this of the stream's prior is not applied
    (the prior stays in force); for clocks known to be in sync, set it to the estimate's
    error band.
    signature_delay_ns: per stream, how far the signature's effective time lies after the
    stamp's capture instant (a spinning lidar's sweep centre is half a period after its start;
    the GPS track speed belongs to the middle of its span, half a span before the stamp).
    prior_offsets_ns: per stream, a calibrated offset (stamp minus reference-clock capture
    time) applied while that stream's online estimate is not locked; a lock replaces it.
    """

    reference: str = 'camera'
    streams: tuple[str, ...] = ('lidar', 'gps')
    max_wait_ns: int = 33_333_333
    buffer_len: int = 64
    max_residual_ns: int = 500_000_000
    match_window: int = 8
    match_band_ns: int = 600_000_000
    # 25 s: on validation seeds 10000-10002 (2026-12-04) 15, 20, 25 and 30 s windows gave
    # offset RMSE 51.8, 44.5, 36.2 and 34.7 ms and pairing 0.956-0.958, 0.951 at 30 s.
    offset_window_ns: int = 25_000_000_000
    offset_grid_ns: int = 5_000_000
    max_offset_ns: int = 300_000_000
    reestimate_period_ns: int = 500_000_000
    smoothing_ns: tuple[tuple[str, int], ...] = (('camera', 100_000_000),
                                                 ('lidar', 100_000_000), ('gps', 250_000_000))
    min_correlation: float = 0.6
    flat_rel_std: float = 1e-3
    estimate_history: int = 5
    hold_decay: float = 0.9
    lock_windows: int = 4
    # Metric signatures pin a 25 s window's lag to about +-20-40 ms (p50) on generator drives:
    # agreement within 40 ms locks, and pairing tolerates that (a prior 40 ms off still
    # paired every frame right on seed 11000's grid).
    lock_spread_ns: int = 40_000_000
    # Least rise of the normalised shifted MSE 10 ms either side of a window's minimum (see
    # offset.lag_sharpness). Off by default: on the metric signatures it did not separate
    # good windows from bad ones (median 3.0e-5 in both, validation seeds).
    min_sharpness: float = 0.0
    min_window_fill: float = 0.5
    # Per stream, over min_window_fill. On validation seeds 10000-10002 (2026-12-04, rigid
    # lidar fit): a lidar counting from 0.2 of a window (5 s) and GPS from 0.4 paired 0.970
    # against 0.958 with 0.5 for both, offset RMSE 29.9 against 30.5 ms, max 118 ms in both;
    # GPS from 0.3 or 0.2 locked a window 260 ms off (its receiver error wanders over 10-120 s).
    min_window_fill_per_stream: tuple[tuple[str, float], ...] = (('lidar', 0.2), ('gps', 0.4))
    # A window in which either series has no signature for this long is refused (a camera
    # blackout interpolated over locked the demo bag's offsets 150-300 ms off).
    max_signature_gap_ns: int = 1_000_000_000
    min_correction_ns: int = 0
    unlocked_raw_stamps: bool = True
    jump_threshold_ns: int = 1_000_000_000
    out_of_order_reset: int = 3
    difference_signatures: tuple[str, ...] = ('camera', 'lidar')
    signature_delay_ns: tuple[tuple[str, int], ...] = (('lidar', 50_000_000),
                                                       ('gps', -GPS_SPAN_NS // 2))
    dejitter: bool = True
    latency_margin_ns: int = 2_000_000
    signature_capacity: int = 1024
    prior_offsets_ns: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if not self.reference or not isinstance(self.reference, str):
            raise ValueError('reference must be a stream name')
        if len(set(self.streams)) != len(self.streams) or self.reference in self.streams:
            raise ValueError(f'streams {self.streams} must be distinct and exclude the '
                             f'reference {self.reference!r}')
        positive = ('buffer_len', 'max_residual_ns', 'match_window', 'match_band_ns',
                    'offset_window_ns', 'offset_grid_ns', 'reestimate_period_ns',
                    'max_signature_gap_ns',
                    'estimate_history', 'lock_windows', 'lock_spread_ns',
                    'jump_threshold_ns', 'out_of_order_reset',
                    'signature_capacity')
        for name in positive:
            if int(getattr(self, name)) <= 0:
                raise ValueError(f'{name} must be positive, got {getattr(self, name)}')
        for name in ('max_wait_ns', 'max_offset_ns', 'latency_margin_ns', 'min_correction_ns'):
            if int(getattr(self, name)) < 0:
                raise ValueError(f'{name} must be non-negative, got {getattr(self, name)}')
        if self.offset_window_ns < 16 * self.offset_grid_ns:
            raise ValueError('offset_window_ns must hold at least 16 grid steps')
        if self.max_offset_ns >= self.offset_window_ns // 2:
            raise ValueError('max_offset_ns must be under half of offset_window_ns')
        for name in ('min_correlation', 'hold_decay', 'min_window_fill'):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f'{name} must be in [0, 1], got {getattr(self, name)}')
        for name, value in self.min_window_fill_per_stream:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f'min_window_fill for {name!r} must be in [0, 1], got {value}')
        if self.flat_rel_std < 0.0 or math.isnan(self.min_sharpness):
            raise ValueError('flat_rel_std must be non-negative and min_sharpness a number')
        known = set(self.streams) | {self.reference}
        for name, _ in (self.smoothing_ns + self.signature_delay_ns
                        + self.min_window_fill_per_stream):
            if name not in known:
                raise ValueError(f'unknown stream {name!r} in per-stream settings')
        for name, value in self.prior_offsets_ns:
            if name not in self.streams:
                raise ValueError(f'prior offset for {name!r}, which is not one of the aligned '
                                 f'streams {self.streams}')
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f'prior offset for {name!r} must be integer ns, got {value!r}')

    def per_stream(self, table: tuple[tuple[str, int], ...], stream: str) -> int:
        return int(dict(table).get(stream, 0))


@dataclass(frozen=True, slots=True)
class Match:
    """A stream sample matched to a reference frame; corrected_ns is in the reference clock."""

    stamp_ns: int
    corrected_ns: int
    residual_ns: int
    arrival_ns: int
    payload: object


@dataclass(frozen=True, slots=True)
class AlignedFrame:
    """One reference frame with its matches (None = missing) and when it was emitted."""

    stamp_ns: int
    arrival_ns: int
    payload: object
    matches: dict[str, Match | None]
    emitted_ns: int

    @property
    def added_wait_ns(self) -> int:
        return self.emitted_ns - self.arrival_ns


@dataclass(slots=True)
class _Sample:
    stamp: int
    dejittered: int
    arrival: int
    payload: object


@dataclass
class _Stream:
    name: str
    cfg: AlignerConfig
    fit: PeriodFit = field(default_factory=PeriodFit)
    samples: deque = field(default_factory=deque)
    stamps: set = field(default_factory=set)
    last_stamp: int | None = None
    last_arrival: int | None = None
    prev_sig_time: int | None = None
    latency: deque = field(default_factory=lambda: deque(maxlen=32))
    out_of_order_run: int = 0
    series: SignatureSeries | None = None
    dejittered: StampRing | None = None  # the samples' de-jittered stamps, for the matcher

    def __post_init__(self) -> None:
        self.series = SignatureSeries(self.cfg.signature_capacity)
        self.dejittered = StampRing(self.cfg.buffer_len + 1)

    def clear(self) -> None:
        self.fit = PeriodFit()
        self.samples.clear()
        self.dejittered.clear()
        self.stamps.clear()
        self.last_stamp = None
        self.last_arrival = None
        self.prev_sig_time = None
        self.latency.clear()
        self.out_of_order_run = 0
        self.series.clear()


class StreamAligner:
    """Aligns config.streams to config.reference; feed with push(), drain with poll()."""

    def __init__(self, config: AlignerConfig = AlignerConfig(),
                 window_estimator: Callable[..., WindowEstimate] = dtw_offset) -> None:
        """window_estimator(x, y, step_ns, max_lag) -> WindowEstimate; DTW unless replaced."""
        self.config = config
        self._window_estimator = window_estimator
        warm_up()
        names = (config.reference,) + tuple(config.streams)
        self._streams = {name: _Stream(name, config) for name in names}
        # Looked up per message, so resolved once here.
        self._signature_delay = {n: config.per_stream(config.signature_delay_ns, n)
                                 for n in names}
        self._priors = {n: config.per_stream(config.prior_offsets_ns, n) for n in names}
        self._min_fill = {n: dict(config.min_window_fill_per_stream).get(n, config.min_window_fill)
                          for n in names}
        self._trackers = {name: OffsetTracker(config.estimate_history, config.min_correlation,
                                              config.hold_decay, config.lock_windows,
                                              config.lock_spread_ns, config.min_sharpness)
                          for name in config.streams}
        # What the matcher applies per stream, read several times per message: worked out
        # again only when a tracker changes (an estimate or a reset).
        self._applied = {n: (self._priors[n], False) for n in names}
        self._pending: deque[_Sample] = deque()
        self._emitted_refs = StampRing(max(1, config.match_window - 1))
        self._ready: list[AlignedFrame] = []
        self._last_arrival: int | None = None
        self._next_estimate: dict[str, int | None] = {name: None for name in config.streams}
        self._counters = {
            'resets_time_jump': 0, 'resets_out_of_order': 0, 'out_of_order': 0,
            'duplicates': 0, 'late': 0, 'missing': 0, 'matched': 0, 'emitted': 0,
            'no_signature': 0, 'estimates_run': 0, 'estimates_accepted': 0,
            'estimates_flat': 0, 'estimates_gap': 0, 'emitted_at_deadline': 0, 'wait_delivered': 0}
        self.estimate_us: deque[float] = deque(maxlen=4096)

    # ---- input -------------------------------------------------------------------------

    def push(self, stream: str, stamp_ns: int, arrival_ns: int, signature: float,
             payload: object) -> None:
        """Add one message; raises ValueError for an unknown stream or non-integer times."""
        state = self._streams.get(stream)
        if state is None:
            raise ValueError(f'unknown stream {stream!r}; expected one of {list(self._streams)}')
        stamp_ns = _as_ns(stamp_ns, 'stamp_ns')
        arrival_ns = _as_ns(arrival_ns, 'arrival_ns')
        if self._last_arrival is not None and \
                arrival_ns < self._last_arrival - self.config.jump_threshold_ns:
            # The receiver clock itself went back (bag loop under sim time): start over.
            self._reset_all('time_jump')
            self._last_arrival = None  # the rewound clock is the new reference, not the old max
        self._last_arrival = arrival_ns if self._last_arrival is None else max(
            self._last_arrival, arrival_ns)
        if not self._accept_order(state, stamp_ns, arrival_ns):
            return
        dejittered = state.fit.push(stamp_ns) if self.config.dejitter else stamp_ns
        state.last_stamp = stamp_ns
        state.last_arrival = arrival_ns
        self._add_signature(state, dejittered, signature)
        offset = self._offset(stream)
        state.latency.append(arrival_ns - (dejittered - offset))
        sample = _Sample(stamp_ns, dejittered, arrival_ns, payload)
        if stream == self.config.reference:
            self._pending.append(sample)
            return
        if self._emitted_refs and dejittered - offset < self._emitted_refs.newest():
            self._counters['late'] += 1
        state.samples.append(sample)
        state.dejittered.append(dejittered)
        state.stamps.add(stamp_ns)
        if len(state.samples) > self.config.buffer_len:
            state.stamps.discard(state.samples.popleft().stamp)
            state.dejittered.drop_oldest()

    def _accept_order(self, state: _Stream, stamp_ns: int, arrival_ns: int) -> bool:
        """Apply the time-jump, duplicate and out-of-order rules; False drops the message."""
        if state.last_stamp is None:
            return True
        step = stamp_ns - state.last_stamp
        threshold = self.config.jump_threshold_ns
        if step < -threshold or step - (arrival_ns - state.last_arrival) > threshold:
            # A stamp far behind (clock step back, bag loop) or far ahead of what the
            # receiver clock allows (clock step forward): the old timeline is void.
            self._reset_stream(state, 'time_jump')
            return True
        if stamp_ns == state.last_stamp or stamp_ns in state.stamps:
            self._counters['duplicates'] += 1
            return False
        if step < 0:
            self._counters['out_of_order'] += 1
            state.out_of_order_run += 1
            if state.out_of_order_run >= self.config.out_of_order_reset:
                self._reset_stream(state, 'out_of_order')
                return True
            return False
        state.out_of_order_run = 0
        return True

    def _add_signature(self, state: _Stream, dejittered: int, signature: float) -> None:
        cfg = self.config
        try:
            value = float(signature)
        except (TypeError, ValueError, OverflowError):
            value = math.nan
        if not math.isfinite(value):
            self._counters['no_signature'] += 1
            state.prev_sig_time = dejittered
            return
        delay = self._signature_delay[state.name]
        if state.name in cfg.difference_signatures:
            prev, state.prev_sig_time = state.prev_sig_time, dejittered
            if prev is None or dejittered <= prev:
                return
            period = state.fit.period_ns
            if period:
                # A drop doubles the interval and so the change; scale back to one period.
                value *= period / (dejittered - prev)
            state.series.append((prev + dejittered) // 2 + delay, value)
        else:
            state.series.append(dejittered + delay, value)

    # ---- output ------------------------------------------------------------------------

    def poll(self, now_ns: int, estimate: bool = True) -> list[AlignedFrame]:
        """Reference frames that are complete or whose max_wait has run out, oldest first.

        With estimate, a window estimate that is due runs first, so these frames use it. A
        caller that must not hold frames behind it passes False and calls update_offsets()
        once their outputs are out.
        """
        now_ns = _as_ns(now_ns, 'now_ns')
        if estimate:
            self._maybe_estimate()
        out, self._ready = self._ready, []
        if not self._pending:
            return out
        still: deque[_Sample] = deque()
        reach: dict[str, tuple[int, float] | None] = {}
        for frame in self._pending:
            deadline = frame.arrival + self.config.max_wait_ns
            if now_ns >= deadline:
                self._counters['emitted_at_deadline'] += 1
                out.append(self._emit(frame, now_ns))
            elif self._complete(frame, reach):
                out.append(self._emit(frame, now_ns))
            else:
                still.append(frame)
        self._pending = still
        return out

    def next_deadline_ns(self) -> int | None:
        """Receiver time by which poll() must be called again, or None with nothing pending."""
        if not self._pending:
            return None
        return min(f.arrival for f in self._pending) + self.config.max_wait_ns

    def offsets(self) -> dict[str, OffsetEstimate]:
        """The offset the matcher applies to each non-reference stream.

        The online estimate once locked (valid); before that the configured prior (0 without
        one), reported with valid False.
        """
        out = {}
        for name, tracker in self._trackers.items():
            offset, corrects = self._matcher_offset(name)
            out[name] = (tracker.estimate if corrects else
                         replace(tracker.estimate, offset_ns=offset, valid=False))
        return out

    def stats(self) -> dict[str, int]:
        """Counters since construction: resets by cause, order faults, late, missing, etc."""
        out = dict(self._counters)
        out['offset_locks'] = sum(t.locks for t in self._trackers.values())
        out['offset_unlocks'] = sum(t.unlocks for t in self._trackers.values())
        return out

    def _offset(self, stream: str) -> int:
        return self._matcher_offset(stream)[0]

    def _matcher_offset(self, stream: str) -> tuple[int, bool]:
        """(offset the matcher applies to the stream, whether it is the locked estimate)."""
        return self._applied[stream]

    def _refresh_applied(self, stream: str) -> None:
        """Unconfirmed online estimates never reach the matcher: until the gate locks, the
        calibrated prior (or 0) is used."""
        tracker = self._trackers[stream]
        prior = self._priors[stream]
        corrects = (tracker.locked and abs(tracker.estimate.offset_ns - prior)
                    > self.config.min_correction_ns)
        self._applied[stream] = (tracker.estimate.offset_ns if corrects else prior), corrects

    def _reach(self, name: str) -> tuple[int, float] | None:
        """A stream's newest corrected stamp, and the earliest receiver time its next sample
        could arrive (None while it has no samples or latency).

        The next sample is at least min_next_step newer (a period less its jitter) and cannot
        beat the fastest transport seen lately.
        """
        state = self._streams[name]
        if not state.samples or not state.latency:
            return None
        newest = state.samples[-1].dejittered - self._offset(name)
        return newest, (newest + state.fit.min_next_step_ns() + min(state.latency)
                        - self.config.latency_margin_ns)

    def _complete(self, frame: _Sample, reach: dict[str, tuple[int, float] | None]) -> bool:
        """True when no stream can still deliver a better match before the deadline.

        reach caches _reach per stream for one poll: it is the same for every pending frame.
        """
        deadline = frame.arrival + self.config.max_wait_ns
        for name in self.config.streams:
            if name not in reach:
                reach[name] = self._reach(name)
            stream = reach[name]
            if stream is None:
                return False
            newest, earliest = stream
            if newest >= frame.dejittered:
                continue  # in-order streams: everything up to the frame has arrived
            if earliest <= deadline:
                return False  # it may still come in time
        return True

    def _emit(self, frame: _Sample, now_ns: int) -> AlignedFrame:
        cfg = self.config
        matches: dict[str, Match | None] = {}
        waited = False
        for name in cfg.streams:
            state = self._streams[name]
            match = None
            if state.samples:
                offset, corrects = self._matcher_offset(name)
                if corrects:
                    j = match_newest_ns(self._emitted_refs.view(), frame.dejittered,
                                        state.dejittered.view(), offset, cfg.match_band_ns)
                elif cfg.unlocked_raw_stamps:
                    # No confirmed offset: the nearest stamp, as a stamp-trusting matcher would,
                    # shifted by the calibrated prior if there is one.
                    j = _nearest_stamp(state.samples, frame.stamp + offset)
                else:
                    j = int(np.argmin(np.abs(state.dejittered.view()
                                             - (frame.dejittered + offset))))
                if j >= 0:
                    s = state.samples[j]
                    corrected_j = s.dejittered - offset
                    residual = corrected_j - frame.dejittered
                    if abs(residual) <= cfg.max_residual_ns:
                        match = Match(s.stamp, corrected_j, residual, s.arrival, s.payload)
            matches[name] = match
            if match is None:
                self._counters['missing'] += 1
            else:
                self._counters['matched'] += 1
                waited = waited or match.arrival_ns > frame.arrival
        if waited:
            self._counters['wait_delivered'] += 1  # a match that came while the frame waited
        if not self._emitted_refs or frame.dejittered > self._emitted_refs.newest():
            self._emitted_refs.append(frame.dejittered)
        self._counters['emitted'] += 1
        return AlignedFrame(frame.stamp, frame.arrival, frame.payload, matches, now_ns)

    # ---- offset estimation ---------------------------------------------------------------

    def update_offsets(self) -> bool:
        """Run the window estimate that is due, if any (at most one); True if one ran."""
        return self._maybe_estimate()

    def _maybe_estimate(self) -> bool:
        cfg = self.config
        newest = self._streams[cfg.reference].series.last_time()
        if newest is None:
            return False
        for k, name in enumerate(cfg.streams):
            due = self._next_estimate[name]
            if due is None:
                # Stagger the streams so one poll never runs two estimates.
                stagger = k * cfg.reestimate_period_ns // max(1, len(cfg.streams))
                self._next_estimate[name] = newest + cfg.reestimate_period_ns + stagger
                continue
            if newest >= due:
                self._next_estimate[name] = newest + cfg.reestimate_period_ns
                start = time.perf_counter()
                self.estimate_now(name, newest)
                self.estimate_us.append((time.perf_counter() - start) * 1e6)
                return True
        return False

    def estimate_now(self, stream: str, end_ns: int) -> WindowEstimate:
        """Run one window estimate for a stream ending at end_ns (reference clock); fold it in."""
        cfg = self.config
        ref_t, ref_v = self._streams[cfg.reference].series.arrays()
        st_t, st_v = self._streams[stream].series.arrays()
        smooth_ns = max(cfg.per_stream(cfg.smoothing_ns, cfg.reference),
                        cfg.per_stream(cfg.smoothing_ns, stream))
        self._counters['estimates_run'] += 1
        pair = prepare_pair(ref_t, ref_v, st_t, st_v, end_ns, cfg.offset_window_ns,
                            cfg.offset_grid_ns, smooth_ns, cfg.flat_rel_std,
                            cfg.max_signature_gap_ns)
        if isinstance(pair, str):
            window = WindowEstimate(0.0, 0.0, False, pair)
            if pair == 'flat signal':
                self._counters['estimates_flat'] += 1
            elif pair == 'gap in the signatures':
                self._counters['estimates_gap'] += 1
        elif pair[0].size * cfg.offset_grid_ns < self._min_fill[stream] * cfg.offset_window_ns:
            # Short windows just after a start or reset look sharp and are often wrong.
            window = WindowEstimate(0.0, 0.0, False, 'window not full')
        else:
            window = self._window_estimator(pair[0], pair[1], cfg.offset_grid_ns,
                                            cfg.max_offset_ns // cfg.offset_grid_ns)
        if self._trackers[stream].update(window):
            self._counters['estimates_accepted'] += 1
        self._refresh_applied(stream)
        return window

    # ---- resets --------------------------------------------------------------------------

    def _reset_stream(self, state: _Stream, cause: str) -> None:
        self._counters[f'resets_{cause}'] += 1
        now = state.last_arrival if state.last_arrival is not None else 0
        state.clear()
        if state.name == self.config.reference:
            # Every offset is relative to the reference clock, so they all restart; frames
            # still pending are matched now, before the old timeline is dropped.
            self._ready.extend(self._emit(f, max(now, f.arrival)) for f in self._pending)
            self._pending.clear()
            self._emitted_refs.clear()
            for name in self.config.streams:
                self._trackers[name].reset()
                self._refresh_applied(name)
                self._next_estimate[name] = None
        else:
            self._trackers[state.name].reset()
            self._refresh_applied(state.name)
            self._next_estimate[state.name] = None

    def _reset_all(self, cause: str) -> None:
        self._reset_stream(self._streams[self.config.reference], cause)
        for name in self.config.streams:
            self._streams[name].clear()


def _nearest_stamp(samples: deque, stamp: int) -> int:
    """Index of the sample with the nearest stamp (the earlier one on a tie).

    Samples are in strictly increasing stamp order: out-of-order and duplicate stamps are dropped
    and a reset clears the buffer.
    """
    i = bisect.bisect_left(samples, stamp, key=_stamp_of)
    if i == 0:
        return 0
    if i == len(samples) or stamp - samples[i - 1].stamp <= samples[i].stamp - stamp:
        return i - 1
    return i


def _stamp_of(sample: _Sample) -> int:
    return sample.stamp


def _as_ns(value: int, what: str) -> int:
    if isinstance(value, (bool, float)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f'{what} must be an integer number of nanoseconds, got {value!r}')
    if not _INT64_MIN <= int(value) <= _INT64_MAX:
        raise ValueError(f'{what} {value} is outside the int64 nanosecond range')
    return int(value)
