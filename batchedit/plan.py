"""Writing an edit file from history: page through conversations, apply rewrite rules.

Each conversation is read once, from the first user's view: ``admin_getroammsg`` returns both
directions (spec section 3), and each message's own ``From_Account``/``To_Account`` is what the
edit names. Recalled messages (``MsgFlagBits`` 8) are skipped; only messages the rules actually
change become edit records.
"""

from __future__ import annotations

import asyncio
import copy
import csv
import datetime as dt
import re
import string
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchedit.im.client import Caller, RoamMessage
from batchedit.im.errors import ApiError, ConfigError
from batchedit.im.history import iter_history
from batchedit.records import MAX_LINE_BYTES, TOO_LONG, read_lines

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
    """What a plan run read and wrote."""

    conversations: int = 0
    failed_conversations: list[str] = field(default_factory=list)
    messages: int = 0
    recalled: int = 0
    planned: int = 0
    stopped_early: bool = False


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
) -> PlanStats:
    """Read every conversation in ``[since, until]`` and ``emit(edit, before)`` each change.

    ``call`` sends the ``admin_getroammsg`` requests (wrap it for rate and retries); ``emit``
    returns ``False`` to stop planning (a preview that has shown enough). Up to ``concurrency``
    conversations are read at once. A conversation that cannot be read is noted in
    ``failed_conversations`` and skipped.
    """
    stats = stats or PlanStats()
    pending = iter(pairs)
    stop = asyncio.Event()

    async def worker() -> None:
        for a, b in pending:
            if stop.is_set():
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
                stats.failed_conversations.append(f"{a} <-> {b}: {exc}")
            stats.conversations += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return stats
