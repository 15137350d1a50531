"""The aligners people use today, on the same inputs as StreamAligner, for the evaluation.

- NearestStampMatcher: trusts stamps; each reference frame takes the nearest stamp per stream,
  waiting at most max_wait for a stamp at or after its own.
- ApproximateTimeSync: message_filters' ApproximateTime policy as the ROS wiki documents it
  (and approximate_time.hpp implements it): each message used once, sets contiguous, each set
  of minimal span among those after the previous one, found with the pivot search; with the
  ROS 2 age penalty. It waits for as long as it takes.
- xcorr_offset: Kalibr / Kimera CrossCorrTimeAligner style offset from the argmax of the
  normalised cross-correlation of the same signatures, refined with a parabola.
"""

from collections import deque
from dataclasses import dataclass
import math

import numpy as np

from fusion_nodes.core.align.aligner import AlignedFrame, Match
from fusion_nodes.core.align.offset import sub_sample_minimum, WindowEstimate


def xcorr_offset(x: np.ndarray, y: np.ndarray, step_ns: int, max_lag: int) -> WindowEstimate:
    """Offset (ns) of y against x at the normalised cross-correlation peak within +-max_lag."""
    n = x.size
    max_lag = min(max_lag, n // 2)
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.empty(lags.size)
    for k, lag in enumerate(lags):
        a = x[max(0, -lag):n - max(0, lag)]
        b = y[max(0, lag):n - max(0, -lag)]
        corr[k] = float(np.dot(a, b) / a.size) if a.size else -math.inf
    best = int(np.argmax(corr))
    lag = float(lags[best])
    if 0 < best < lags.size - 1:
        # The parabola's vertex of -corr is the correlation peak.
        lag += sub_sample_minimum(-corr[best - 1:best + 2])
    return WindowEstimate(lag * step_ns, float(corr[best]), True)


@dataclass
class _Msg:
    stamp: int
    arrival: int
    payload: object


class NearestStampMatcher:
    """Nearest raw stamp per stream, bounded wait; the stamp-trusting baseline."""

    def __init__(self, reference: str, streams: tuple[str, ...], max_wait_ns: int,
                 max_residual_ns: int, buffer_len: int = 64) -> None:
        self.reference = reference
        self.streams = tuple(streams)
        self.max_wait_ns = int(max_wait_ns)
        self.max_residual_ns = int(max_residual_ns)
        self._buffers = {s: deque(maxlen=buffer_len) for s in self.streams}
        self._pending: deque[_Msg] = deque()

    def push(self, stream: str, stamp_ns: int, arrival_ns: int, payload: object) -> None:
        msg = _Msg(int(stamp_ns), int(arrival_ns), payload)
        if stream == self.reference:
            self._pending.append(msg)
        elif stream in self._buffers:
            self._buffers[stream].append(msg)
        else:
            raise ValueError(f'unknown stream {stream!r}')

    def next_deadline_ns(self) -> int | None:
        return self._pending[0].arrival + self.max_wait_ns if self._pending else None

    def poll(self, now_ns: int) -> list[AlignedFrame]:
        out = []
        while self._pending:
            ref = self._pending[0]
            complete = all(buf and buf[-1].stamp >= ref.stamp for buf in self._buffers.values())
            if not complete and now_ns < ref.arrival + self.max_wait_ns:
                break
            self._pending.popleft()
            matches: dict[str, Match | None] = {}
            for name, buf in self._buffers.items():
                best = min(buf, key=lambda m: abs(m.stamp - ref.stamp), default=None)
                if best is None or abs(best.stamp - ref.stamp) > self.max_residual_ns:
                    matches[name] = None
                else:
                    matches[name] = Match(best.stamp, best.stamp, best.stamp - ref.stamp,
                                          best.arrival, best.payload)
            out.append(AlignedFrame(ref.stamp, ref.arrival, ref.payload, matches, now_ns))
        return out


class ApproximateTimeSync:
    """message_filters ApproximateTime (wiki algorithm, C++ pivot search, age penalty)."""

    def __init__(self, topics: tuple[str, ...], queue_size: int = 30,
                 age_penalty: float = 0.1) -> None:
        if queue_size <= 0 or age_penalty < 0.0:
            raise ValueError('queue_size must be positive and age_penalty non-negative')
        self.topics = tuple(topics)
        self.queue_size = queue_size
        self.age_penalty = age_penalty
        self._queues = {t: deque() for t in self.topics}
        self._past = {t: deque() for t in self.topics}
        self._candidate: dict[str, _Msg] | None = None
        self._pivot: str | None = None
        self._pivot_time = 0
        self.dropped = 0

    def push(self, topic: str, stamp_ns: int, arrival_ns: int,
             payload: object) -> list[dict[str, _Msg]]:
        """Add a message; returns the sets this arrival completes (each topic -> message)."""
        queue = self._queues.get(topic)
        if queue is None:
            raise ValueError(f'unknown topic {topic!r}')
        queue.append(_Msg(int(stamp_ns), int(arrival_ns), payload))
        if len(queue) + len(self._past[topic]) > self.queue_size:
            # Queue overflow: as in the C++ policy, forget the search and drop the oldest.
            self._recover()
            self._queues[topic].popleft()
            self.dropped += 1
            self._candidate = None
            self._pivot = None
        return self._process()

    def _recover(self) -> None:
        for t in self.topics:
            while self._past[t]:
                self._queues[t].appendleft(self._past[t].pop())

    def _process(self) -> list[dict[str, _Msg]]:
        out = []
        while all(self._queues[t] for t in self.topics):
            heads = {t: self._queues[t][0].stamp for t in self.topics}
            end_topic = max(self.topics, key=lambda t: heads[t])
            start_topic = min(self.topics, key=lambda t: heads[t])
            end, start = heads[end_topic], heads[start_topic]
            if self._pivot is None:
                self._candidate = {t: self._queues[t][0] for t in self.topics}
                self._pivot = end_topic
                self._pivot_time = end
            else:
                c_start = min(m.stamp for m in self._candidate.values())
                c_end = max(m.stamp for m in self._candidate.values())
                # A later set must shrink the span by more than its penalised age.
                if (end - c_end) * (1.0 + self.age_penalty) < (start - c_start):
                    self._candidate = {t: self._queues[t][0] for t in self.topics}
            if start_topic == self._pivot:
                # Moving the pivot cannot give a set that still contains it: publish.
                out.append(self._candidate)
                self._publish()
                continue
            self._past[start_topic].append(self._queues[start_topic].popleft())
        return out

    def _publish(self) -> None:
        chosen = self._candidate
        self._recover()
        for t in self.topics:
            queue = self._queues[t]
            while queue and queue[0].stamp <= chosen[t].stamp:
                queue.popleft()
        self._candidate = None
        self._pivot = None
