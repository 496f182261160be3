"""One wiring for sending: the client, the UserSig guard, the reachability check and a limiter
per API budget, built in one place for ``run``, ``undo`` and ``plan``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from yarl import URL

from batchedit.departures import DepartureLog, Recorded
from batchedit.im.auth import SigSource
from batchedit.im.client import ImClient, Reply
from batchedit.im.errors import ConfigError
from batchedit.im.tls import client_context
from batchedit.ratelimit import Limiter, Limiters, open_limiters
from batchedit.retry import RetryPolicy
from batchedit.sender import RunState, Sender, Settle, SigGuard

UNREACHABLE_AFTER = 10
"""A run whose first this many requests all fail to connect stops: the host is unreachable."""


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """How requests reach the IM REST API (shared by ``run``, ``undo`` and ``plan``).

    ``endpoint`` is the base URL and ``sig`` the credentials (both may be left out for a dry
    run). ``rate`` is requests per second per API (``None``: no limit), kept in any window of
    ``window`` seconds (one second plus a margin for uneven arrival at the server);
    ``concurrency`` bounds the records (or conversations) in progress; ``timeout`` is seconds per
    HTTP attempt; ``settle`` is how many seconds a message's next edit waits after an attempt on
    it timed out (``None``: ``timeout``).
    """

    endpoint: str = ""
    sig: SigSource | None = None
    rate: float | None = 200.0
    window: float = 1.005
    concurrency: int = 100
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 10.0
    settle: float | None = None
    ca_file: Path | None = None
    """PEM file of the CA certificates to trust over https instead of the system's."""
    budget: str | None = None
    """Redis URL of a request budget shared with other processes (``None``: this run's own)."""
    results: Path | None = None
    """The results log. When sending, when each request left is kept beside it (see
    :mod:`batchedit.departures`), so that a run resumed right after a crash keeps the rate."""


class _Reach:
    """Stops the run when its first :data:`UNREACHABLE_AFTER` requests all fail to connect."""

    def __init__(self, endpoint: str, state: RunState) -> None:
        url = URL(endpoint)
        self._host = f"{url.host}:{url.port}" if url.explicit_port else str(url.host)
        self._state = state
        self._failures = 0
        self._known = False

    def saw(self, reply: Reply) -> None:
        if self._known:
            return
        if reply.reached:
            self._known = True
            return
        self._failures += 1
        if self._failures >= UNREACHABLE_AFTER:
            self._state.stop(
                "fatal",
                f"cannot reach {self._host} ({reply.info}): check the base URL or region, "
                "and this machine's network",
            )


class Senders:
    """One client, one UserSig guard, one reachability check, and the limiters of one budget
    (this process's own, or one shared through Redis with ``budget``); a :class:`Sender` per API.

    Use as ``async with`` inside the running loop. Entering it connects to the shared budget
    first, so a budget that cannot be reached raises :class:`ConfigError` before anything is sent;
    so does a departures file beside ``config.results`` that cannot be opened. Limited requests
    record their departures there (see :mod:`batchedit.departures`).
    """

    def __init__(self, config: ApiConfig, state: RunState) -> None:
        if config.sig is None or not config.endpoint:
            raise ConfigError("sending needs an endpoint and credentials")
        self.config = config
        self._state = state
        self._client = ImClient(
            config.endpoint,
            config.sig,
            timeout=config.timeout,
            max_connections=config.concurrency,
            ssl_context=client_context(config.ca_file),
        )
        self._guard = SigGuard(config.sig)
        self._reach = _Reach(config.endpoint, state)
        self._settle = Settle(config.timeout if config.settle is None else config.settle)
        self._stack = contextlib.AsyncExitStack()
        self._limiters: Limiters | None = None
        self._departures: DepartureLog | None = None

    async def __aenter__(self) -> Senders:
        config = self.config
        sdkappid = config.sig.sdkappid if config.sig is not None else 0
        async with contextlib.AsyncExitStack() as stack:
            self._limiters = await stack.enter_async_context(
                open_limiters(config.rate, config.window, config.budget, sdkappid)
            )
            if config.results is not None:
                self._departures = DepartureLog.open(config.results)
                stack.callback(self._departures.close)
            await stack.enter_async_context(self._client)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.__aexit__(exc_type, exc, tb)

    def sender(self, api: str, on_send: Callable[[float], None] = lambda _: None) -> Sender:
        """A sender for ``api`` with that API's limiter (the service limits each API on its
        own); ``on_send(time)`` is told of each attempt. Without a limit, the departures file
        is emptied (raises :class:`ConfigError` if it cannot be)."""
        if self._limiters is None:
            raise RuntimeError("Senders.sender() outside 'async with'")
        limiter: Limiter | None = self._limiters(api)
        if self._departures is not None:
            if limiter is None:
                self._departures.forget()
            else:
                limiter = Recorded(limiter, self._departures, api, self.config.window)
        return Sender(
            self._client,
            limiter,
            self.config.policy,
            self._state,
            self._guard,
            on_send,
            reach=self._reach.saw,
            settle=self._settle,
        )
