"""Hypothesis fuzzing of StreamAligner's inputs: arbitrary push/poll sequences with unknown
streams, bad time types, duplicate, backwards and jumping stamps, receiver-clock rewinds and
NaN/Inf/huge signatures.

Checked after every call: only ValueError, and only for an invalid argument; every accepted
reference frame is emitted exactly once (never a dropped one), matches come from that stream's
pushes; buffers stay within their configured sizes; counters are non-negative and add up. With
a monotone clock polled at least every GAP_NS, no frame is returned after arrival + max_wait.

FUSION_FUZZ_ALIGNER_EXAMPLES (else FUSION_FUZZ_EXAMPLES) sets the cases per test (default
100; `make fuzz` runs 2000: a case is a whole push/poll sequence, 6-160 ms each).
"""

import math
import os

from hypothesis import event, given, HealthCheck, settings, strategies as st
import numpy as np
import pytest

from fusion_nodes.core.align.aligner import AlignerConfig, StreamAligner
from tests.test_conversions_properties import no_hang

pytestmark = pytest.mark.fuzz

FUZZ = settings(max_examples=int(os.environ.get('FUSION_FUZZ_ALIGNER_EXAMPLES') or
                                 os.environ.get('FUSION_FUZZ_EXAMPLES', '100')),
                deadline=2000, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])
MS = 1_000_000
INT62 = 2 ** 62  # stamps within +-146 years of the epoch; beyond int64 is a ValueError

# Defaults (15 s DTW window) and a tiny configuration whose buffers, windows and reset
# thresholds the short sequences below actually exhaust.
CONFIGS = {
    'default': AlignerConfig(),
    'tiny': AlignerConfig(max_wait_ns=20 * MS, buffer_len=3, match_window=2,
                          offset_window_ns=80 * MS, offset_grid_ns=5 * MS, max_offset_ns=30 * MS,
                          reestimate_period_ns=40 * MS, jump_threshold_ns=200 * MS,
                          out_of_order_reset=2, signature_capacity=8, latency_margin_ns=0),
    'no_dejitter_no_wait': AlignerConfig(max_wait_ns=0, dejitter=False, buffer_len=5),
    # Calibrated priors, one of them beyond the residual limit and the jump threshold.
    'priors': AlignerConfig(prior_offsets_ns=(('lidar', 80 * MS), ('gps', -2_000 * MS))),
}
STREAMS = ('camera', 'lidar', 'gps')

SIGNATURES = st.one_of(
    st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324]),
    st.integers(-2 ** 64, 2 ** 64), st.none(), st.text(max_size=3), st.booleans(),
    st.just(np.float32('nan')), st.just(np.float64(2.5)), st.just(1j), st.just([1.0]))
PAYLOAD_EXTRAS = st.one_of(st.none(), st.integers(), st.text(max_size=3), st.floats())
BAD_TIMES = st.one_of(st.floats(), st.booleans(), st.none(), st.text(max_size=3),
                      st.just(np.float64(1.0)), st.just(b'1'), st.just([1]), st.decimals())
BAD_STREAMS = st.one_of(st.text(max_size=6).filter(lambda s: s not in STREAMS), st.none(),
                        st.integers(), st.just(('camera',)), st.just(b'camera'))


