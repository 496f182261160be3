"""``run_batch``: the whole pipeline as one async call, usable without the CLI.

reader → (resume filter) → ordered worker pool → sender → results log → summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from batchedit.auth import SigSource
from batchedit.client import ImClient
from batchedit.errors import ConfigError
from batchedit.outcomes import Outcome, Status, Summary
from batchedit.pool import OrderedPool
from batchedit.ratelimit import AdaptiveLimiter
from batchedit.records import EditRecord, InvalidRecord, Item, MessageId, read_records
from batchedit.results import ResultsWriter, ResumeIndex
from batchedit.retry import RetryPolicy
from batchedit.sender import RunState, Sender, SigGuard, Track

MODIFY = "openim/modify_c2c_msg"
_CHUNK = 512


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything a run needs besides its input.

    ``endpoint`` and ``sig`` may be left out for a dry run. ``rate`` is requests per second
    (``None``: no limit); ``timeout`` is seconds per HTTP attempt; ``breaker`` stops the run
    after that many consecutive failures with one code (0: never); ``grace`` is how long, in
    seconds, in-flight requests may finish once a stop is requested.
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
    window: float = 1.004


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


def _chunks(stream: BinaryIO) -> Iterator[list[Item]]:
    items = read_records(stream)
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
    source: BinaryIO,
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
        config = dataclasses.replace(config, sig=None)
    elif config.results is None or config.sig is None:
        raise ConfigError("a real run needs a results file and credentials")
    control = control or RunControl()
    state = control.state
    summary = Summary(dry_run=config.dry_run)
    index = ResumeIndex.load(config.results) if config.resume and config.results else None
    limiter = None
    if config.rate and not config.dry_run:
        limiter = AdaptiveLimiter(config.rate, window=config.window)
    breaker = _Breaker(config.breaker)
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        writer = None
        if config.results is not None and not config.dry_run:
            writer = stack.enter_context(ResultsWriter(config.results))

        def record(outcome: Outcome) -> None:
            if writer is not None:
                writer.write(outcome)
            summary.add(outcome)
            if observer is not None:
                observer.outcome(outcome)
            if breaker.add(outcome):
                state.stop(
                    "breaker",
                    f"the last {breaker.limit} edits all failed with ErrorCode {outcome.code} "
                    f"({outcome.info}); fix the cause, then run again with --resume",
                )

        if observer is not None:
            stack.push_async_callback(
                _cancel, asyncio.create_task(_tick(observer, summary, limiter, state))
            )
        try:
            sig = config.sig
            if sig is None:
                await _feed(source, config, None, record, index, summary, state)
            else:
                client = await stack.enter_async_context(
                    ImClient(
                        config.endpoint,
                        sig,
                        timeout=config.timeout,
                        max_connections=config.concurrency,
                    )
                )
                sender = Sender(
                    client, limiter, config.policy, state, SigGuard(sig), summary.sent_at
                )
                await _edit(source, config, sender, record, index, summary, control)
        finally:
            summary.elapsed = time.monotonic() - started
            summary.rate = limiter.stats() if limiter else None
            summary.stopped = state.stopped
            summary.reason = state.reason
    return summary


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _tick(
    observer: Observer, summary: Summary, limiter: AdaptiveLimiter | None, state: RunState
) -> None:
    while True:
        observer.tick(summary, limiter.rate() if limiter else None, state.retrying)
        await asyncio.sleep(0.5)


async def _edit(
    source: BinaryIO,
    config: RunConfig,
    sender: Sender,
    record: Callable[[Outcome], None],
    index: ResumeIndex | None,
    summary: Summary,
    control: RunControl,
) -> None:
    state = control.state

    async def handle(item: EditRecord) -> None:
        track = Track()
        try:
            note = await sender.send(MODIFY, item.body, track)
        except asyncio.CancelledError:
            if track.attempts:
                info = "interrupted in flight: the edit may or may not have been applied"
                record(_outcome_of(item, Status.FAILED, info=info, attempts=track.attempts))
            raise
        reply = track.last
        if reply is None:
            return
        status = Status.OK if reply.ok else Status.FAILED
        record(
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

    pool: OrderedPool[EditRecord] = OrderedPool(handle, lambda r: r.message, config.concurrency)
    await _feed(source, config, pool, record, index, summary, state)
    if not state.stopping:
        await _first(pool.drain(), state_wait(state))
    closing = asyncio.create_task(pool.close(config.grace))
    await _first(asyncio.shield(closing), control.wait_cancel())
    if not closing.done():
        await pool.close(0)
    await closing


async def _first(*aws: Coroutine[Any, Any, None] | asyncio.Future[None]) -> None:
    """Wait until the first of ``aws`` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def state_wait(state: RunState) -> None:
    """Returns once a stop was requested."""
    await state.pause(float("inf"))


async def _feed(
    source: BinaryIO,
    config: RunConfig,
    pool: OrderedPool[EditRecord] | None,
    record: Callable[[Outcome], None],
    index: ResumeIndex | None,
    summary: Summary,
    state: RunState,
) -> None:
    chunks = _chunks(source)
    redo: set[MessageId] = set()
    while not state.stopping:
        chunk = await asyncio.to_thread(next, chunks, None)
        if chunk is None:
            return
        for item in chunk:
            if state.stopping:
                return
            message = item.message if isinstance(item, EditRecord) else None
            # A done line is redone when an earlier line of its message is: the message must
            # still end with the last edit of the file.
            if (
                index is not None
                and index.is_done(item.line, item.digest)
                and (message is None or message not in redo)
            ):
                summary.skipped += 1
                continue
            if isinstance(item, InvalidRecord):
                record(_outcome_of(item, Status.INVALID, info=item.reason))
            elif pool is None:
                record(_outcome_of(item, Status.OK, note="dry run: valid, not sent"))
            else:
                if index is not None and message is not None:
                    redo.add(message)
                await pool.submit(item)
