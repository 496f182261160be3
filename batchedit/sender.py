"""Sending one request until it has a final answer: rate limit, retries, UserSig renewal, stop.

Every HTTP attempt, retries included, takes a grant from the limiter; waiting between retries
happens outside the limiter. What each answer means comes from :mod:`batchedit.im.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
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

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if a stop is requested meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)


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
    """One record's attempts so far, readable even if its task is cancelled midway."""

    attempts: int = 0
    last: Reply | None = None


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
    ) -> None:
        self._client = client
        self._limiter = limiter
        self._policy = policy
        self._state = state
        self._sig_guard = sig_guard
        self._on_send = on_send

    async def call(self, api: str, body: Mapping[str, Any]) -> Reply:
        """A :data:`~batchedit.im.client.Caller`: the final answer after retries.

        When the run stopped before the first attempt, the answer has no code and says so.
        """
        track = Track()
        await self.send(api, orjson.dumps(body), track)
        if track.last is None:
            return Reply(None, "not sent: the run is stopping", http_status=None)
        return track.last

    async def send(self, api: str, payload: bytes, track: Track) -> str | None:
        """Send until the answer is final; attempts and the last reply land in ``track``.

        Returns why retrying ended early (time or throttle budget spent, run stopping), or
        ``None`` when the last reply is simply the final answer. ``track.attempts`` stays 0 when
        the run stopped before the first attempt.
        """
        policy = self._policy
        state = self._state
        started = time.monotonic()
        failures = throttled = 0
        while True:
            if state.stopping:
                return "the run stopped before the next retry" if track.attempts else None
            try:
                granted = await self._limiter.acquire() if self._limiter else time.monotonic()
            except BudgetLost as exc:
                state.stop(
                    "budget", f"{exc}; in-flight requests were let finish; run again with --resume"
                )
                return "the run stopped before the next retry" if track.attempts else None
            if state.stopping:
                return "the run stopped before the next retry" if track.attempts else None
            self._client.sig.current()  # made or renewed now, so this is the generation sent
            generation = self._client.sig.generation
            self._on_send(granted)
            track.attempts += 1
            reply = track.last = await self._client.call_raw(api, payload)
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
                throttled += 1
                if throttled > policy.max_throttled:
                    return f"still throttled after {policy.max_throttled} tries"
                if self._limiter is not None:
                    self._limiter.throttled(granted)
                    continue
                delay = policy.backoff(throttled)
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
