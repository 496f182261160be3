"""Reading and validating edit records from JSONL: read a block at a time, each line on its own.

A record is the body of a ``modify_c2c_msg`` request (spec section 2). Every physical line of the
input yields exactly one item: an :class:`EditRecord` ready to send, or an :class:`InvalidRecord`
whose reason names the line and the field. Nothing here raises on bad input.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import json
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from itertools import count
from typing import IO, Any, Final, TypeVar

import orjson

from batchedit.im.elements import MAX_BODY_BYTES, check_msg_body

FIELDS: Final = ("From_Account", "To_Account", "MsgKey", "MsgBody", "CloudCustomData")
MAX_LINE_BYTES: Final = 64 * 1024
"""Longer lines are invalid without being parsed (a request body may hold 8 KB at most)."""
MAX_MSGKEY_CHARS: Final = 50
_KNOWN: Final = frozenset(FIELDS)
_IDENTITY: Final = ("From_Account", "To_Account", "MsgKey")
_ABSENT: Final = object()
_BOM: Final = b"\xef\xbb\xbf"
TOO_LONG: Final = b"\x00too long"
"""Stands in for a line over :data:`MAX_LINE_BYTES` (a NUL byte never starts a valid line)."""
_JSON_TYPES: Final[dict[type, str]] = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}
"""What JSON calls each value a line may parse to that is not an object."""
READ_BYTES: Final = 64 * 1024
"""Most bytes read at once."""
_blake2b: Final = hashlib.blake2b

T = TypeVar("T")
MessageId = tuple[str, str, str]
"""(From_Account, To_Account, MsgKey): the identity of one message."""


def line_digest(raw: bytes) -> str:
    """Fingerprint of a line's content (without its line ending), as stored in the results."""
    return _blake2b(raw, digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class EditRecord:
    """A valid edit: where it came from and the exact request body to send."""

    line: int
    digest: str
    from_account: str
    to_account: str
    msg_key: str
    body: bytes
    """The request body, re-encoded compactly (same fields, same values)."""
    fields: dict[str, Any]

    @property
    def message(self) -> MessageId:
        """The message this edit rewrites."""
        return (self.from_account, self.to_account, self.msg_key)


@dataclass(frozen=True, slots=True)
class InvalidRecord:
    """A line that will not be sent, and why (``reason`` starts with ``line N:``)."""

    line: int
    digest: str
    reason: str
    from_account: str | None = None
    to_account: str | None = None
    msg_key: str | None = None


Item = EditRecord | InvalidRecord


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _invalid(
    number: int, digest: str, reason: str, fields: dict[str, Any] | None = None
) -> InvalidRecord:
    found = fields or {}
    return InvalidRecord(
        number,
        digest,
        f"line {number}: {reason}",
        _text(found.get("From_Account")),
        _text(found.get("To_Account")),
        _text(found.get("MsgKey")),
    )


def parse_line(number: int, raw: bytes, digest: str | None = None) -> Item:
    """Validate one line (without its line ending, or :data:`TOO_LONG`) as an edit record."""
    digest = digest or line_digest(raw)
    checked = check_line(number, raw, digest)
    if isinstance(checked, InvalidRecord):
        return checked
    body, fields = checked
    return EditRecord(
        number,
        digest,
        fields["From_Account"],
        fields["To_Account"],
        fields["MsgKey"],
        body,
        fields,
    )


def json_type(value: Any) -> str:
    """What JSON calls the type of ``value`` (as orjson or json read it)."""
    return "object" if isinstance(value, dict) else _JSON_TYPES[type(value)]


def read_object(raw: bytes) -> dict[str, Any] | str:
    """``raw`` (one line) read as a JSON object, or why it is not one: blank, not UTF-8,
    malformed JSON, or JSON of another type."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _unreadable(raw, exc)
    if not isinstance(value, dict):
        return f"expected a JSON object, got {_JSON_TYPES[type(value)]}"
    return value


def check_line(
    number: int, raw: bytes, digest: str
) -> InvalidRecord | tuple[bytes, dict[str, Any]]:
    """As :func:`parse_line`, without making the record: a valid line's request body and
    fields."""
    if raw is TOO_LONG:
        return _invalid(number, digest, f"longer than {MAX_LINE_BYTES} bytes, not read")
    value = read_object(raw)
    if isinstance(value, str):
        return _invalid(number, digest, value)
    try:
        body = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:  # parsed, yet not encodable: nested over 254 levels
        reason = f"cannot be encoded as a request body ({exc}); nothing is sent"
        return _invalid(number, digest, reason)
    if raw != body and (raw.count(b":") != body.count(b":") or b"\\u003" in raw or b"e+" in body):
        ambiguous = _ambiguity(raw)
        if ambiguous is not None:
            return _invalid(number, digest, ambiguous)
    problem = _problem(value)
    if problem is not None:
        return _invalid(number, digest, problem, value)
    if len(body) > MAX_BODY_BYTES:
        reason = f"request body is {len(body)} bytes, over the 8 KB limit"
        return _invalid(number, digest, reason, value)
    return body, value


def _unreadable(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    """Why orjson could not read ``raw``: blank, not UTF-8 (orjson checks all of it first), or
    not JSON."""
    if not raw.strip():
        return "blank line"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"not valid UTF-8 (byte {error.start + 1})"
    return f"malformed JSON: {exc}"


class _Ambiguous(ValueError):
    """What makes a line mean something else to orjson than to its reader."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, value in pairs:
        if name in found:
            raise _Ambiguous(
                f"{name}: given twice in one object; which one is meant is unclear, nothing "
                "of this record is sent"
            )
        found[name] = value
    return found


def _int64(literal: str) -> int:
    number = int(literal)
    if not -(2**63) <= number < 2**64:
        raise _Ambiguous(f"the number {literal[:40]} does not fit in 64 bits")
    return number


def _ambiguity(raw: bytes) -> str | None:
    """Why ``raw`` is not exactly what orjson read, or ``None``: a duplicate key (orjson keeps
    the last) or an integer beyond 64 bits (orjson makes it a float).

    A second, slower parse, so only run when a cheap test says it might matter: a line that
    is its own compact re-encoding hides nothing. Else a duplicate key shows as a missing
    colon in the re-encoding (each key has one; the strings keep theirs, unless written
    ``\\u003a``, hence that test), and a float from a big integer as ``e+`` (orjson writes
    floats from 1e16 up so).
    """
    try:
        json.loads(raw, object_pairs_hook=_unique_keys, parse_int=_int64)
    except _Ambiguous as exc:
        return str(exc)
    except ValueError as exc:
        return f"malformed JSON: {exc}"
    except RecursionError:
        return "nested too deeply"
    return None


def _problem(value: dict[str, Any]) -> str | None:
    if not _KNOWN.issuperset(value):
        for name in value:
            if name not in FIELDS:
                close = difflib.get_close_matches(name, FIELDS, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                return f"{name}: unknown field{hint}; nothing of this record is sent"
    for name in _IDENTITY:
        field = value.get(name)
        if not isinstance(field, str) or not field:
            return f"{name}: must be a non-empty string" if name in value else f"{name}: required"
    if len(value["MsgKey"]) > MAX_MSGKEY_CHARS:
        return f"MsgKey: longer than {MAX_MSGKEY_CHARS} characters"
    data = value.get("CloudCustomData", _ABSENT)
    if "MsgBody" in value:
        if data is not _ABSENT and not isinstance(data, str):
            return "CloudCustomData: must be a string"
        body_problem = check_msg_body(value["MsgBody"])
        if body_problem is not None:
            return str(body_problem)
    elif data is _ABSENT:
        return "MsgBody, CloudCustomData: give at least one"
    elif not isinstance(data, str):
        return "CloudCustomData: must be a string"
    return None


def read_line_blocks(stream: IO[bytes]) -> Generator[tuple[int, list[bytes]], None, None]:
    """Physical lines a block at a time, as (number of the first line, the lines): line endings
    (LF or CRLF) and a leading BOM removed; a block holds the lines that end in one read of at
    most :data:`READ_BYTES`.

    A line longer than :data:`MAX_LINE_BYTES` is skipped over and given as :data:`TOO_LONG`, so
    memory stays flat whatever the input holds. A pipe's lines come as soon as they are whole.
    Closed early, a seekable stream is left at the start of the first line not given.
    """
    read = getattr(stream, "read1", None) or stream.read
    number = 1
    start = b""  # the beginning of a line not ended yet
    skipped = 0  # bytes of a line over the limit dropped so far (then ``start`` is empty)
    try:
        while block := read(READ_BYTES):
            lines = block.split(b"\n")
            if skipped:
                if len(lines) == 1:
                    skipped += len(block)
                    continue
                lines[0] = TOO_LONG
                skipped = 0
            elif start:
                lines[0] = start + lines[0]
            start = lines.pop()
            if len(start) > MAX_LINE_BYTES:
                start, skipped = b"", len(start)
            if not lines:
                continue
            # Only the first line can have begun in an earlier block.
            _strip(lines, number, crlf=b"\r" in block or lines[0].endswith(b"\r"))
            yield number, lines
            number += len(lines)
        if skipped:
            skipped = 0
            yield number, [TOO_LONG]
        elif start:
            last = [start]
            start = b""
            _strip(last, number, crlf=False)
            yield number, last
    finally:
        # A run that stops counts the lines left in the input from where its reading ended.
        held = len(start) or skipped
        if held:
            with contextlib.suppress(OSError, ValueError):
                if stream.seekable():
                    stream.seek(-held, io.SEEK_CUR)


def _strip(lines: list[bytes], number: int, *, crlf: bool) -> None:
    """Make ``lines`` (the first is line ``number``) what :func:`read_line_blocks` gives: a line
    over the limit :data:`TOO_LONG`, each without the CR of a CRLF ending (``crlf``: they ended
    in LF and some may hold a CR), line 1 without a BOM."""
    if max(map(len, lines)) > MAX_LINE_BYTES:
        lines[:] = [TOO_LONG if len(raw) > MAX_LINE_BYTES else raw for raw in lines]
    if crlf:
        lines[:] = [raw[:-1] if raw.endswith(b"\r") else raw for raw in lines]
    if number == 1 and lines[0].startswith(_BOM):
        lines[0] = lines[0][len(_BOM) :]


def read_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """Physical lines with 1-based numbers, as :func:`read_line_blocks` gives them."""
    for first, lines in read_line_blocks(stream):
        yield from enumerate(lines, first)


@dataclass(frozen=True, slots=True)
class Done:
    """Lines an earlier run already finished with this content, ``line`` and those right after
    it: not parsed unless needed."""

    line: int
    raws: tuple[bytes, ...]


DoneCheck = Callable[[int, list[str]], Sequence[bool]]
"""``done(first, digests)``: which of line ``first`` and the lines right after it, with these
digests, an earlier run already finished (``--resume``)."""


def read_batches(
    stream: IO[bytes], parse: Callable[[int, bytes, str], T], done: DoneCheck | None = None
) -> Generator[tuple[int, list[T | Done]], None, None]:
    """Every line of ``stream``, a block at a time, as ``parse(number, raw, digest)`` makes it
    (:func:`parse_line`, say), or in a :class:`Done` where ``done`` says an earlier run
    finished it (``--resume``: skipping a line then costs a hash, not a parse). Each block comes
    with the number of lines it holds."""
    for first, lines in read_line_blocks(stream):
        digests = [_blake2b(raw, digest_size=8).hexdigest() for raw in lines]
        if done is None:
            rows = zip(count(first), lines, digests, strict=False)
            yield len(lines), [parse(number, raw, digest) for number, raw, digest in rows]
            continue
        finished = done(first, digests)
        if all(finished):
            yield len(lines), [Done(first, tuple(lines))]
            continue
        batch: list[T | Done] = []
        run = 0  # where the current run of finished lines began
        for i, (raw, digest, skip) in enumerate(zip(lines, digests, finished, strict=True)):
            if skip:
                continue
            if run < i:
                batch.append(Done(first + run, tuple(lines[run:i])))
            run = i + 1
            batch.append(parse(first + i, raw, digest))
        if run < len(lines):
            batch.append(Done(first + run, tuple(lines[run:])))
        yield len(lines), batch


def read_records(stream: IO[bytes]) -> Iterator[Item]:
    """Every line of ``stream`` as an :class:`EditRecord` or :class:`InvalidRecord`."""
    for first, lines in read_line_blocks(stream):
        for number, raw in enumerate(lines, first):
            yield parse_line(number, raw)
