"""Results logs read back: every row checked, a torn last row tolerated.

``run`` and ``undo`` append one row per final outcome and flush it, so a killed run can leave
its last row half-written (a crash mid-write), and a resumed run appends rows for lines the log
already has. Only that torn last row is skipped; any other row that is not a results row stops
the reading with an error naming its file and line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from batchedit.im.errors import ImError
from batchedit.outcomes import AT_RANGE, LATENCY_MS_LIMIT, Outcome, Status


class ReportError(ImError):
    """A results log cannot be read: the file is unreadable or holds a row that is not a row."""


_STATUSES = {status.value: status for status in Status}
_INT = (int,)
_NUMBER = (int, float)
_TEXT = (str,)
_NULL = type(None)
_OPTIONAL_INT = frozenset((int, _NULL))
_OPTIONAL_TEXT = frozenset((str, _NULL))
_AT_FIRST, _AT_END = AT_RANGE


def _get(row: dict[str, Any], name: str, kinds: tuple[type, ...], what: str) -> Any:
    if name not in row:
        raise ValueError(f"no {name!r}")
    value = row[name]
    # JSON true/false arrive as bool, which Python counts as an int: no field is a bool.
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ValueError(f"{name!r} is not {what}")
    return value


def outcome_of_row(row: Any) -> Outcome:
    """The :class:`Outcome` a results row records; ``ValueError`` says what is wrong with it.

    ``at`` (when the outcome was reached, UNIX seconds from 2000 to 2100) and ``throttled``
    are optional: rows written before they existed read as ``at=None`` and ``throttled=0``;
    ``latency_ms`` is under a day.
    """
    # A fast path for the rows ``run`` writes; anything it does not accept goes through the
    # field-by-field check, which is the definition (and says what is wrong).
    try:
        line, attempts, latency = row["line"], row["attempts"], row["latency_ms"]
        status, code = _STATUSES[row["outcome"]], row["ErrorCode"]
        info, digest = row["ErrorInfo"], row["hash"]
        names = (row["From_Account"], row["To_Account"], row["MsgKey"])
        throttled, note = row.get("throttled", 0), row.get("note")
        at = row.get("at", _AT_FIRST)
    except (KeyError, TypeError):
        return _checked(row)
    if not (
        type(line) is int
        and type(attempts) is int
        and type(throttled) is int
        and type(latency) in _NUMBER
        and type(at) in _NUMBER
        and line > 0
        and min(attempts, throttled, latency) >= 0
        and latency < LATENCY_MS_LIMIT
        and _AT_FIRST <= at < _AT_END
        and type(code) in _OPTIONAL_INT
        and type(info) is str
        and type(digest) is str
        and {type(names[0]), type(names[1]), type(names[2]), type(note)} <= _OPTIONAL_TEXT
    ):
        return _checked(row)
    return Outcome(
        line,
        digest,
        status,
        *names,
        code=code,
        info=info,
        attempts=attempts,
        latency=latency / 1000,
        note=note,
        throttled=throttled,
        at=float(at) if "at" in row else None,
    )


def _checked(row: Any) -> Outcome:
    if not isinstance(row, dict):
        raise ValueError("not a JSON object")
    line = _get(row, "line", _INT, "a whole number")
    if line < 1:
        raise ValueError(f"'line' is {line}, not a positive number")
    status = _STATUSES.get(_get(row, "outcome", _TEXT, "a string"))
    if status is None:
        raise ValueError(f"'outcome' is {row['outcome']!r}, not ok, failed or invalid")
    attempts = _get(row, "attempts", _INT, "a whole number")
    latency_ms = _get(row, "latency_ms", _NUMBER, "a number")
    throttled = _get(row, "throttled", _INT, "a whole number") if "throttled" in row else 0
    if min(attempts, latency_ms, throttled) < 0:
        raise ValueError("'attempts', 'latency_ms' and 'throttled' cannot be negative")
    if latency_ms >= LATENCY_MS_LIMIT:
        raise ValueError(f"'latency_ms' is {latency_ms}, not under a day")
    note = _get(row, "note", (str, _NULL), "a string") if "note" in row else None
    at = _get(row, "at", _NUMBER, "a number") if "at" in row else None
    if at is not None and not _AT_FIRST <= at < _AT_END:
        raise ValueError(f"'at' is {at}, not UNIX seconds from 2000 to 2100")
    return Outcome(
        line=line,
        digest=_get(row, "hash", _TEXT, "a string"),
        status=status,
        from_account=_get(row, "From_Account", (str, _NULL), "a string or null"),
        to_account=_get(row, "To_Account", (str, _NULL), "a string or null"),
        msg_key=_get(row, "MsgKey", (str, _NULL), "a string or null"),
        code=_get(row, "ErrorCode", (int, _NULL), "a whole number or null"),
        info=_get(row, "ErrorInfo", _TEXT, "a string"),
        attempts=attempts,
        latency=latency_ms / 1000,
        note=note,
        throttled=throttled,
        at=None if at is None else float(at),
    )


class ResultsLogs:
    """Several results logs read as one stream of rows, file after file, as often as needed.

    The first reading notes how far each file went; later readings stop there, so a log that a
    run is still appending to reads the same every time. ``torn`` lists the files whose torn
    last row was skipped.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = tuple(paths)
        self.torn: list[Path] = []
        self._sizes: list[int] | None = None

    def rows(self, wanted: Callable[[int], object] | None = None) -> Iterator[Outcome]:
        """Every row of every file, in order, as outcomes; :class:`ReportError` on a bad row.

        On readings after the first, ``wanted(n)`` may pick rows by their position in the
        stream (0 for the first row of the first file): the others are not even parsed.
        """
        sizes = self._sizes
        read: list[int] = []
        ordinal = -1
        for index, path in enumerate(self.paths):
            used = 0
            for number, raw in self._lines(path, None if sizes is None else sizes[index]):
                ordinal += 1
                if sizes is not None and wanted is not None and not wanted(ordinal):
                    continue
                outcome = self._parse(path, number, raw)
                if outcome is None:
                    break
                used += len(raw)
                yield outcome
            read.append(used)
        if sizes is None:
            self._sizes = read

    @staticmethod
    def _lines(path: Path, limit: int | None) -> Iterator[tuple[int, bytes]]:
        """Numbered lines of ``path``, up to ``limit`` bytes."""
        used = 0
        try:
            with path.open("rb") as stream:
                for number, raw in enumerate(stream, 1):
                    if limit is not None and used >= limit:
                        return
                    used += len(raw)
                    yield number, raw
        except OSError as exc:
            raise ReportError(f"cannot read {path}: {exc.strerror}") from None

    def _parse(self, path: Path, number: int, raw: bytes) -> Outcome | None:
        try:
            return outcome_of_row(orjson.loads(raw))
        except orjson.JSONDecodeError:
            if not raw.endswith(b"\n"):
                # Only the last row can lack its newline: the writer died while writing it.
                if self._sizes is None:
                    self.torn.append(path)
                return None
            raise ReportError(f"{path} line {number}: not a results row: not JSON") from None
        except ValueError as exc:
            raise ReportError(f"{path} line {number}: not a results row: {exc}") from None
