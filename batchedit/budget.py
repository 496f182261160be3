"""One request budget for many processes: a sliding-window limiter kept in Redis (``--budget``).

The service's limit (spec section 2: 200 calls/second) is per API per SDKAppID, shared by every
process that calls that API for the app. Each grant here is one atomic Lua script run by Redis:
it reads the time from Redis's own clock (``TIME``; no client's clock is trusted), applies a
throttle signal the caller brings, and reserves the next slot for the caller:

* no window of ``window`` seconds holds more than the rate in force, across all processes
  (the requests of the last window are kept in a sorted set);
* slots are paced ``window / rate`` apart, whoever asks (a slot given late because nobody asked
  in time lets the next one come sooner, by at most one interval);
* one process's throttle cut is the shared rate's cut, so it slows every process;
* slots go out in the order the scripts run, and a process holds at most one reservation per
  API at a time, so processes that all have work take turns: each gets an equal share.

The caller sleeps until its slot on its own clock (a duration, not a date, so clocks need not
agree). While it sleeps the next reservation is not made, so one process on its own reaches the
full rate only if a round trip to Redis takes well under ``window / rate`` (5 ms at 200/s).
What reaches the server is when a request leaves, so a request that leaves more than
:data:`~batchedit.ratelimit.LATE` after its slot (a connection still being opened, a busy loop:
most of all in a run's first second) is reported by a second script, and from then on counts
from when Redis heard of it, for every process. (A request that leaves later than a whole window
after its slot may still share a server second with a full window's worth.)
A Redis that cannot be reached at the start is a configuration error; one lost during a run
raises :class:`~batchedit.ratelimit.BudgetLost` from every later :meth:`RedisLimiter.acquire`,
so no request goes out on a budget that is not shared any more.

Why not the ``limits`` library's moving window: it stamps entries with the client's
``time.time()``, takes its window in whole seconds (a 1.005 s window fails in ``EXPIRE``), and
only says yes or no, so clients must poll: four pollers at 200/s put all 200 grants of a
second into its first 50 ms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from batchedit.im.errors import ConfigError
from batchedit.ratelimit import LATE, BudgetLost, RateStats

_GRANT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local target, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local factor, recovery, floor = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local signal, ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
local state = redis.call('HMGET', KEYS[2], 'share', 'cut_at', 'cut_slot', 'last', 'due')
local share = tonumber(state[1]) or 1
local cut_at = tonumber(state[2]) or 0
local cut_slot = tonumber(state[3]) or -1
local last, due = tonumber(state[4]), tonumber(state[5])
local function in_force(at)
  return math.min(1, share + recovery * (at - cut_at) / 1000000)
end
local cut = 0
if signal >= 0 and signal > cut_slot then
  share = math.max(floor, in_force(now) * factor)
  cut_at = now
  cut_slot = last or now
  cut = 1
end
local rate = target * in_force(now)
local interval = window / rate
local slot = now
if due then
  slot = math.max(now, math.ceil(due + interval), last + 1)
end
local cap = math.max(1, math.floor(rate))
if redis.call('ZCARD', KEYS[1]) >= cap then
  local edge = redis.call('ZREVRANGE', KEYS[1], cap - 1, cap - 1, 'WITHSCORES')
  slot = math.max(slot, tonumber(edge[2]) + window)
end
local member = string.format('%d', slot)
redis.call('ZADD', KEYS[1], slot, member)
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -math.ceil(target) - 1)
redis.call('HSET', KEYS[2], 'share', string.format('%.17g', share),
  'cut_at', string.format('%d', cut_at), 'cut_slot', string.format('%d', cut_slot),
  'last', member,
  'due', string.format('%.3f', due and math.max(due + interval, slot - interval) or slot))
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {slot - now, slot, string.format('%.17g', rate), cut}
"""
"""KEYS: the window (a sorted set: each request, named by its slot, scored by when it counts
from) and the state hash. ARGV: target (req/s), window (µs), cut factor, recovery (share of the
target per second), floor (share of the target), the slot (µs) of the latest throttled request
not yet reported or -1, the keys' time to live (ms). Every time is Redis's, in microseconds,
written with ``%d`` or ``%.3f`` (Lua's own number format keeps 14 digits). ``due`` is when the
latest slot was due by the pacing: a slot given late (nobody asked in time) makes the next one
due sooner, at most one interval's worth, as the bucket of
:class:`~batchedit.ratelimit.AdaptiveLimiter` does. Slots only grow, so each names its request.
Returns the µs to wait, the slot, the rate in force and whether the signal made a cut."""

