"""Reading and validating edit records from JSONL, one line at a time.

A record is the body of a ``modify_c2c_msg`` request (spec section 2). Every physical line of the
input yields exactly one item: an :class:`EditRecord` ready to send, or an :class:`InvalidRecord`
whose reason names the line and the field. Nothing here raises on bad input.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Final

import orjson

from batchedit.im.elements import MAX_BODY_BYTES, check_msg_body

FIELDS: Final = ("From_Account", "To_Account", "MsgKey", "MsgBody", "CloudCustomData")
MAX_LINE_BYTES: Final = 64 * 1024
"""Longer lines are invalid without being parsed (a request body may hold 8 KB at most)."""
MAX_MSGKEY_CHARS: Final = 50
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

MessageId = tuple[str, str, str]
"""(From_Account, To_Account, MsgKey): the identity of one message."""


def line_digest(raw: bytes) -> str:
    """Fingerprint of a line's content (without its line ending), as stored in the results."""
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


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


def parse_line(number: int, raw: bytes, digest: str | None = None) -> Item:
    """Validate one line (without its line ending) as an edit record."""
    digest = digest or line_digest(raw)

    def invalid(reason: str, fields: dict[str, Any] | None = None) -> InvalidRecord:
        found = fields or {}
        return InvalidRecord(
            number,
            digest,
            f"line {number}: {reason}",
            _text(found.get("From_Account")),
            _text(found.get("To_Account")),
            _text(found.get("MsgKey")),
        )

    if not raw.strip():
        return invalid("blank line")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return invalid(f"not valid UTF-8 (byte {exc.start + 1})")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return invalid(f"malformed JSON: {exc}")
    if not isinstance(value, dict):
        return invalid(f"expected a JSON object, got {_JSON_TYPES[type(value)]}")
    try:
        body = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:  # parsed, yet not encodable: nested over 254 levels
        return invalid(f"cannot be encoded as a request body ({exc}); nothing is sent")
    if raw != body and (raw.count(b":") != body.count(b":") or b"\\u003" in raw or b"e+" in body):
        ambiguous = _ambiguity(raw)
        if ambiguous is not None:
            return invalid(ambiguous)
    problem = _problem(value)
    if problem is not None:
        return invalid(problem, value)
    if len(body) > MAX_BODY_BYTES:
        return invalid(f"request body is {len(body)} bytes, over the 8 KB limit", value)
    return EditRecord(
        number,
        digest,
        value["From_Account"],
        value["To_Account"],
        value["MsgKey"],
        body,
        value,
    )


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
    for name in value:
        if name not in FIELDS:
            close = difflib.get_close_matches(name, FIELDS, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"{name}: unknown field{hint}; nothing of this record is sent"
    for name in ("From_Account", "To_Account", "MsgKey"):
        if name not in value:
            return f"{name}: required"
        if not isinstance(value[name], str) or not value[name]:
            return f"{name}: must be a non-empty string"
    if len(value["MsgKey"]) > MAX_MSGKEY_CHARS:
        return f"MsgKey: longer than {MAX_MSGKEY_CHARS} characters"
    if "MsgBody" not in value and "CloudCustomData" not in value:
        return "MsgBody, CloudCustomData: give at least one"
    if "CloudCustomData" in value and not isinstance(value["CloudCustomData"], str):
        return "CloudCustomData: must be a string"
    if "MsgBody" in value:
        body_problem = check_msg_body(value["MsgBody"])
        if body_problem is not None:
            return str(body_problem)
    return None


def read_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """Physical lines with 1-based numbers, line endings (LF or CRLF) and a leading BOM removed.

    A line longer than :data:`MAX_LINE_BYTES` is skipped over in chunks and yielded as
    :data:`TOO_LONG`, so memory stays flat whatever the input holds.
    """
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = stream.readline(MAX_LINE_BYTES)
            yield number, TOO_LONG
            continue
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if raw.endswith(b"\n"):
            raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        yield number, raw


@dataclass(frozen=True, slots=True)
class Done:
    """A line an earlier run already finished with this content: not parsed unless needed."""

    line: int
    digest: str
    raw: bytes


def read_records(
    stream: IO[bytes], done: Callable[[int, str], bool] | None = None
) -> Iterator[Item | Done]:
    """Every line of ``stream`` as an :class:`EditRecord` or :class:`InvalidRecord`, or as
    :class:`Done` where ``done(line, digest)`` says an earlier run finished it (``--resume``:
    skipping a line then costs a hash, not a parse)."""
    for number, raw in read_lines(stream):
        digest = line_digest(raw)
        if done is not None and done(number, digest):
            yield Done(number, digest, raw)
        elif raw is TOO_LONG:
            yield InvalidRecord(
                number, digest, f"line {number}: longer than {MAX_LINE_BYTES} bytes, not read"
            )
        else:
            yield parse_line(number, raw, digest)
