"""``run_batch``: the whole pipeline as one async call, usable without the CLI.

reader → (resume filter) → ordered worker pool → sender → results log → summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from batchedit.backup import BeforeImages
from batchedit.im.auth import SigSource
from batchedit.im.client import MODIFY, ROAM, ImClient
from batchedit.im.errors import ConfigError
from batchedit.outcomes import Outcome, Status, Summary
from batchedit.pool import OrderedPool
from batchedit.ratelimit import Limiter, open_limiters
from batchedit.records import (
    Done,
    EditRecord,
    InvalidRecord,
    Item,
    MessageId,
    parse_line,
    read_records,
)
from batchedit.results import JsonlAppender, ResumeIndex
from batchedit.retry import RetryPolicy
from batchedit.sender import RunState, Sender, SigGuard, Track

_CHUNK = 512


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything a run needs besides its input.

    ``endpoint`` and ``sig`` may be left out for a dry run. ``rate`` is requests per second
    (``None``: no limit); ``timeout`` is seconds per HTTP attempt; ``breaker`` stops the run
    after that many consecutive failures with one code (0: never); ``grace`` is how long, in
    seconds, in-flight requests may finish once a stop is requested; ``window`` is the
    limiter's window in seconds, one second plus a margin for uneven arrival at the server.
    """

    results: Path | None
    endpoint: str = ""
    sig: SigSource | None = None
    rate: float | None = 200.0
    concurrency: int = 100
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 10.0
    resume: bool = False
    dry_run: bool = False
    breaker: int = 50
    grace: float = 10.0
    window: float = 1.005
    backup: Path | None = None
    """Append each message's before-image here before editing it (``run --backup``)."""
    force: bool = False
    """With ``backup``: send edits that would change nothing, too."""
    budget: str | None = None
    """Redis URL of a request budget shared with other processes (``None``: this run's own)."""


class Observer(Protocol):
    """Watches a run: every outcome as it is recorded, and a tick twice a second."""

    def outcome(self, outcome: Outcome) -> None:
        """A line reached its final outcome."""

    def tick(self, summary: Summary, rate: float | None, retrying: int) -> None:
        """Periodic progress: the summary so far, the rate in force, records waiting to retry."""


class RunControl:
    """Lets a caller (the CLI's signal handlers) stop a run gracefully, or at once."""

    def __init__(self) -> None:
        self.state = RunState()
        self._now = asyncio.Event()

    def interrupt(self) -> None:
        """First Ctrl-C: take no new records, let in-flight ones finish."""
        self.state.stop("interrupted", "interrupted: in-flight edits were let finish")

    def cancel_now(self) -> None:
        """Second Ctrl-C: cancel in-flight requests too."""
        self.state.stop("interrupted", "interrupted")
        self._now.set()

    async def wait_cancel(self) -> None:
        """Returns once :meth:`cancel_now` was called."""
        await self._now.wait()


def _chunks(stream: IO[bytes], index: ResumeIndex | None) -> Iterator[list[Item | Done]]:
    items = read_records(stream, index.is_done if index is not None else None)
    while chunk := list(itertools.islice(items, _CHUNK)):
        yield chunk


