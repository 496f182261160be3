"""What the emulator measures about its traffic, and how it throttles it.

For each API it keeps the arrivals and admissions of the last second. Admission follows the
service's frequency limit: at most ``limit`` admitted requests in any sliding 1-second window
(spec section 2, "200 calls/second"); the excess is refused and not counted as admitted. The
largest number of *arrivals* seen in any sliding second, admitted or not, is how a client's rate
compliance is judged; when that busiest second first ended, counted from the first arrival, says
whether it came at the start (connections still opening) or later.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

WINDOW = 1.0
"""Length of the sliding window, in seconds."""


class SlidingCount:
    """Counts events in the half-open window ``(now - 1 s, now]``."""

    __slots__ = ("_times",)

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def count(self, now: float) -> int:
        """Events in the window ending at ``now``."""
        times = self._times
        while times and times[0] <= now - WINDOW:
            times.popleft()
        return len(times)

    def add(self, now: float) -> int:
        """Record an event at ``now``; return the count in the window ending at ``now``."""
        self._times.append(now)
        return self.count(now)


@dataclass(slots=True)
class ApiTraffic:
    """Counters for one API."""

    arrivals: int = 0
    admitted: int = 0
    max_window_arrivals: int = 0
    max_window_at: float = 0.0
    """Seconds from the first arrival to the arrival that first made the busiest window."""
    codes: Counter[int] = field(default_factory=Counter)
    http_statuses: Counter[int] = field(default_factory=Counter)
    max_inflight_same_key: int = 0
    _first: float | None = None
    _arrived: SlidingCount = field(default_factory=SlidingCount)
    _admitted: SlidingCount = field(default_factory=SlidingCount)
    _inflight: Counter[str] = field(default_factory=Counter)

    def arrive(self, now: float, limit: int | None) -> bool:
        """Count an arrival at ``now``; ``True`` when it is admitted under ``limit`` per second."""
        self.arrivals += 1
        if self._first is None:
            self._first = now
        in_window = self._arrived.add(now)
        if in_window > self.max_window_arrivals:
            self.max_window_arrivals = in_window
            self.max_window_at = now - self._first
        if limit is not None and self._admitted.count(now) >= limit:
            return False
        self._admitted.add(now)
        self.admitted += 1
        return True

    def enter(self, key: str) -> None:
        """A request about message ``key`` is now in flight."""
        self._inflight[key] += 1
        self.max_inflight_same_key = max(self.max_inflight_same_key, self._inflight[key])

    def leave(self, key: str) -> None:
        """That request got its answer."""
        self._inflight[key] -= 1
        if not self._inflight[key]:
            del self._inflight[key]

    def as_json(self) -> dict[str, Any]:
        """The public counters."""
        return {
            "arrivals": self.arrivals,
            "admitted": self.admitted,
            "max_window_arrivals": self.max_window_arrivals,
            "max_window_at_s": round(self.max_window_at, 6),
            "codes": {str(code): n for code, n in sorted(self.codes.items())},
            "http_statuses": {str(s): n for s, n in sorted(self.http_statuses.items())},
            "max_inflight_same_key": self.max_inflight_same_key,
        }


@dataclass(slots=True)
class Traffic:
    """Counters for every API, keyed by ``service/command``."""

    apis: dict[str, ApiTraffic] = field(default_factory=dict)

    def of(self, api: str) -> ApiTraffic:
        """The counters of ``api``, created on first use."""
        traffic = self.apis.get(api)
        if traffic is None:
            traffic = self.apis[api] = ApiTraffic()
        return traffic

    def as_json(self) -> dict[str, Any]:
        """``GET /__emulator/stats``."""
        return {api: t.as_json() for api, t in sorted(self.apis.items())}
