"""Planning edits: read messages (from history, or from a callback archive), decide each
message's edit (:mod:`batchedit.planner`), and write the edits out (:mod:`batchedit.planout`).

From history, each conversation is read once, from the first user's view: ``admin_getroammsg``
returns both directions (spec section 3), and each message's own ``From_Account``/``To_Account``
is what the edit names. Recalled messages (``MsgFlagBits`` 8) are skipped. From an archive of
``C2C.CallbackAfterSendMsg`` payloads nothing is read from the API at all. Only messages the
transform and rules actually change become edit records.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import IO

from batchedit.callbacks import BadLine, Skipped, parse_callback
from batchedit.im.client import ROAM, Caller, RoamMessage, redact
from batchedit.im.errors import ApiError, ConfigError
from batchedit.im.history import iter_history
from batchedit.im.tls import check_certificate, client_context
from batchedit.linefeed import InputFailed, line_batches
from batchedit.planner import Planner, PlanStats, require_rules
from batchedit.planout import Emit, PlanOutput, emitted
from batchedit.preflight import check_plan_files, start_lines
from batchedit.progress import Observer, Progress, ticking
from batchedit.records import MessageId
from batchedit.rules import Rules
from batchedit.sender import RunControl, RunState
from batchedit.transform import Transform
from batchedit.wiring import ApiConfig, Senders

REPEATED: str = "repeated payloads (a message given again)"
"""The :attr:`PlanStats.skipped` kind of an archive payload seen before."""


async def _offer(planner: Planner, message: RoamMessage, emit: Emit) -> bool:
    """Plan ``message``; whether planning may go on."""
    edit = await planner.edit(message)
    if not isinstance(edit, dict):
        return True
    planner.stats.planned += 1
    if await emitted(emit, edit, message):
        return True
    planner.stats.stopped_early = True
    return False


async def plan_edits(
    pairs: Iterable[tuple[str, str]],
    since: int,
    until: int,
    rules: Rules,
    call: Caller,
    emit: Emit,
    *,
    transform: Transform | None = None,
    concurrency: int = 8,
    stats: PlanStats | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> PlanStats:
    """Read every conversation in ``[since, until]`` and ``emit(edit, before)`` each change.

    ``call`` sends the ``admin_getroammsg`` requests (wrap it for rate and retries); ``emit``
    (sync or async) returns ``False`` to stop planning (a preview that has shown enough). Up to
    ``concurrency`` conversations are read at once. A conversation that cannot be read is noted
    in ``failed_conversations`` and skipped; a message the transform or rules fail on, in
    ``problems``. Planning ends early once ``stopping()`` is true, or on any other error (an
    answer this code cannot read, an ``emit`` that raised), which is noted in ``error``.
    """
    stats = stats or PlanStats()
    planner = Planner(rules, transform, stats)
    pending = iter(pairs)
    stop = asyncio.Event()

    async def worker() -> None:
        for a, b in pending:
            if stop.is_set() or stopping():
                return
            stats.conversations += 1  # read, whole or (a preview that stopped) in part
            try:
                async for message in iter_history(call, a, b, since, until):
                    stats.messages += 1
                    if message.recalled:
                        stats.recalled += 1
                    elif not await _offer(planner, message, emit):
                        stop.set()
                        return
            except ApiError as exc:
                if stopping():
                    return  # not this conversation's fault: the run is stopping
                stats.failed_conversations.append(f"{a} <-> {b}: {exc}")
            except Exception as exc:  # an answer or a bug this code cannot handle: stop planning
                stop.set()
                stats.error = stats.error or redact(f"{a} <-> {b}: {type(exc).__name__}: {exc}")
                return

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return stats


async def plan_callbacks(
    archive: IO[bytes],
    rules: Rules,
    emit: Emit,
    *,
    transform: Transform | None = None,
    since: int | None = None,
    until: int | None = None,
    stats: PlanStats | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> PlanStats:
    """Plan from an archive of ``C2C.CallbackAfterSendMsg`` payloads (JSONL), sending nothing.

    Each message is planned once (a payload given again is counted in ``skipped``), in archive
    order, if its ``MsgTime`` is in ``[since, until]`` (each bound optional). A damaged line is
    noted in ``bad_lines`` and skipped; payloads of other callbacks and of messages never
    stored are counted in ``skipped``. Ends early as :func:`plan_edits` does; an archive that
    cannot be read is noted in ``error``.
    """
    stats = stats or PlanStats()
    planner = Planner(rules, transform, stats)
    seen: set[MessageId] = set()
    try:
        async with contextlib.aclosing(line_batches(archive, stopping)) as batches:
            async for batch in batches:
                for number, raw in batch:
                    if stopping():
                        return stats
                    stats.archive_lines = number
                    message = _archived(parse_callback(number, raw), stats, seen, since, until)
                    if message is not None and not await _offer(planner, message, emit):
                        return stats
    except InputFailed as exc:
        stats.error = f"cannot read the archive: {exc}"
    except Exception as exc:  # an emit or a bug that failed: stop planning, say why
        stats.error = redact(f"{type(exc).__name__}: {exc}")
    return stats


def _archived(
    item: RoamMessage | BadLine | Skipped | None,
    stats: PlanStats,
    seen: set[MessageId],
    since: int | None,
    until: int | None,
) -> RoamMessage | None:
    """The message of an archive line to plan, or ``None`` (the line counted in ``stats``)."""
    if item is None or isinstance(item, BadLine | Skipped):
        if isinstance(item, BadLine):
            stats.bad_lines.append(item)
        elif isinstance(item, Skipped):
            stats.skipped[item.kind] += 1
        return None
    stamp = item.msg_timestamp
    if (since is not None and stamp < since) or (until is not None and stamp > until):
        stats.skipped["messages outside --since/--until"] += 1
        return None
    key = (item.from_account, item.to_account, item.msg_key)
    if key in seen:
        stats.skipped[REPEATED] += 1
        return None
    seen.add(key)
    stats.messages += 1
    return item


def _target(output: Path | IO[bytes] | None, preview: Emit | None) -> Path | IO[bytes] | Emit:
    if output is not None and preview is None:
        return output
    if preview is not None and output is None:
        return preview
    raise ConfigError("give exactly one of output and preview")


async def _write_plan(
    target: Path | IO[bytes] | Emit,
    state: RunState,
    stats: PlanStats,
    observer: Observer | None,
    progress: Callable[[], Progress],
    planning: Callable[[Emit], Awaitable[object]],
) -> None:
    """Run ``planning(emit)`` into ``target`` with progress ticks; a planning error or an
    output that failed stops the plan as fatal (a file is then not written)."""
    async with ticking(observer, progress), PlanOutput(target, state) as out:
        await planning(out.emit)
        if stats.error is not None:
            state.stop("fatal", stats.error)
    if out.error is not None:
        stats.error = stats.error or out.error
        state.stop("fatal", f"{out.error}; the edits written so far are whole lines")


def _ended(stats: PlanStats, state: RunState, started: float) -> PlanStats:
    stats.stopped, stats.reason = state.stopped, state.reason
    stats.elapsed = time.monotonic() - started
    return stats


async def run_plan(
    pairs: Sequence[tuple[str, str]],
    since: int,
    until: int,
    rules: Rules,
    config: ApiConfig,
    *,
    output: Path | IO[bytes] | None = None,
    pairs_file: Path | None = None,
    preview: Emit | None = None,
    observer: Observer | None = None,
    control: RunControl | None = None,
    transform: Transform | None = None,
) -> PlanStats:
    """Plan edits from the history of ``pairs``, sending through ``config``.

    Either write them to ``output``: a path (JSONL, ready for ``run_batch``: written to
    ``OUTPUT.partial`` and renamed when complete; nothing is left if planning stops early) or a
    binary stream (each edit as it is planned, e.g. stdout piped into ``batchedit run -``); or
    hand each to ``preview`` (return ``False`` once it has shown enough). At most
    ``config.concurrency`` (and 32) conversations are read at once. A fatal answer, an error,
    an output that fails or ``control`` stops planning; ``stopped`` and ``reason`` say why.
    ``pairs_file``, the file the pairs came from, is named in the start line and may not be
    ``output``.

    Raises :class:`ConfigError` before the first request when there are no rules, ``output``
    cannot be written or is ``pairs_file``, or the https endpoint's certificate does not verify.
    """
    target = _target(output, preview)
    require_rules(rules, transform)
    if isinstance(output, Path) and pairs_file is not None:
        check_plan_files(pairs_file, output)
    if config.sig is None:
        raise ConfigError("planning needs an endpoint and credentials")
    await check_certificate(config.endpoint, client_context(config.ca_file), config.timeout)
    if observer is not None:
        source = str(pairs_file) if pairs_file is not None else "-"
        for line in start_lines(
            config.endpoint, config.sig, source, config.rate, config.concurrency
        ):
            observer.notice(line)
    control = control or RunControl()
    state = control.state
    stats = PlanStats()
    started = time.monotonic()

    def count(_: float) -> None:
        stats.requests += 1

    async def work() -> None:
        async with Senders(config, state) as senders:
            reads = senders.sender(ROAM, count)

            def progress() -> Progress:
                counts = {"messages": stats.messages, "planned": stats.planned}
                return Progress(
                    stats.conversations,
                    {**counts, "requests": stats.requests},
                    unit="conversations",
                    rate=reads.limiter.rate() if reads.limiter else None,
                    limits=reads.limiter.stats() if reads.limiter else None,
                )

            def planning(emit: Emit) -> Awaitable[PlanStats]:
                return plan_edits(
                    pairs,
                    since,
                    until,
                    rules,
                    reads.call,
                    emit,
                    transform=transform,
                    concurrency=min(config.concurrency, 32),
                    stats=stats,
                    stopping=lambda: state.stopping,
                )

            await _write_plan(target, state, stats, observer, progress, planning)

    await control.finish(work())
    return _ended(stats, state, started)


async def run_callbacks_plan(
    archive: IO[bytes],
    rules: Rules,
    *,
    since: int | None = None,
    until: int | None = None,
    output: Path | IO[bytes] | None = None,
    archive_file: Path | None = None,
    preview: Emit | None = None,
    observer: Observer | None = None,
    control: RunControl | None = None,
    transform: Transform | None = None,
) -> PlanStats:
    """Plan edits from ``archive`` (see :func:`plan_callbacks`) with no API request at all;
    ``output``, ``preview``, ``observer`` and ``control`` as for :func:`run_plan`.
    ``archive_file``, the file ``archive`` reads, may not be ``output``.

    Raises :class:`ConfigError` before reading when there are no rules, or ``output`` cannot be
    written or is ``archive_file``.
    """
    target = _target(output, preview)
    require_rules(rules, transform)
    if isinstance(output, Path) and archive_file is not None:
        check_plan_files(archive_file, output, role="--from-callbacks")
    if observer is not None:
        source = str(archive_file) if archive_file is not None else "-"
        observer.notice(f"start: callback archive {source}, no API requests")
    control = control or RunControl()
    state = control.state
    stats = PlanStats()
    started = time.monotonic()

    def progress() -> Progress:
        counts = {"messages": stats.messages, "planned": stats.planned}
        return Progress(stats.archive_lines, counts, unit="archive lines")

    def planning(emit: Emit) -> Awaitable[PlanStats]:
        return plan_callbacks(
            archive,
            rules,
            emit,
            transform=transform,
            since=since,
            until=until,
            stats=stats,
            stopping=lambda: state.stopping,
        )

    await control.finish(_write_plan(target, state, stats, observer, progress, planning))
    return _ended(stats, state, started)
