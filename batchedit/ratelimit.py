"""The request budget: evenly paced, never over the limit in any sliding window, and adaptive.

Two parts work together. ``aiolimiter.AsyncLimiter``, a leaky bucket of two tokens draining at
``target / window`` tokens per second, paces the grants: each request takes
``target / rate_in_force`` tokens, so a throttle cut needs no new bucket, only a larger amount per
request. The bucket's second token absorbs the loop's timer lateness (a grant woken late leaves
the next one due sooner); the first grant fills it, so a cold start is paced from the start, and
after an idle spell at most two grants go back to back. On top of it a sliding-window guard keeps
the requests of the last ``window`` seconds and holds a grant until that window has fewer than
``rate`` of them, so no burst, lateness made up or cut can put more than ``rate`` requests into
any window.

What reaches the server is when a request *leaves*, not when it was granted, so the guard counts a
request from when it left (it had its connection and was being written) whenever that was more
than :data:`LATE` after its grant, and a request granted but not yet gone counts in every window.
That matters most in a run's first second: its first requests wait for new connections and for a
loop still busy starting up, so they leave late, while one second later requests leave on warm
connections at once; counted from their grants, the late ones left the next second's requests
room to crowd into the server's window with them. A predecessor's requests (a run resumed right
after a crash, see :mod:`batchedit.departures`) are counted through :meth:`Limiter.follow`.

``window`` is a little over one second by default: requests reach the server a little after they
leave, and not all equally late, so the margin keeps the server's own 1-second count (spec
section 2: 200 calls/second) within the limit too.

On a throttle signal (60007 and friends) the rate is cut multiplicatively, then recovers linearly
towards the target: the whole run slows down, not just the record that was refused.
:mod:`batchedit.budget` offers the same contract shared by many processes through Redis.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiolimiter import AsyncLimiter

from batchedit.im.errors import ConfigError, ImError

_BUCKET = 2.0
"""Bucket size in tokens (one token is one request at the full rate)."""

LATE = 0.001
"""Seconds: a request that leaves within this long after its grant counts from its grant, one that
leaves later from when it left. Leaving this late or less costs nothing but this much of the
margin; leaving later (a new connection, a busy loop) is counted as it happened."""


@dataclass(frozen=True, slots=True)
class RateStats:
    """What the limiter did: throttle signals seen, cuts made, the lowest rate reached (req/s)."""

    target: float
    throttled: int
    cuts: int
    lowest: float


class BudgetLost(ImError):
    """The shared request budget cannot be reached any more: take no more grants."""


class Limiter(Protocol):
    """What a sender needs from a request budget (:class:`AdaptiveLimiter`, or a shared one)."""

    async def acquire(self) -> float:
        """Wait for a grant (first come, first served); return its time, in seconds."""

    def departed(self, granted_at: float) -> None:
        """The request granted at ``granted_at`` leaves now (it has its connection), or never
        will. Called once for every grant."""

    def follow(self, sent: Sequence[float] | None) -> None:
        """Before the first grant: a predecessor sent requests at these times (the limiter's
        clock), or, with ``None``, may have sent any number up to now."""

    def throttled(self, granted_at: float) -> None:
        """The server refused the request granted at ``granted_at`` for its rate."""

    def rate(self) -> float:
        """The rate in force, in requests per second."""

    def stats(self) -> RateStats:
        """Counters for the summary."""


class AdaptiveLimiter:
    """Grants requests at up to ``rate`` per second.

    No ``window`` seconds ever hold more than ``rate`` requests, each counted from its grant, or
    from when it left if that was more than :data:`LATE` later (a request granted and not yet
    :meth:`departed` counts in every window), and grants are paced ``window / rate`` apart, so the
    long-run rate is ``rate / window`` (99.5 % of ``rate``) less the loop's timer lateness (about
    0.1 %). ``window`` is seconds (default 1.005); ``cut`` is the factor applied on a throttle
    signal (default 0.9); ``recovery`` is the share of the target regained per second afterwards
    (default 0.1); the rate never drops below ``floor`` (default a twentieth of the target, at
    least 1 request per second). Times are the running loop's clock (``loop.time()``, which
    aiolimiter paces by too); create the limiter inside the loop that uses it.
    """

    def __init__(
        self,
        rate: float,
        *,
        window: float = 1.005,
        cut: float = 0.9,
        recovery: float = 0.1,
        floor: float | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.target = rate
        self.window = window
        self._cut = cut
        self._recovery = recovery
        self._floor = floor if floor is not None else max(1.0, rate / 20)
        # The bucket paces a millionth slower than the guard allows, so on time a grant never
        # ties with the guard's boundary and costs one timer wait, not two.
        self._bucket = AsyncLimiter(_BUCKET, _BUCKET * window * (1 + 1e-6) / rate)
        self._counted: deque[float] = deque()
        """When each request that left counts from, in order (see :data:`LATE`)."""
        self._pending = 0
        """Requests granted and not yet departed: in every window until they leave."""
        self._left = asyncio.Event()
        self._fresh = True
        self._cut_rate = rate
        self._cut_at = -math.inf
        self._lock = asyncio.Lock()
        self._throttled = 0
        self._cuts = 0
        self._lowest = rate

    def rate(self, now: float | None = None) -> float:
        """The rate in force at ``now`` (default: the loop's time), in requests per second."""
        at = asyncio.get_running_loop().time() if now is None else now
        regained = self.target * self._recovery * max(0.0, at - self._cut_at)
        return min(self.target, self._cut_rate + regained)

    def _cap(self, now: float) -> int:
        return max(1, math.floor(self.rate(now)))

    def _guard(self, now: float) -> float | None:
        """Seconds until the window ending then holds fewer requests than the rate in force;
        ``None`` when that depends on when requests still to leave will leave."""
        cap = self._cap(now)
        counted = self._counted
        while counted and counted[0] <= now - self.window:
            counted.popleft()
        busy = len(counted) + self._pending
        if busy < cap:
            return 0.0
        if self._pending >= cap:
            return None
        # The nanosecond keeps float rounding from landing a grant an ulp inside the window.
        return max(0.0, counted[busy - cap] + self.window + 1e-9 - now)

    async def acquire(self) -> float:
        """Wait for a grant (first come, first served); return its time on the loop's clock."""
        loop = asyncio.get_running_loop()
        # One waiter at a time in the bucket keeps the order of arrival: aiolimiter serves
        # smaller amounts first (the amount changes with the rate), and a newcomer that fits
        # may take the capacity a waiter was just woken for.
        async with self._lock:
            amount = self.target / self.rate()
            if self._fresh:
                # The first grant also fills the bucket's headroom: no burst at a cold start.
                amount += _BUCKET - 1
                self._fresh = False
            while amount > 0:
                # At most a token per step, so a step always leaves a token of headroom to
                # absorb lateness, and a deep cut's amount never exceeds the bucket.
                step = min(amount, _BUCKET - 1)
                await self._bucket.acquire(step)
                amount -= step
            wait = self._guard(loop.time())
            while wait != 0.0:
                if wait is None:
                    self._left.clear()
                    await self._left.wait()
                else:
                    await asyncio.sleep(wait)
                # Again: a cut while this grant waited may have lowered the window's cap.
                wait = self._guard(loop.time())
            self._pending += 1
            return loop.time()

    def departed(self, granted_at: float) -> None:
        """The request granted at ``granted_at`` leaves now, or never will: from now on it counts
        from its grant, or from now if that is more than :data:`LATE` later. Call it once for
        every grant."""
        now = asyncio.get_running_loop().time()
        self._pending -= 1
        bisect.insort(self._counted, granted_at if now - granted_at <= LATE else now)
        self._left.set()

    def follow(self, sent: Sequence[float] | None) -> None:
        """Before the first grant: count requests a predecessor sent at ``sent`` (the loop's
        clock), or, with ``None`` (not known), a full window of them sent just now."""
        if sent is None:
            now = asyncio.get_running_loop().time()
            sent = [now] * self._cap(now)
        for at in sent:
            bisect.insort(self._counted, at)

    def throttled(self, granted_at: float) -> None:
        """The server refused a request granted at ``granted_at`` for its rate: slow down.

        Only a request granted after the last cut proves the cut rate is still too high, so
        answers to older requests count but cut nothing.
        """
        self._throttled += 1
        if granted_at < self._cut_at:
            return
        now = asyncio.get_running_loop().time()
        self._cut_rate = max(self._floor, self.rate(now) * self._cut)
        self._cut_at = now
        self._cuts += 1
        self._lowest = min(self._lowest, self._cut_rate)

    def stats(self) -> RateStats:
        """Counters for the summary."""
        return RateStats(self.target, self._throttled, self._cuts, self._lowest)


Limiters = Callable[[str], Limiter | None]
"""The limiter for an API (``openim/modify_c2c_msg``...), or ``None`` for no limit."""


@contextlib.asynccontextmanager
async def open_limiters(
    rate: float | None, window: float, budget: str | None = None, sdkappid: int = 0
) -> AsyncIterator[Limiters]:
    """Where each API's limiter comes from for one run.

    Without ``budget``, a fresh :class:`AdaptiveLimiter` per API (none when ``rate`` is
    ``None``: no limit). With ``budget``, a Redis URL, limiters that share that budget with
    every process using it for app ``sdkappid``; raises :class:`ConfigError` when Redis cannot
    be reached, and closes the connection on the way out.
    """
    if budget is None:
        yield lambda _: AdaptiveLimiter(rate, window=window) if rate else None
        return
    if not rate:
        raise ConfigError("--budget needs a rate: --rate 0 (no limit) cannot be shared")
    try:
        # Imported here: Redis support is the optional extra batchedit[redis].
        from batchedit.budget import SharedBudget  # noqa: PLC0415
    except ImportError:
        raise ConfigError(
            "--budget needs the Redis client: pip install 'batchedit[redis]'"
        ) from None
    shared = await SharedBudget.connect(budget)
    try:
        yield lambda api: shared.limiter(sdkappid, api, rate, window)
    finally:
        await shared.close()
