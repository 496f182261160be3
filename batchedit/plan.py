"""Writing an edit file from history: page through conversations, apply rewrite rules.

Each conversation is read once, from the first user's view: ``admin_getroammsg`` returns both
directions (spec section 3), and each message's own ``From_Account``/``To_Account`` is what the
edit names. Recalled messages (``MsgFlagBits`` 8) are skipped; only messages the rules actually
change become edit records.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import csv
import datetime as dt
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from batchedit.im.client import ROAM, Caller, RoamMessage, redact
from batchedit.im.errors import ApiError, ConfigError
from batchedit.im.history import iter_history
from batchedit.im.tls import check_certificate, client_context
from batchedit.preflight import check_plan_files, start_lines
from batchedit.progress import Observer, Progress, ticking
from batchedit.records import MAX_LINE_BYTES, TOO_LONG, read_lines
from batchedit.sender import RunControl
from batchedit.wiring import ApiConfig, Senders

TEMPLATE_FIELDS = ("MsgKey", "From_Account", "To_Account", "MsgTimeStamp", "CloudCustomData")
"""The ``$names`` a ``--set-cloud-custom-data`` template may use."""


def parse_template(text: str) -> string.Template:
    """A CloudCustomData template; ``$CloudCustomData`` is the current value ("" if none)."""
    template = string.Template(text)
    try:
        template.substitute(dict.fromkeys(TEMPLATE_FIELDS, ""))
    except (KeyError, ValueError) as exc:
        known = ", ".join(f"${name}" for name in TEMPLATE_FIELDS)
        raise ConfigError(f"bad template {text!r} ({exc}); it may use {known}") from None
    return template


def compile_replacement(pattern: str, replacement: str) -> tuple[re.Pattern[str], str]:
    """A ``--replace`` rule; a bad regex or replacement raises :class:`ConfigError`."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"bad --replace regex {pattern!r}: {exc}") from None
    _check_replacement(compiled, replacement)
    return compiled, replacement