def _is_time(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


class Model:
    """What the fuzzer pushed and what came back, checked against the aligner's contract."""

    def __init__(self, aligner: StreamAligner) -> None:
        self.aligner = aligner
        self.cfg = aligner.config
        self.pushes: dict[int, tuple[str, int]] = {}  # token -> (stream, stamp)
        self.accepted: dict[int, tuple[int, int]] = {}  # ref token -> (arrival, push clock)
        self.emitted: set[int] = set()
        self.returned = 0
        self.last_stamp: dict[str, int] = {}
        self.max_arrival: int | None = None

    def push(self, stream, stamp, arrival, signature, extra, clock: int | None = None) -> None:
        token = len(self.pushes)
        before = self.aligner.stats()
        valid = stream in STREAMS and _is_time(stamp) and _is_time(arrival)
        try:
            self.aligner.push(stream, stamp, arrival, signature, (token, extra))
        except ValueError:
            assert not valid, f'ValueError for a valid push {stream, stamp, arrival}'
            assert self.aligner.stats() == before, 'a rejected push changed the counters'
            self.check()
            return
        assert valid, f'push accepted {stream!r}, {stamp!r}, {arrival!r}'
        self.pushes[token] = (stream, int(stamp))
        rewound = (self.max_arrival is not None
                   and int(arrival) < self.max_arrival - self.cfg.jump_threshold_ns)
        # After a rewind the aligner measures the next one from the new clock, not the old max.
        self.max_arrival = int(arrival) if self.max_arrival is None or rewound else max(
            self.max_arrival, int(arrival))
        self.last_stamp[stream] = int(stamp)
        after = self.aligner.stats()
        grew = {k: after[k] - before[k] for k in after}
        dropped = grew['duplicates'] > 0 or (grew['out_of_order'] > 0
                                             and grew['resets_out_of_order'] == 0)
        assert grew['duplicates'] + grew['out_of_order'] <= 1
        bad = not math.isfinite(_as_float(signature))
        assert grew['no_signature'] == (1 if bad and not dropped else 0)
        if stream == self.cfg.reference:
            pending = self.aligner._pending
            queued = bool(pending) and pending[-1].payload[0] == token
            assert queued == (not dropped), 'counters disagree with what was queued'
            if queued:
                self.accepted[token] = (int(arrival), int(arrival) if clock is None else clock)
        self.check()

    def poll(self, now) -> list:
        before = self.aligner.stats()
        try:
            frames = self.aligner.poll(now)
        except ValueError:
            assert not _is_time(now), f'ValueError for poll({now!r})'
            assert self.aligner.stats() == before
            self.check()
            return []
        assert _is_time(now), f'poll accepted {now!r}'
        for frame in frames:
            token = frame.payload[0]
            assert token in self.accepted, f'frame {token} was never accepted'
            assert token not in self.emitted, f'frame {token} emitted twice'
            self.emitted.add(token)
            assert frame.stamp_ns == self.pushes[token][1]
            assert frame.arrival_ns == self.accepted[token][0]
            assert set(frame.matches) == set(self.cfg.streams)
            for name, match in frame.matches.items():
                if match is None:
                    continue
                stream, stamp = self.pushes[match.payload[0]]
                assert stream == name and match.stamp_ns == stamp
                assert abs(match.residual_ns) <= self.cfg.max_residual_ns
        self.returned += len(frames)
        self.check()
        return frames

    def outstanding(self) -> set[int]:
        return set(self.accepted) - self.emitted

    def check(self) -> None:
        """Bounded buffers and consistent counters after any call."""
        a, cfg = self.aligner, self.cfg
        stats = a.stats()
        assert all(isinstance(v, int) and v >= 0 for v in stats.values()), stats
        assert stats['emitted'] == self.returned + len(a._ready)
        assert stats['matched'] + stats['missing'] == stats['emitted'] * len(cfg.streams)
        assert stats['estimates_accepted'] <= stats['estimates_run']
        assert stats['estimates_flat'] <= stats['estimates_run']
        waiting = {f.payload[0] for f in a._pending} | {f.payload[0] for f in a._ready}
        assert waiting == self.outstanding(), 'a frame was lost or invented'
        assert len(a._emitted_refs) <= max(1, cfg.match_window - 1)
        assert len(a.estimate_us) <= 4096
        for name, state in a._streams.items():
            assert len(state.series) <= cfg.signature_capacity
            assert len(state.latency) <= 32
            if name != cfg.reference:
                assert len(state.samples) <= cfg.buffer_len
                assert state.stamps == {s.stamp for s in state.samples}


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _stamp(data, last: int | None, threshold: int):
    """A stamp relative to the stream's last one: the next period, a duplicate, a step back,
    a jump either way, or anywhere in +-2^62."""
    kind = data.draw(st.sampled_from(
        ['next', 'next', 'next', 'dup', 'back', 'jump', 'absolute', 'edge']))
    if last is None or kind == 'absolute':
        return data.draw(st.integers(-INT62, INT62))
    if kind == 'next':
        return last + data.draw(st.integers(1, 120 * MS))
    if kind == 'dup':
        return last
    if kind == 'back':
        return last - data.draw(st.integers(1, 2 * threshold))
    if kind == 'jump':
        return last + data.draw(st.sampled_from([-1, 1])) * data.draw(
            st.integers(threshold, 10 ** 13))
    return data.draw(st.sampled_from([0, -1, 1, INT62, -INT62]))


@FUZZ
@given(st.sampled_from(sorted(CONFIGS)), st.data())
@no_hang
def test_arbitrary_push_poll_sequences(config_name, data):
    """Any call order, any arguments: ValueError only for bad ones; nothing lost or doubled."""
    model = Model(StreamAligner(CONFIGS[config_name]))
    threshold = model.cfg.jump_threshold_ns
    arrival = data.draw(st.integers(-INT62, INT62))
    for _ in range(data.draw(st.integers(1, 60))):
        op = data.draw(st.sampled_from(['push'] * 6 + ['poll'] * 2 + ['bad_push', 'bad_poll']))
        arrival += data.draw(st.one_of(st.integers(-2 * threshold, 100 * MS),
                                       st.sampled_from([0, 0, -10 ** 13, 10 ** 13])))
        if op == 'push':
            stream = data.draw(st.sampled_from(STREAMS))
            stamp = _stamp(data, model.last_stamp.get(stream), threshold)
            model.push(stream, stamp, arrival, data.draw(SIGNATURES),
                       data.draw(PAYLOAD_EXTRAS))
        elif op == 'poll':
            model.poll(arrival + data.draw(st.integers(-model.cfg.max_wait_ns,
                                                       2 * model.cfg.max_wait_ns)))
        elif op == 'bad_push':
            stream, stamp, when = data.draw(st.sampled_from([
                (BAD_STREAMS, st.integers(-INT62, INT62), st.just(arrival)),
                (st.sampled_from(STREAMS), BAD_TIMES, st.just(arrival)),
                (st.sampled_from(STREAMS), st.integers(-INT62, INT62), BAD_TIMES)]))
            model.push(data.draw(stream), data.draw(stamp), data.draw(when), 1.0, None)
        else:
            model.poll(data.draw(BAD_TIMES))
    # A poll far past every deadline drains everything that was accepted.
    last = max((a for a, _ in model.accepted.values()), default=arrival)
    model.poll(max(arrival, last) + model.cfg.max_wait_ns)
    assert not model.outstanding()
    stats = model.aligner.stats()
    assert stats['emitted'] == len(model.accepted)
    for name, count in stats.items():
        if count and name not in ('emitted', 'missing'):
            event(f'counter {name} > 0')  # shows the paths reached in --hypothesis-show-statistics


GAP_NS = 7 * MS  # the fuzzed node polls at least this often


@FUZZ
@given(st.sampled_from(sorted(CONFIGS)), st.data())
@no_hang
def test_monotone_clock_never_returns_a_frame_late(config_name, data):
    """Receiver clock only moves on (except deliberate rewinds past jump_threshold), poll is
    called after every message and at least every GAP_NS: every accepted frame comes back at
    the first poll at or after arrival + max_wait, so at most max_wait + GAP_NS late."""
    model = Model(StreamAligner(CONFIGS[config_name]))
    cfg = model.cfg
    clock = data.draw(st.integers(0, INT62))
    for _ in range(data.draw(st.integers(1, 80))):
        op = data.draw(st.sampled_from(['push'] * 4 + ['tick'] * 3 + ['rewind']))
        if op == 'rewind':
            # A bag loop under sim time: the next message's arrival is far behind, which
            # must flush every pending frame at once.
            newest = clock if model.max_arrival is None else model.max_arrival
            clock = newest - cfg.jump_threshold_ns - data.draw(st.integers(1, 10 ** 10))
            old = model.outstanding()
            model.push(data.draw(st.sampled_from(STREAMS)), data.draw(st.integers(-INT62, INT62)),
                       clock, 1.0, 'rewind', clock)
            model.poll(clock)
            assert not old & model.outstanding(), 'frames from before the rewind still wait'
            continue
        if op == 'tick':
            clock += data.draw(st.integers(0, GAP_NS))
        else:
            stream = data.draw(st.sampled_from(STREAMS))
            stamp = _stamp(data, model.last_stamp.get(stream), cfg.jump_threshold_ns)
            # Arrival stamped a little before we see it (queueing), never after.
            lag = data.draw(st.one_of(st.just(0), st.integers(0, 2 * cfg.max_wait_ns + MS)))
            model.push(stream, stamp, clock - lag, data.draw(SIGNATURES), None, clock)
        frames = model.poll(clock)
        for frame in frames:
            arrival, pushed_at = model.accepted[frame.payload[0]]
            assert arrival <= frame.emitted_ns <= clock
            assert clock <= max(arrival + cfg.max_wait_ns, pushed_at) + GAP_NS
        overdue = [t for t in model.outstanding()
                   if model.accepted[t][0] + cfg.max_wait_ns <= clock]
        assert not overdue, f'poll({clock}) kept frames past their deadline: {overdue}'


@pytest.mark.parametrize('push', [
    ('camera', 0, 0, 10 ** 400),
    ('gps', 0, 0, -10 ** 400),
], ids=['camera', 'gps'])
def test_huge_integer_signature_counts_as_bad(push):
    aligner = StreamAligner()
    aligner.push(*push, None)
    assert aligner.stats()['no_signature'] == 1


@settings(FUZZ, max_examples=min(FUZZ.max_examples, 200), deadline=None)
@given(st.integers(10 * MS, 200 * MS), st.integers(2, 40), st.integers(1, 40),
       st.integers(1, 10 ** 11), st.sampled_from(['default', 'tiny']))
def test_one_rewind_resets_once(period, before, after, back, config_name):
    """A bag loop: stamps and arrivals restart far back, then run on in order."""
    aligner = StreamAligner(CONFIGS[config_name])
    end = before * period
    for base, count in ((0, before), (-aligner.config.jump_threshold_ns - end - back, after)):
        for k in range(count):
            for lag, stream in enumerate(STREAMS):
                t = base + k * period
                aligner.push(stream, t, t + lag * MS, float(k % 3), None)
            aligner.poll(base + k * period + 2 * MS)
    assert aligner.stats()['resets_time_jump'] == 1


@pytest.mark.parametrize('stream, stamp', [('gps', 2 ** 63), ('camera', 2 ** 64),
                                           ('gps', -2 ** 63 - 1)], ids=['gps', 'camera', 'neg'])
def test_stamp_outside_int64_raises_value_error(stream, stamp):
    aligner = StreamAligner()
    with pytest.raises(ValueError):
        for k in range(3):
            aligner.push(stream, stamp + k * 100 * MS, k * 100 * MS, 1.0 + k, None)