class _Breaker:
    """Trips after ``limit`` consecutive failed outcomes with one ErrorCode."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._code: int | None = None
        self._streak = 0

    def add(self, outcome: Outcome) -> bool:
        if outcome.status is Status.OK:
            self._streak = 0
        elif outcome.status is Status.FAILED:
            same = self._streak and outcome.code == self._code
            self._streak = self._streak + 1 if same else 1
            self._code = outcome.code
        return bool(self.limit) and self._streak >= self.limit


def _outcome_of(item: Item, status: Status, **fields: Any) -> Outcome:
    return Outcome(
        item.line, item.digest, status, item.from_account, item.to_account, item.msg_key, **fields
    )


async def run_batch(
    source: IO[bytes],
    config: RunConfig,
    *,
    observer: Observer | None = None,
    control: RunControl | None = None,
) -> Summary:
    """Apply every edit of ``source`` (JSONL bytes) and return the summary.

    Each line gets exactly one outcome in ``config.results`` (not written on a dry run, which
    only validates and sends nothing); a run that stops early (fatal answer, circuit breaker,
    interruption) leaves the unsent lines for ``--resume`` and says why in ``Summary.stopped``
    and ``Summary.reason``.
    """
    if config.dry_run:
        config = dataclasses.replace(config, sig=None, backup=None, budget=None)
    elif config.results is None or config.sig is None:
        raise ConfigError("a real run needs a results file and credentials")
    run = _Run(config, observer, control or RunControl())
    started = time.monotonic()
    try:
        await run.execute(source)
    finally:
        summary = run.summary
        summary.elapsed = time.monotonic() - started
        summary.rate = run.limiter.stats() if run.limiter else None
        summary.stopped = run.state.stopped
        summary.reason = run.state.reason
    return summary


class _Run:
    """One run's moving parts, so the stages need not pass them to each other."""

    def __init__(self, config: RunConfig, observer: Observer | None, control: RunControl) -> None:
        self.config = config
        self.observer = observer
        self.control = control
        self.state = control.state
        self.summary = Summary(dry_run=config.dry_run)
        self.index = ResumeIndex.load(config.results) if config.resume and config.results else None
        self.limiter: Limiter | None = None
        self._breaker = _Breaker(config.breaker)
        self._results: JsonlAppender | None = None
        self._sender: Sender | None = None
        self._before: BeforeImages | None = None

    def record(self, outcome: Outcome) -> None:
        """Log, fold and show one final outcome; trip the breaker if it is due."""
        if self._results is not None:
            self._results.append(outcome.as_json())
        self.summary.add(outcome)
        if self.observer is not None:
            self.observer.outcome(outcome)
        if self._breaker.add(outcome):
            self.state.stop(
                "breaker",
                f"the last {self._breaker.limit} edits all failed with ErrorCode {outcome.code} "
                f"({outcome.info}); fix the cause, then run again with --resume",
            )

    async def execute(self, source: IO[bytes]) -> None:
        config = self.config
        async with contextlib.AsyncExitStack() as stack:
            # The budget first: if its Redis cannot be reached, nothing is written or sent.
            app = config.sig.sdkappid if config.sig is not None else 0
            limiters = await stack.enter_async_context(
                open_limiters(config.rate, config.window, config.budget, app)
            )
            if not config.dry_run:
                self.limiter = limiters(MODIFY)
            if config.results is not None and not config.dry_run:
                self._results = stack.enter_context(JsonlAppender(config.results))
            if self.observer is not None:
                ticking = asyncio.create_task(self._tick(self.observer))
                stack.push_async_callback(_cancel, ticking)
            if config.sig is None:
                await self._feed(source, None)
                return
            client = await stack.enter_async_context(
                ImClient(
                    config.endpoint,
                    config.sig,
                    timeout=config.timeout,
                    max_connections=config.concurrency,
                )
            )
            guard = SigGuard(config.sig)
            self._sender = Sender(
                client, self.limiter, config.policy, self.state, guard, self.summary.sent_at
            )
            if config.backup is not None:
                log = stack.enter_context(JsonlAppender(config.backup))
                # Reads have their own 200/s budget (a per-API limit), hence their own limiter.
                reader = Sender(
                    client, limiters(ROAM), config.policy, self.state, guard, self._count_read
                )
                self._before = BeforeImages(reader, log, self.state, config.force)
            await self._edit_all(source)

    def _count_read(self, _: float) -> None:
        self.summary.reads += 1

    async def _tick(self, observer: Observer) -> None:
        while True:
            rate = self.limiter.rate() if self.limiter else None
            observer.tick(self.summary, rate, self.state.retrying)
            await asyncio.sleep(0.5)

    async def _edit_all(self, source: IO[bytes]) -> None:
        pool: OrderedPool[EditRecord] = OrderedPool(
            self._handle, lambda r: r.message, self.config.concurrency
        )
        await self._feed(source, pool)
        if not self.state.stopping:
            await _first(pool.drain(), self.state.pause(float("inf")))
        closing = asyncio.create_task(pool.close(self.config.grace))
        await _first(asyncio.shield(closing), self.control.wait_cancel())
        if not closing.done():
            await pool.close(0)
        await closing

    async def _handle(self, item: EditRecord) -> None:
        if self._before is not None:
            skip = await self._before.prepare(item)
            if skip is not None:
                if skip.status is not None:
                    fields = {"code": skip.code, "info": skip.info, "note": skip.note}
                    self.record(_outcome_of(item, skip.status, **fields))
                return
        if self._sender is None:
            raise RuntimeError("_handle called before the sender exists")
        track = Track()
        try:
            note = await self._sender.send(MODIFY, item.body, track)
        except asyncio.CancelledError:
            if track.attempts:
                info = "interrupted in flight: the edit may or may not have been applied"
                self.record(_outcome_of(item, Status.FAILED, info=info, attempts=track.attempts))
            raise
        reply = track.last
        if reply is None:
            return
        status = Status.OK if reply.ok else Status.FAILED
        self.record(
            _outcome_of(
                item,
                status,
                code=reply.code,
                info=reply.info,
                attempts=track.attempts,
                latency=reply.latency,
                note=note,
            )
        )

    async def _feed(self, source: IO[bytes], pool: OrderedPool[EditRecord] | None) -> None:
        chunks = _chunks(source, self.index)
        redo: set[MessageId] = set()
        while not self.state.stopping:
            chunk = await asyncio.to_thread(next, chunks, None)
            if chunk is None:
                return
            for entry in chunk:
                if self.state.stopping:
                    return
                item = self._unless_done(entry, redo)
                if item is None:
                    self.summary.skipped += 1
                elif isinstance(item, InvalidRecord):
                    self.record(_outcome_of(item, Status.INVALID, info=item.reason))
                elif pool is None:
                    self.record(_outcome_of(item, Status.OK, note="dry run: valid, not sent"))
                else:
                    if self.index is not None:
                        redo.add(item.message)
                    await pool.submit(item)

    @staticmethod
    def _unless_done(entry: Item | Done, redo: set[MessageId]) -> Item | None:
        """The item to handle, or ``None`` for a line an earlier run finished.

        A finished line is redone when an earlier line of its message is being redone: the
        message must still end with the last edit of the file.
        """
        if not isinstance(entry, Done):
            return entry
        if not redo:
            return None
        item = parse_line(entry.line, entry.raw, entry.digest)
        return item if isinstance(item, EditRecord) and item.message in redo else None


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _first(*aws: Coroutine[Any, Any, None] | asyncio.Future[None]) -> None:
    """Wait until the first of ``aws`` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