def _check_replacement(pattern: re.Pattern[str], replacement: str) -> None:
    """Raise :class:`ConfigError` now for a replacement that names a group ``pattern`` lacks
    (``\\9``) or holds a bad escape, rather than on the first message it meets."""
    # The same groups, matching the empty string: expanding the replacement once checks it.
    names = {number: name for name, number in pattern.groupindex.items()}
    groups = "".join(
        f"(?P<{names[n]}>)" if n in names else "()" for n in range(1, pattern.groups + 1)
    )
    try:
        re.sub(groups, replacement, "", count=1)
    except (re.error, IndexError) as exc:
        raise ConfigError(f"bad --replace replacement {replacement!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Rules:
    """What to change: regex replacements in texts, and/or a new CloudCustomData.

    ``replacements`` apply in order to the ``Text`` of every TIMTextElem, and with
    ``custom_desc`` to the ``Desc`` of TIMCustomElem; ``cloud_custom_data`` is a template.
    """

    replacements: tuple[tuple[re.Pattern[str], str], ...] = ()
    custom_desc: bool = False
    cloud_custom_data: string.Template | None = None

    def __post_init__(self) -> None:
        if not self.replacements and self.cloud_custom_data is None:
            raise ConfigError("no rules: give --replace and/or --set-cloud-custom-data")
        for pattern, replacement in self.replacements:
            _check_replacement(pattern, replacement)

    def _rewrite_text(self, text: str) -> str:
        for pattern, replacement in self.replacements:
            text = pattern.sub(replacement, text)
        return text

    def rewrite(self, message: RoamMessage) -> dict[str, Any] | None:
        """The edit record for ``message``, or ``None`` when the rules change nothing."""
        body = copy.deepcopy(message.body)
        for element in body:
            content = element.get("MsgContent") if isinstance(element, dict) else None
            if not isinstance(content, dict):
                continue
            kind = element.get("MsgType")
            name = "Text" if kind == "TIMTextElem" else "Desc"
            wanted = kind == "TIMTextElem" or (self.custom_desc and kind == "TIMCustomElem")
            if wanted and isinstance(content.get(name), str):
                content[name] = self._rewrite_text(content[name])
        edit: dict[str, Any] = {
            "From_Account": message.from_account,
            "To_Account": message.to_account,
            "MsgKey": message.msg_key,
        }
        if body != message.body:
            edit["MsgBody"] = body
        if self.cloud_custom_data is not None:
            current = message.cloud_custom_data or ""
            new = self.cloud_custom_data.substitute(
                MsgKey=message.msg_key,
                From_Account=message.from_account,
                To_Account=message.to_account,
                MsgTimeStamp=message.msg_timestamp,
                CloudCustomData=current,
            )
            if new != current:
                edit["CloudCustomData"] = new
        return edit if len(edit) > 3 else None


def parse_when(text: str, *, end: bool = False) -> int:
    """UNIX seconds from ``1700000000``, ``2026-11-20`` or ``2026-11-20T10:00:00[+08:00]``.

    Times without a zone are UTC; a bare date means its first second, or with ``end`` its last.
    """
    if text.isdigit():
        return int(text)
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            return int(start.timestamp()) + (86399 if end else 0)
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"cannot read the time {text!r}: give UNIX seconds, YYYY-MM-DD or an ISO date-time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp())


@dataclass(frozen=True, slots=True)
class BadPair:
    """A line of the pairs file that names no conversation."""

    line: int
    reason: str


def read_pairs(path: Path) -> Iterator[tuple[str, str] | BadPair]:
    """Conversations from a CSV (two UserID columns, no header) or JSONL file (``["a", "b"]``,
    an object with ``From_Account`` and ``To_Account``, or one with two string values), each
    conversation once. A line that names no conversation (binary garbage, too long, anything)
    is a :class:`BadPair`; a file that cannot be read raises :class:`ConfigError`."""
    seen: set[tuple[str, str]] = set()
    as_csv = path.suffix.lower() == ".csv"
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    with stream:
        for number, raw in read_lines(stream):
            values = _pair_values(raw, as_csv)
            if isinstance(values, str):
                yield BadPair(number, f"pairs line {number}: {values}")
                continue
            if values is None:
                continue
            a, b = values
            key = (a, b) if a <= b else (b, a)
            if a != b and key not in seen:
                seen.add(key)
                yield (a, b)


def _pair_values(raw: bytes, as_csv: bool) -> tuple[str, str] | str | None:
    """The two UserIDs of a pairs line, ``None`` for a blank line, else what is wrong."""
    if raw is TOO_LONG:
        return f"longer than {MAX_LINE_BYTES} bytes, not read"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte {exc.start + 1})"
    if not text.strip():
        return None
    row: Any
    if as_csv:
        row = next(csv.reader([text]), [])
    else:
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError:
            row = text.strip()
    if isinstance(row, dict):
        # An edit file or ``--demo-targets`` output names its conversations this way.
        both = "From_Account" in row and "To_Account" in row
        row = [row["From_Account"], row["To_Account"]] if both else list(row.values())
    if (
        isinstance(row, list)
        and len(row) == 2
        and all(isinstance(v, str) and v.strip() for v in row)
    ):
        return row[0].strip(), row[1].strip()
    shown = repr(row)
    return f"expected two UserIDs, got {shown[:80]}{'...' if len(shown) > 80 else ''}"


@dataclass(slots=True)
class PlanStats:
    """What a plan read and wrote, and how it ended (``stopped`` as in a run's summary)."""

    conversations: int = 0
    failed_conversations: list[str] = field(default_factory=list)
    messages: int = 0
    recalled: int = 0
    planned: int = 0
    stopped_early: bool = False
    """A preview had shown enough."""
    requests: int = 0
    """``admin_getroammsg`` requests made (``run_plan`` only)."""
    error: str | None = None
    """What stopped planning that was no API answer: an odd answer, or an output that failed."""
    stopped: str | None = None
    reason: str = ""
    elapsed: float = 0.0
    """Seconds."""


