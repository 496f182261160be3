"""The request budget: evenly paced, never over the limit in any sliding window, and adaptive.

Why not ``aiolimiter.AsyncLimiter(rate, 1)``: its bucket starts empty, so it lets ``rate`` requests
through at once and then ``rate`` more within the same second — twice the budget in the first
window. This limiter instead keeps the grant times of the last window and paces grants
``window/rate`` apart, so no window of ``window`` seconds ever holds more than ``rate`` grants.
``window`` is a little over one second by default: requests reach the server a little after they
are granted, and not all equally late, so the margin keeps the server's own 1-second count (spec
section 2: 200 calls/second) within the limit too.

On a throttle signal (60007 and friends) the rate is cut multiplicatively, then recovers linearly
towards the target: the whole run slows down, not just the record that was refused.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateStats:
    """What the limiter did: throttle signals seen, cuts made, the lowest rate reached (req/s)."""

    target: float
    throttled: int
    cuts: int
    lowest: float


class AdaptiveLimiter:
    """Grants requests at up to ``rate`` per second.

    No ``window`` seconds ever hold more than ``rate`` grants, and grants are paced
    ``window / rate`` apart, so the long-run rate is ``rate / window`` (99.5 % of ``rate``) less
    the loop's timer lateness (about 0.1 %). ``window`` is seconds (default 1.005); ``cut`` is
    the factor applied on a throttle signal (default 0.9); ``recovery`` is the share of the
    target regained per second afterwards (default 0.1); the rate never drops below ``floor``
    (default a twentieth of the target, at least 1 request per second). ``clock`` is for tests;
    create the limiter inside the running loop.
    """

    def __init__(
        self,
        rate: float,
        *,
        window: float = 1.005,
        cut: float = 0.9,
        recovery: float = 0.1,
        floor: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.target = rate
        self.window = window
        self._cut = cut
        self._recovery = recovery
        self._floor = floor if floor is not None else max(1.0, rate / 20)
        self._clock = clock
        self._grants: deque[float] = deque()
        self._last = -math.inf
        self._cut_rate = rate
        self._cut_at = -math.inf
        self._lock = asyncio.Lock()
        self._throttled = 0
        self._cuts = 0
        self._lowest = rate

    def rate(self, now: float | None = None) -> float:
        """The rate in force at ``now``, in requests per second."""
        at = self._clock() if now is None else now
        regained = self.target * self._recovery * max(0.0, at - self._cut_at)
        return min(self.target, self._cut_rate + regained)

    def _earliest(self, now: float) -> float:
        rate = self.rate(now)
        cap = max(1, math.floor(rate))
        grants = self._grants
        while grants and grants[0] <= now - self.window:
            grants.popleft()
        earliest = self._last + self.window / rate
        if len(grants) >= cap:
            # The nanosecond keeps float rounding from landing a grant an ulp inside the window.
            earliest = max(earliest, grants[-cap] + self.window + 1e-9)
        return earliest

    def reserve(self, now: float) -> float:
        """Grant at ``now`` and return 0, or return the seconds to wait before asking again."""
        earliest = self._earliest(now)
        if earliest > now:
            return earliest - now
        self._grants.append(now)
        interval = self.window / self.rate(now)
        # Pace from the slot the grant was due, not from when the waiter woke, so timer error
        # never adds up; from no further back than one interval, so an idle spell turns into at
        # most two grants back to back.
        first = self._last == -math.inf
        self._last = now if first else max(self._last + interval, now - interval)
        return 0.0

    async def acquire(self) -> float:
        """Wait for a grant (first come, first served); return its time on the limiter's clock."""
        async with self._lock:
            while True:
                now = self._clock()
                wait = self.reserve(now)
                if not wait:
                    return now
                await asyncio.sleep(wait)

    def throttled(self, granted_at: float) -> None:
        """The server refused a request granted at ``granted_at`` for its rate: slow down.

        Only a request granted after the last cut proves the cut rate is still too high, so
        answers to older requests count but cut nothing.
        """
        self._throttled += 1
        if granted_at < self._cut_at:
            return
        now = self._clock()
        self._cut_rate = max(self._floor, self.rate(now) * self._cut)
        self._cut_at = now
        self._cuts += 1
        self._lowest = min(self._lowest, self._cut_rate)

    def stats(self) -> RateStats:
        """Counters for the summary."""
        return RateStats(self.target, self._throttled, self._cuts, self._lowest)