_LEFT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local counted = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if not counted or counted < now then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -math.ceil(tonumber(ARGV[2])) - 1)
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
end
return 0
"""
"""KEYS: the window. ARGV: a request's slot, the target (req/s), the key's time to live (ms).
The request left late: from now on it counts from now, by Redis's clock when it hears of it (a
little later than it left, which only holds later grants back more)."""

_TTL_MS = 60_000
"""Idle keys expire after a minute: by then any cut has recovered and the window is empty."""


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisLimiter:
    """One API's grants from the budget kept in Redis under ``key``, shared by every process
    naming the same key (a :class:`~batchedit.ratelimit.Limiter`).

    ``rate``, ``window``, ``cut``, ``recovery`` and ``floor`` mean what they mean for
    :class:`~batchedit.ratelimit.AdaptiveLimiter` (processes sharing a key should agree on
    them). Grant times are Redis's clock, in seconds.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        key: str,
        rate: float,
        *,
        window: float = 1.005,
        cut: float = 0.9,
        recovery: float = 0.1,
        floor: float | None = None,
        where: str = "",
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.target = rate
        self.window = window
        self._script = client.register_script(_GRANT)
        self._left = client.register_script(_LEFT)
        self._keys = [f"{key}:slots", f"{key}:state"]
        floor_rate = floor if floor is not None else max(1.0, rate / 20)
        self._args = [rate, round(window * 1e6), cut, recovery, floor_rate / rate]
        self._where = where
        self._lock = asyncio.Lock()
        self._due: dict[float, float] = {}
        """Each grant not yet departed: when its slot was due, on this process's clock."""
        self._reports: set[asyncio.Task[None]] = set()
        self._signal = -1
        self._lost: str | None = None
        self._rate = rate
        self._throttled = 0
        self._cuts = 0
        self._lowest = rate

    def rate(self) -> float:
        """The shared rate in force at this process's latest grant, in requests per second."""
        return self._rate

    async def acquire(self) -> float:
        """Wait for a slot (first come, first served across processes); return it, in seconds.

        Raises :class:`~batchedit.ratelimit.BudgetLost` once Redis cannot be reached.
        """
        async with self._lock:
            if self._lost is not None:
                raise BudgetLost(self._lost)
            signal, self._signal = self._signal, -1
            args = [*self._args, signal, _TTL_MS]
            loop = asyncio.get_running_loop()
            # The slot is due ``wait`` after Redis ran the script, which was no earlier than
            # now: counting from now errs towards calling a departure late.
            asked = loop.time()
            try:
                reply: Any = await self._script(keys=self._keys, args=args)
            except (RedisError, OSError) as exc:
                raise BudgetLost(self._lose(exc)) from None
            wait, slot, rate, cut = int(reply[0]), int(reply[1]), float(reply[2]), int(reply[3])
            self._rate = rate
            self._lowest = min(self._lowest, rate)
            self._cuts += cut
            due = asked + wait / 1e6
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            self._due[slot / 1e6] = due
            return slot / 1e6

    def _lose(self, exc: Exception) -> str:
        if self._lost is None:
            self._lost = f"lost the shared request budget at {self._where} ({exc})"
        return self._lost

    def departed(self, granted_at: float) -> None:
        """The request granted at ``granted_at`` leaves now. If that is more than
        :data:`~batchedit.ratelimit.LATE` after its slot was due (a new connection, a busy
        loop), Redis is told, and counts it from when it hears of it for every process."""
        due = self._due.pop(granted_at, None)
        if due is None or asyncio.get_running_loop().time() - due <= LATE or self._lost:
            return
        report = asyncio.create_task(self._report(round(granted_at * 1e6)))
        self._reports.add(report)
        report.add_done_callback(self._reports.discard)

    async def _report(self, slot: int) -> None:
        try:
            await self._left(keys=self._keys[:1], args=[str(slot), self.target, _TTL_MS])
        except (RedisError, OSError) as exc:
            self._lose(exc)

    async def settle(self) -> None:
        """Wait until every late departure has been told to Redis (before closing the
        connection)."""
        await asyncio.gather(*self._reports)

    def follow(self, sent: Sequence[float] | None) -> None:
        """Nothing to do: the slots of a process that stopped stay in Redis for the window."""

    def throttled(self, granted_at: float) -> None:
        """The server refused the request granted at ``granted_at`` for its rate.

        The cut is made by this process's next grant, in the same script, and only if that
        request's slot was reserved after the last cut made by any process.
        """
        self._throttled += 1
        self._signal = max(self._signal, round(granted_at * 1e6))

    def stats(self) -> RateStats:
        """This process's counters: throttle signals it saw, cuts they made, the lowest rate."""
        return RateStats(self.target, self._throttled, self._cuts, self._lowest)


class SharedBudget:
    """A connection to the Redis that keeps the budget; hands out one limiter per API."""

    def __init__(self, client: aioredis.Redis, where: str) -> None:
        self._client = client
        self.where = where
        self._limiters: list[RedisLimiter] = []

    @classmethod
    async def connect(cls, url: str, *, io_seconds: float = 2.0) -> SharedBudget:
        """Connect to ``url`` (``redis://HOST:PORT/DB``) and check that Redis answers.

        Raises :class:`~batchedit.im.errors.ConfigError` with the reason when it does not.
        ``io_seconds`` bounds each connection attempt and each command.
        """
        where = redact_url(url)
        try:
            client = aioredis.Redis.from_url(
                url,
                socket_timeout=io_seconds,
                socket_connect_timeout=io_seconds,
                # One immediate retry survives a connection Redis dropped while idle; a grant is
                # at worst reserved twice, which only wastes a slot.
                retry=Retry(NoBackoff(), 1),
            )
        except ValueError as exc:
            raise ConfigError(f"--budget {where}: {exc}") from None
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise ConfigError(
                f"cannot reach the shared request budget at {where}: {exc}; start Redis there, "
                "or leave out --budget to keep this run's own limit"
            ) from None
        return cls(client, where)

    def limiter(self, sdkappid: int, api: str, rate: float, window: float) -> RedisLimiter:
        """The limiter for ``api`` of app ``sdkappid`` (the service limits each pair apart)."""
        key = f"batchedit:budget:{{{sdkappid}:{api}}}"
        limiter = RedisLimiter(self._client, key, rate, window=window, where=self.where)
        self._limiters.append(limiter)
        return limiter

    async def close(self) -> None:
        """Tell Redis of the last late departures, then close the connection."""
        for limiter in self._limiters:
            await limiter.settle()
        await self._client.aclose()
