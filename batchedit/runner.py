"""``run_batch``: the whole pipeline as one async call, usable without the CLI.

reader → (resume filter) → ordered worker pool → sender → results log → summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from batchedit.edits import Action, Edits, LineKind, Wiring, outcome_of
from batchedit.feed import Entry, Feed, dry_outcome
from batchedit.im.client import redact
from batchedit.im.errors import ConfigError
from batchedit.im.tls import check_certificate, client_context
from batchedit.jsonlog import JsonlAppender
from batchedit.outcomes import Outcome, Status, Summary
from batchedit.pool import OrderedPool
from batchedit.preflight import check_run_files, count_rest, start_lines
from batchedit.progress import Observer, Progress, ticking
from batchedit.ratelimit import Limiter
from batchedit.reader import InputError, LineReader
from batchedit.records import EditRecord, parse_line
from batchedit.results import ResumeIndex
from batchedit.sender import RunControl, Track
from batchedit.wiring import ApiConfig, Senders


@dataclass(frozen=True, slots=True)
class RunConfig(ApiConfig):
    """Everything a run needs besides its input: the :class:`~batchedit.wiring.ApiConfig`
    fields (endpoint, credentials, rate, timeouts, retries), and these.

    ``results`` (from :class:`~batchedit.wiring.ApiConfig`) is the results log (not needed for a
    dry run); ``breaker`` stops the run after that many consecutive failures with one code (0:
    never); ``grace`` is how long, in seconds, in-flight requests may finish once a stop is
    requested.
    """

    resume: bool = False
    dry_run: bool = False
    breaker: int = 50
    grace: float = 10.0
    backup: Path | None = None
    """Append each message's before-image here before editing it (``run --backup``)."""
    force: bool = False
    """With ``backup``: send edits that would change nothing, too. For an undo: restore
    messages that changed since the run, too."""
    summary_json: Path | None = None
    """Where the caller writes the summary as JSON; checked with the run's files before the run."""
    read_from: Path | None = None
    """The file the input was made from when it is not read directly (undo's BACKUP), for the
    run-file rules and the start line."""


