"""What a plan reads from history: the conversations in PAIRS, and the time range."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchedit.im.errors import ConfigError
from batchedit.im.history import UINT32_MAX
from batchedit.records import MAX_LINE_BYTES, TOO_LONG, read_lines


def parse_when(text: str, *, end: bool = False) -> int:
    """UNIX seconds from ``1700000000``, ``2026-11-20`` or ``2026-11-20T10:00:00[+08:00]``.

    Times without a zone are UTC; a bare date means its first second, or with ``end`` its last.
    The API takes times as unsigned 32-bit seconds: anything outside that is refused here.
    """
    seconds = _seconds(text, end=end)
    if not 0 <= seconds <= UINT32_MAX:
        raise ConfigError(
            f"the time {text!r} is outside what the API takes (UNIX seconds 0 to {UINT32_MAX}, "
            "up to 2106-02-07)"
        )
    return seconds


def _seconds(text: str, *, end: bool) -> int:
    if text.isascii() and text.isdigit():
        return int(text) if len(text) <= 20 else UINT32_MAX + 1
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
        try:
            row = next(csv.reader([text]), [])
        except csv.Error as exc:  # a CR or NUL inside a field
            return f"not a CSV row ({exc})"
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
