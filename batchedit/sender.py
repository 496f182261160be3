"""Sending one request until it has a final answer: rate limit, retries, UserSig renewal, stop.

Every HTTP attempt, retries included, takes a grant from the limiter; waiting between retries
happens outside the limiter. What each answer means comes from :mod:`batchedit.im.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from batchedit.im.auth import SigSource
from batchedit.im.client import ImClient, Reply
from batchedit.im.errors import ErrorClass, fatal_reason
from batchedit.ratelimit import BudgetLost, Limiter
from batchedit.retry import RetryPolicy


class RunState:
    """What all workers share: whether the run is stopping, why, and how many wait to retry."""

    def __init__(self) -> None:
        self.stopped: str | None = None
        self.reason = ""
        self.retrying = 0
        self._event = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []
        self._waiting: set[asyncio.Task[Any]] = set()
        self._woken: set[asyncio.Task[Any]] = set()

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested (no new attempts start)."""
        return self.stopped is not None

    def stop(self, kind: str, reason: str) -> None:
        """Request a stop; the first request's kind and reason are kept."""
        if self.stopped is None:
            self.stopped = kind
            self.reason = reason
            self._event.set()
            # Workers queued for a grant would take grants one by one at the run's rate only to
            # send nothing: they give up the wait now (see grant()).
            self._woken, self._waiting = self._waiting, set()
            for task in self._woken:
                task.cancel()
            for listener in self._listeners:
                listener()

    def on_stop(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` when the run stops (at once if it already has)."""
        self._listeners.append(listener)
        if self.stopping:
            listener()

    async def grant(self, limiter: Limiter) -> float | None:
        """``limiter.acquire()``, or ``None`` when the run stops first: a stop gives the wait up
        at once. A cancelled acquire leaves the limiter as if it had never been asked (it counts
        a grant only when it returns one), so there is no grant to report as departed."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("RunState.grant() needs a task")
        if self.stopping:
            return None
        self._waiting.add(task)
        try:
            return await limiter.acquire()
        except asyncio.CancelledError:
            if task not in self._woken:
                raise
            self._woken.discard(task)
            # Swallow only the stop's own cancel; a caller's cancel (a second Ctrl-C) stands.
            if task.uncancel():
                raise
            return None
        finally:
            self._waiting.discard(task)

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if a stop is requested meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)


class RunControl:
    """Lets a caller (the CLI's signal handlers) stop a run gracefully, or at once."""

    def __init__(self) -> None:
        self.state = RunState()
        self._now = asyncio.Event()
        self._why = "interrupted"

    def interrupt(self, why: str = "interrupted") -> None:
        """First Ctrl-C (or SIGTERM, SIGHUP): take no new work, let in-flight requests finish.

        ``why`` starts the summary's reason, e.g. ``"stopped by SIGTERM"``.
        """
        if not self.state.stopping:
            self._why = why
        self.state.stop("interrupted", f"{why}: in-flight requests were let finish")

    def cancel_now(self) -> None:
        """Second Ctrl-C: cancel in-flight requests too."""
        state = self.state
        if state.stopped == "interrupted":
            state.reason = f"{self._why}, then again: in-flight requests were cancelled"
        state.stop("interrupted", "interrupted: in-flight requests were cancelled")
        self._now.set()

    async def finish(self, work: Awaitable[object]) -> bool:
        """Await ``work``, unless :meth:`cancel_now` comes first: then cancel it, wait for it to
        end, and return ``False``."""
        task = asyncio.ensure_future(work)
        now = asyncio.ensure_future(self._now.wait())
        try:
            await asyncio.wait([task, now], return_when=asyncio.FIRST_COMPLETED)
        finally:
            now.cancel()
            if not task.done():
                task.cancel()
            await asyncio.wait([task])
        if not task.cancelled():
            task.result()  # raises what the work raised
            return True
        return False


class SigGuard:
    """Renews the UserSig after a 70001, once: if a fresh sig is refused too, the run stops."""

    def __init__(self, sig: SigSource) -> None:
        self._sig = sig
        self._renewed = False

    def renew(self, used_generation: int) -> bool:
        """Whether to retry after an expired-sig answer to a request sent with that generation."""
        if self._sig.generation > used_generation:
            return True
        if self._renewed or not self._sig.regenerate():
            return False
        self._renewed = True
        return True


@dataclass(slots=True)
class Track:
    """One record's attempts so far, readable even if its task is cancelled midway.

    ``timed_out`` is set once an attempt got no answer in time: the server may still apply it.
    """

    attempts: int = 0
    throttled: int = 0
    """Attempts refused for the rate."""
    last: Reply | None = None
    timed_out: bool = False

    def counts(self) -> dict[str, int]:
        """The outcome fields this track fills: ``attempts`` and ``throttled``."""
        return {"attempts": self.attempts, "throttled": self.throttled}


class Settle:
    """After an attempt about a message timed out, that message's next request waits ``delay``
    seconds: the timed-out request may still be in flight, and must not land after a newer one.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._until: dict[Hashable, float] = {}
        self._order: deque[tuple[float, Hashable]] = deque()

    def hold(self, key: Hashable) -> None:
        """A request about ``key`` just timed out."""
        until = time.monotonic() + self.delay
        self._until[key] = until
        self._order.append((until, key))

    def remaining(self, key: Hashable) -> float:
        """Seconds ``key``'s next request must still wait (0: none)."""
        if not self._until:
            return 0.0
        now = time.monotonic()
        while self._order and self._order[0][0] <= now:
            until, old = self._order.popleft()
            if self._until.get(old) == until:
                del self._until[old]
        return max(0.0, self._until.get(key, now) - now)


class _Departure:
    """Tells the limiter, once, that the request granted at ``granted`` leaves now."""

    __slots__ = ("_granted", "_limiter")

    def __init__(self, limiter: Limiter | None, granted: float) -> None:
        self._limiter = limiter
        self._granted = granted

    def __call__(self) -> None:
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            limiter.departed(self._granted)


class Sender:
    """Sends requests through one client and one limiter, under one retry policy."""

    def __init__(
        self,
        client: ImClient,
        limiter: Limiter | None,
        policy: RetryPolicy,
        state: RunState,
        sig_guard: SigGuard,
        on_send: Callable[[float], None] = lambda _: None,
        *,
        reach: Callable[[Reply], None] = lambda _: None,
        settle: Settle | None = None,
    ) -> None:
        self._client = client
        self.limiter = limiter
        self._policy = policy
        self._state = state
        self._sig_guard = sig_guard
        self._on_send = on_send
        self._reach = reach
        self._settle = settle or Settle(client.timeout)

    async def call(self, api: str, body: Mapping[str, Any]) -> Reply:
        """A :data:`~batchedit.im.client.Caller`: the final answer after retries.

        When the run stopped before the first attempt, the answer has no code and says so.
        """
        track = Track()
        await self.send(api, orjson.dumps(body), track)
        if track.last is None:
            return Reply(None, "not sent: the run is stopping", http_status=None)
        return track.last

    async def _attempt(
        self, api: str, payload: bytes, track: Track
    ) -> tuple[Reply, float, int] | None:
        """One HTTP attempt once the limiter grants it: the reply, the grant's time and the
        UserSig generation sent; ``None`` when the run stopped first (a lost budget stops it)."""
        try:
            granted = await self._state.grant(self.limiter) if self.limiter else time.monotonic()
        except BudgetLost as exc:
            self._state.stop(
                "budget", f"{exc}; in-flight requests were let finish; run again with --resume"
            )
            return None
        if granted is None:
            return None
        departure = _Departure(self.limiter, granted)
        try:
            if self._state.stopping:
                return None
            self._client.sig.current()  # made or renewed now, so this is the generation sent
            generation = self._client.sig.generation
            self._on_send(granted)
            track.attempts += 1
            # Without a limiter nobody counts departures: no notice to queue per request.
            told = departure if self.limiter else None
            reply = track.last = await self._client.call_raw(api, payload, told)
        finally:
            departure()  # if the request never got a connection (or never tried)
        return reply, granted, generation

    async def send(
        self, api: str, payload: bytes, track: Track, message: Hashable | None = None
    ) -> str | None:
        """Send until the answer is final; attempts and the last reply land in ``track``.

        ``message`` names what the request changes: after an attempt about it timed out, its
        next request (a retry, or the next edit of the same message) is held back for the
        settle delay. Returns why retrying ended early (time or throttle budget spent, run
        stopping), or ``None`` when the last reply is simply the final answer. ``track.attempts``
        stays 0 when the run stopped before the first attempt.
        """
        policy = self._policy
        state = self._state
        started = time.monotonic()
        failures = 0
        while True:
            if state.stopping:
                return "the run stopped before the next retry" if track.attempts else None
            held = self._settle.remaining(message) if message is not None else 0.0
            if held > 0:
                await state.pause(held)
                continue
            attempt = await self._attempt(api, payload, track)
            if attempt is None:
                return "the run stopped before the next retry" if track.attempts else None
            reply, granted, generation = attempt
            self._reach(reply)
            if reply.timed_out:
                track.timed_out = True
                if message is not None:
                    self._settle.hold(message)
            kind = reply.error_class
            if kind in (ErrorClass.OK, ErrorClass.PERMANENT):
                return None
            if kind is ErrorClass.SIG_EXPIRED and self._sig_guard.renew(generation):
                continue
            if kind in (ErrorClass.FATAL, ErrorClass.SIG_EXPIRED):
                state.stop("fatal", fatal_reason(reply.code, reply.info))
                return None
            if time.monotonic() - started > policy.max_seconds:
                return f"gave up after {policy.max_seconds:g} s"
            if kind is ErrorClass.RATE_LIMITED:
                track.throttled += 1
                if track.throttled > policy.max_throttled:
                    return f"still throttled after {policy.max_throttled} tries"
                if self.limiter is not None:
                    self.limiter.throttled(granted)
                    continue
                delay = policy.backoff(track.throttled)
            else:
                failures += 1
                if failures >= policy.max_attempts:
                    return None
                delay = policy.backoff(failures)
            state.retrying += 1
            try:
                await state.pause(delay)
            finally:
                state.retrying -= 1