async def plan_edits(
    pairs: Iterable[tuple[str, str]],
    since: int,
    until: int,
    rules: Rules,
    call: Caller,
    emit: Callable[[dict[str, Any], RoamMessage], bool],
    *,
    concurrency: int = 8,
    stats: PlanStats | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> PlanStats:
    """Read every conversation in ``[since, until]`` and ``emit(edit, before)`` each change.

    ``call`` sends the ``admin_getroammsg`` requests (wrap it for rate and retries); ``emit``
    returns ``False`` to stop planning (a preview that has shown enough). Up to ``concurrency``
    conversations are read at once. A conversation that cannot be read is noted in
    ``failed_conversations`` and skipped. Planning ends early once ``stopping()`` is true, or
    on any other error (an answer this code cannot read, an ``emit`` that raised), which is
    noted in ``error``.
    """
    stats = stats or PlanStats()
    pending = iter(pairs)
    stop = asyncio.Event()

    async def worker() -> None:
        for a, b in pending:
            if stop.is_set() or stopping():
                return
            try:
                async for message in iter_history(call, a, b, since, until):
                    stats.messages += 1
                    if message.recalled:
                        stats.recalled += 1
                        continue
                    edit = rules.rewrite(message)
                    if edit is None:
                        continue
                    stats.planned += 1
                    if not emit(edit, message):
                        stop.set()
                        stats.stopped_early = True
                        return
            except ApiError as exc:
                if stopping():
                    return  # not this conversation's fault: the run is stopping
                stats.failed_conversations.append(f"{a} <-> {b}: {exc}")
            except Exception as exc:  # an answer or a bug this code cannot handle: stop planning
                stop.set()
                stats.error = stats.error or redact(f"{a} <-> {b}: {type(exc).__name__}: {exc}")
                return
            stats.conversations += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return stats


async def run_plan(
    pairs: Sequence[tuple[str, str]],
    since: int,
    until: int,
    rules: Rules,
    config: ApiConfig,
    *,
    output: Path | None = None,
    pairs_file: Path | None = None,
    preview: Callable[[dict[str, Any], RoamMessage], bool] | None = None,
    observer: Observer | None = None,
    control: RunControl | None = None,
) -> PlanStats:
    """Plan edits from the history of ``pairs``, sending through ``config``.

    Either write them to ``output`` (JSONL, ready for ``run_batch``: written to
    ``OUTPUT.partial`` and renamed when complete; nothing is left if planning stops early), or
    hand each to ``preview`` (return ``False`` once it has shown enough). At most
    ``config.concurrency`` (and 32) conversations are read at once. A fatal answer, an error or
    ``control`` stops planning; ``stopped`` and ``reason`` say why. ``pairs_file``, the file the
    pairs came from, is named in the start line and may not be ``output``.

    Raises :class:`ConfigError` before the first request when ``output`` cannot be written or is
    ``pairs_file``, or the https endpoint's certificate does not verify.
    """
    if (output is None) == (preview is None):
        raise ConfigError("give exactly one of output and preview")
    if output is not None and pairs_file is not None:
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
    partial = output.with_name(output.name + ".partial") if output is not None else None
    try:
        await _plan(pairs, since, until, rules, config, stats, partial, preview, observer, control)
        if stats.error is not None:
            state.stop("fatal", stats.error)
        if partial is not None and output is not None and not state.stopping:
            partial.replace(output)
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)  # still there only if planning did not complete
    stats.stopped, stats.reason = state.stopped, state.reason
    stats.elapsed = time.monotonic() - started
    return stats


async def _plan(
    pairs: Sequence[tuple[str, str]],
    since: int,
    until: int,
    rules: Rules,
    config: ApiConfig,
    stats: PlanStats,
    partial: Path | None,
    preview: Callable[[dict[str, Any], RoamMessage], bool] | None,
    observer: Observer | None,
    control: RunControl,
) -> None:
    state = control.state

    def count(_: float) -> None:
        stats.requests += 1

    async with contextlib.AsyncExitStack() as stack:
        senders = await stack.enter_async_context(Senders(config, state))
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

        await stack.enter_async_context(ticking(observer, progress))
        if partial is not None:
            emit = _writer(stack.enter_context(_create(partial)))
        elif preview is not None:
            emit = preview
        planning = plan_edits(
            pairs,
            since,
            until,
            rules,
            reads.call,
            emit,
            concurrency=min(config.concurrency, 32),
            stats=stats,
            stopping=lambda: state.stopping,
        )
        await control.finish(planning)


def _create(path: Path) -> IO[bytes]:
    try:
        return path.open("wb")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


def _writer(out: IO[bytes]) -> Callable[[dict[str, Any], RoamMessage], bool]:
    def write(edit: dict[str, Any], before: RoamMessage) -> bool:
        out.write(orjson.dumps(edit) + b"\n")
        return True

    return write