class _Breaker:
    """Trips after ``limit`` consecutive failed outcomes with one ErrorCode (an invalid line
    neither counts nor breaks the streak; any other outcome breaks it)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._code: int | None = None
        self._streak = 0

    def add(self, outcome: Outcome) -> bool:
        if outcome.status is Status.FAILED:
            same = self._streak and outcome.code == self._code
            self._streak = self._streak + 1 if same else 1
            self._code = outcome.code
        elif outcome.status is not Status.INVALID:
            self._streak = 0
        return bool(self.limit) and self._streak >= self.limit


def _describe(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}")


async def run_batch(
    source: IO[bytes],
    config: RunConfig,
    *,
    observer: Observer | None = None,
    control: RunControl | None = None,
    kind: LineKind | None = None,
) -> Summary:
    """Apply every edit of ``source`` (JSONL bytes) and return the summary.

    ``kind`` says what is done with each valid line: by default it is sent as an edit
    (:class:`~batchedit.edits.Edits`); ``undo`` and ``verify`` pass their own.

    Each line gets exactly one outcome in ``config.results`` (not written on a dry run, which
    only validates and sends nothing); a run that stops early (fatal answer, circuit breaker,
    interruption, an error of its own) leaves the unsent lines for ``--resume``, says why in
    ``Summary.stopped`` and ``Summary.reason``, and counts them in ``Summary.unsent``. Cancelling
    the call cancels the in-flight edits (each recorded as "interrupted in flight"), closes
    everything, and raises ``CancelledError``. A run whose files break the rules of
    :mod:`batchedit.preflight`, or whose https endpoint has a certificate that does not verify
    (trust a private CA with ``ca_file``), raises :class:`ConfigError` before anything is sent or
    written.
    """
    kind = kind or Edits()
    if config.dry_run:
        config = dataclasses.replace(config, backup=None)
        if not kind.reads_on_dry_run:
            config = dataclasses.replace(config, sig=None, budget=None)
    elif config.results is None or config.sig is None:
        raise ConfigError("a real run needs a results file and credentials")
    check_run_files(
        config.read_from or source,
        input_role="BACKUP" if config.read_from else "EDITS",
        results=None if config.dry_run else config.results,
        backup=config.backup,
        summary_json=config.summary_json,
        resume=config.resume,
    )
    if config.sig is not None:
        await check_certificate(config.endpoint, client_context(config.ca_file), config.timeout)
    run = _Run(config, kind, observer, control or RunControl())
    started = time.monotonic()
    try:
        await run.execute(source)
    finally:
        summary = run.summary
        summary.elapsed = time.monotonic() - started
        summary.rate = run.limiter.stats() if run.limiter else None
        summary.stopped = run.state.stopped
        summary.reason = run.state.reason
    if summary.stopped is not None:
        # The reader has stopped: every line after the last one it read is unread.
        rest = count_rest(source)
        read = run.lines_read + (rest or 0)
        summary.unsent = read - summary.total - summary.skipped
        summary.unsent_after = run.lines_read if rest is None else None
    return summary


class _Run:
    """One run's moving parts, so the stages need not pass them to each other."""

    def __init__(
        self, config: RunConfig, kind: LineKind, observer: Observer | None, control: RunControl
    ) -> None:
        self.config = config
        self.kind = kind
        self.observer = observer
        self.control = control
        self.state = control.state
        self.summary = Summary(dry_run=config.dry_run, outcomes=kind.outcomes)
        self.index: ResumeIndex | None = None
        self.limiter: Limiter | None = None
        self._breaker = _Breaker(config.breaker)
        self._results: JsonlAppender | None = None
        self._results_failed = False
        self._log_failed = False
        self._action: Action | None = None
        self._reader: LineReader[Entry] | None = None
        self._pool: OrderedPool[EditRecord] | None = None

    @property
    def lines_read(self) -> int:
        """The number of the last input line taken from the input so far."""
        return self._reader.lines_read if self._reader is not None else 0

    def record(self, outcome: Outcome) -> None:
        """Log, fold and show one final outcome; trip the breaker if it is due. Never raises for
        a log that cannot be written: that stops the run, and the summary counts what is missing.
        """
        self.summary.add(outcome)
        if self._results is not None and not self._results_failed:
            try:
                self._results.append(outcome.as_json())
            except OSError as exc:
                self._results_failed = self._log_failed = True
                self.state.stop(
                    "fatal",
                    f"cannot write the results log {self._results.path} "
                    f"({exc.strerror or exc}); free space or raise the file size limit, then run "
                    "again with --resume",
                )
        if self._results_failed:
            self.summary.unrecorded += 1
        if self.observer is not None:
            self.observer.outcome(outcome)
        if self._breaker.add(outcome):
            self.state.stop(
                "breaker",
                f"the last {self._breaker.limit} edits all failed with ErrorCode {outcome.code} "
                f"({outcome.info}); fix the cause, then run again with --resume",
            )

    def _closing_a_failed_log(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """A log whose write failed fails again as it closes; that error was already reported."""
        return self._log_failed and isinstance(exc, OSError)

    def _progress(self) -> Progress:
        statuses = self.summary.statuses
        counts = {s.value: statuses[s.value] for s in self.summary.shown}
        return Progress(
            self.summary.total + self.summary.skipped,
            {**counts, "retrying": self.state.retrying},
            skipped=self.summary.skipped,
            rate=self.limiter.rate() if self.limiter else None,
            in_flight=self._pool.running if self._pool is not None else None,
            limits=self.limiter.stats() if self.limiter else None,
        )

    async def execute(self, source: IO[bytes]) -> None:
        config = self.config
        # Entered in this order so that they close in reverse: the pool (and with it every
        # worker) before the logs and the client the workers use.
        async with contextlib.AsyncExitStack() as stack:
            # The budget first: if its Redis cannot be reached, nothing is written or sent.
            senders = None
            if config.sig is not None:
                senders = await stack.enter_async_context(Senders(config, self.state))
            if config.results is not None and not config.dry_run:
                stack.push(self._closing_a_failed_log)
                self._results = stack.enter_context(JsonlAppender(config.results))
                stack.push(_removed_if_refused(self._results))
            if config.resume and config.results is not None:
                # After the appender took the lock and cut a torn last row, not before.
                outcomes = self.kind.outcomes
                self.index = ResumeIndex.load(
                    config.results, outcomes.resume_codes(), outcomes.command
                )
            backup = None
            if config.backup is not None:
                stack.push(self._closing_a_failed_log)
                backup = stack.enter_context(JsonlAppender(config.backup))
                stack.push(_removed_if_refused(backup))
            self._announce(source)
            await stack.enter_async_context(ticking(self.observer, self._progress))
            if senders is not None:
                notice = self.observer.notice if self.observer is not None else _ignore
                wiring = Wiring(
                    senders,
                    self.state,
                    self.summary,
                    backup,
                    config.force,
                    config.dry_run,
                    notice,
                )
                self._action, self.limiter = await self.kind.open(source, wiring)
            done = self.index.done_among if self.index is not None else None
            # A dry run that sends nothing makes its outcomes as the lines are read, no records.
            parse = dry_outcome if senders is None else parse_line
            reader = self._reader = await stack.enter_async_context(
                LineReader[Entry](source, parse, done)
            )
            self.state.on_stop(reader.stop)
            if senders is None:
                await self._feed(reader, None)
                return
            pool: OrderedPool[EditRecord] = await stack.enter_async_context(
                OrderedPool(self._handle, lambda r: r.message, config.concurrency)
            )
            self._pool = pool
            self.state.on_stop(pool.stop)
            await self._feed(reader, pool)
            await self._finish(pool)

    def _announce(self, source: IO[bytes]) -> None:
        """The start line (and a rate warning), once the logs are open and before any request."""
        config = self.config
        if self.observer is None or config.sig is None:
            return
        name = config.read_from or getattr(source, "name", None) or "-"
        for line in start_lines(
            config.endpoint, config.sig, str(name), config.rate, config.concurrency
        ):
            self.observer.notice(line)

    async def _finish(self, pool: OrderedPool[EditRecord]) -> None:
        """Let everything submitted finish (or, once stopping, give it the grace period); a
        second Ctrl-C cuts that short."""
        if not self.state.stopping:
            await _first(pool.drain(), self.state.pause(float("inf")))
        if not await self.control.finish(pool.close(self.config.grace)):
            await pool.close(0)

    async def _handle(self, item: EditRecord) -> None:
        track = Track()
        try:
            if self._action is None:
                raise RuntimeError("a line handled before the run's action exists")
            outcome = await self._action(item, track)
        except asyncio.CancelledError:
            if track.attempts:
                info = "interrupted in flight: the edit may or may not have been applied"
                self.record(outcome_of(item, Status.FAILED, info=info, **track.counts()))
            raise
        except Exception as exc:  # a bug, or a log that cannot be written: stop, say which line
            self._log_failed = self._log_failed or isinstance(exc, OSError)
            info = f"stopped by an error of batchedit: {self._stop_for(item, exc)}"
            outcome = outcome_of(item, Status.FAILED, info=info, **track.counts())
        if outcome is None:
            return
        try:
            self.record(outcome)
        except Exception as exc:  # an observer's bug: the outcome is logged, the run stops
            self._stop_for(item, exc)

    def _stop_for(self, item: EditRecord, exc: Exception) -> str:
        """Stop the run as fatal for an error while handling ``item``; the error, described."""
        error = _describe(exc)
        self.state.stop("fatal", f"line {item.line}: {error}; run again with --resume")
        return error

    async def _feed(self, reader: LineReader[Entry], pool: OrderedPool[EditRecord] | None) -> None:
        """Hand every line on (see :class:`~batchedit.feed.Feed`) until the input ends or the
        run stops. An input that cannot be read stops the run."""
        try:
            await Feed(self.state, self.summary, self.index, self.record)(reader, pool)
        except Exception as exc:  # the input stream failed: nothing after it can be trusted
            cause = exc.__cause__ if isinstance(exc, InputError) and exc.__cause__ else exc
            self.state.stop("fatal", f"cannot read the input: {_describe(cause)}")


def _removed_if_refused(
    log: JsonlAppender,
) -> Callable[[type[BaseException] | None, BaseException | None, TracebackType | None], bool]:
    """An exit callback: a run refused (:class:`ConfigError`, e.g. another log locked) deletes
    ``log`` if it made it and wrote nothing to it."""

    def exit_(
        exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if isinstance(exc, ConfigError):
            log.remove_if_unwritten()
        return False

    return exit_


def _ignore(_: str) -> None:
    """A notice nobody watches."""


async def _first(*aws: Coroutine[Any, Any, None] | asyncio.Future[None]) -> None:
    """Wait until the first of ``aws`` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
