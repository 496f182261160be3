"""Where the rows of results logs fall in time: the series the report's charts draw.

Each row stands at the moment its outcome was recorded (``at``), and so do all of its attempts:
the log does not say when each attempt was sent. Every row counts here, superseded ones too,
since their requests were sent all the same. A pause of more than :data:`PAUSE` seconds with no
row recorded (a killed run, then its resume) is cut out, so time on the charts is working time.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from dataclasses import dataclass

from batchedit.outcomes import Outcome, Status

PAUSE = 60.0
"""Seconds without a recorded row that separate two stretches of work."""

_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
_BUCKETS = 200
_SHORT = 50
"""A run shorter than this many seconds gets up to this many sub-second buckets."""


@dataclass(frozen=True, slots=True)
class Pause:
    """A cut-out pause: where the next stretch starts (seconds of working time) and its length."""

    x: float
    seconds: float


@dataclass(frozen=True, slots=True)
class Series:
    """Per-bucket values over working time; latency percentiles are NaN where none was sent."""

    start: float
    """UNIX seconds of the first row."""
    width: float
    """Seconds per bucket."""
    edges: list[float]
    """Bucket edges in seconds of working time (one more than buckets)."""
    sent: list[float]
    """Lines that reached the server, per second."""
    requests: list[float]
    """Attempts (requests sent), per second."""
    p50: list[float]
    p95: list[float]
    p99: list[float]
    """Latency percentiles of the last attempts, milliseconds."""
    retries: list[int]
    throttled: list[int]
    """Attempts refused for the rate (each may cut the run's rate)."""
    failed: list[int]
    """Rows recorded as failed."""
    pauses: list[Pause]


def _width(total: float) -> float:
    """Seconds per bucket: whole seconds (so rates compare with a per-second limit) unless
    the run was short, and no more than ``_BUCKETS`` buckets."""
    if total < _SHORT:
        return next(float(s) for s in _STEPS if total / s <= _SHORT)
    return next((float(s) for s in _STEPS if s >= 1 and total / s <= _BUCKETS), total / _BUCKETS)


def _percentile(ordered: list[float], p: float) -> float:
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else math.nan


class Timeline:
    """The rows' times and costs in flat arrays (about 20 bytes a row)."""

    def __init__(self) -> None:
        self._at = array("d")
        self._latency = array("f")
        self._attempts = array("L")
        self._throttled = array("L")
        self._failed = bytearray()
        self.untimed = 0
        """Rows written before ``at`` was recorded: they have no place in time."""

    @property
    def timed(self) -> int:
        """Rows with a time."""
        return len(self._at)

    def add(self, outcome: Outcome) -> None:
        """Place one row."""
        if outcome.at is None:
            self.untimed += 1
            return
        self._at.append(outcome.at)
        self._latency.append(outcome.latency * 1000)
        self._attempts.append(outcome.attempts)
        self._throttled.append(outcome.throttled)
        self._failed.append(outcome.status is Status.FAILED)

    def stretches(self) -> list[tuple[float, float]]:
        """``(first, last)`` UNIX seconds of each stretch of work, in order."""
        spans: list[tuple[float, float]] = []
        ordered = sorted(self._at)
        if not ordered:
            return spans
        first = last = ordered[0]
        for at in ordered:
            if at - last > PAUSE:
                spans.append((first, last))
                first = at
            last = at
        spans.append((first, last))
        return spans

    def series(self) -> Series | None:
        """The per-bucket series, or ``None`` when no row has a time."""
        spans = self.stretches()
        if not spans:
            return None
        starts = [first for first, _ in spans]
        offsets = [0.0]
        for first, last in spans:
            offsets.append(offsets[-1] + last - first)
        total = offsets[-1]
        width = _width(total)
        count = max(1, math.ceil(total / width))
        sent, requests = [0] * count, [0] * count
        retries, throttled, failed = [0] * count, [0] * count, [0] * count
        latencies: list[list[float]] = [[] for _ in range(count)]
        for i, at in enumerate(self._at):
            stretch = bisect_right(starts, at) - 1
            x = offsets[stretch] + at - starts[stretch]
            bucket = min(int(x // width), count - 1)
            attempts = self._attempts[i]
            if attempts:
                sent[bucket] += 1
                requests[bucket] += attempts
                retries[bucket] += attempts - 1
                latencies[bucket].append(self._latency[i])
            throttled[bucket] += self._throttled[i]
            failed[bucket] += self._failed[i]
        for values in latencies:
            values.sort()
        return Series(
            start=starts[0],
            width=width,
            edges=[i * width for i in range(count + 1)],
            sent=[n / width for n in sent],
            requests=[n / width for n in requests],
            p50=[_percentile(b, 50) for b in latencies],
            p95=[_percentile(b, 95) for b in latencies],
            p99=[_percentile(b, 99) for b in latencies],
            retries=retries,
            throttled=throttled,
            failed=failed,
            pauses=[
                Pause(offsets[k], first - spans[k - 1][1])
                for k, (first, _) in enumerate(spans)
                if k
            ],
        )
