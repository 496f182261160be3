"""The results log: one JSONL line per final outcome, appended as it happens.

The last entry for a line number is that line's final outcome. ``--resume`` reads the log back
into a :class:`ResumeIndex` and skips the lines that are already done with the same content.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Mapping
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, Final

import orjson

from batchedit.im.errors import ConfigError
from batchedit.jsonlog import LogDamaged, read_log_blocks
from batchedit.outcomes import AT_RANGE, LATENCY_MS_LIMIT, commands_giving

_DONE: Final = {"ok": 1, "failed": 0, "invalid": 2}
"""``run``'s outcomes: 1 done, 2 done but never applied, 0 to do again."""
_DENSE_SLACK: Final = 1 << 20
"""Line numbers up to twice the rows read plus this are kept in flat arrays; rarer, larger ones
in a dict, so no row, however odd its line number, costs more than a few bytes."""
_MAX_LINE: Final = 2**63 - 1
_NUMBER: Final = (int, float)
_NUMBER_TYPES: Final = frozenset(_NUMBER)
_AT_FIRST, _AT_END = AT_RANGE
_INVALID: Final = _DONE["invalid"]
_PICK: Final = itemgetter("line", "outcome", "hash")
_PICK_ALL: Final = itemgetter("line", "outcome", "hash", "at", "latency_ms")


def _entry(raw: bytes, codes: Mapping[str, int]) -> tuple[int, int, int] | str:
    """(line, digest, done) of a results row, or what is wrong with it."""
    try:
        row: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "not JSON"
    if not isinstance(row, dict):
        return "not a JSON object"
    line, digest, outcome = row.get("line"), row.get("hash"), row.get("outcome")
    if type(line) is not int or not 0 < line <= _MAX_LINE:
        return "line: must be a positive whole number"
    if not isinstance(outcome, str) or outcome not in codes:
        *names, last = codes
        return f"outcome: must be {', '.join(names)} or {last}"
    try:
        value = int(digest, 16) if isinstance(digest, str) and len(digest) == 16 else -1
    except ValueError:
        value = -1
    if value < 0:
        return "hash: must be 16 hex digits"
    at, latency = row.get("at", _AT_FIRST), row.get("latency_ms", 0)
    if type(at) not in _NUMBER or not _AT_FIRST <= at < _AT_END:
        return "at: must be UNIX seconds from 2000 to 2100"
    if type(latency) not in _NUMBER or not 0 <= latency < LATENCY_MS_LIMIT:
        return "latency_ms: must be a number of milliseconds under a day"
    return line, value, codes[outcome]


def _refuse_another_commands(path: Path, raw: bytes, command: str) -> None:
    """Raise :class:`ConfigError` if ``raw`` is a row of another command's results log."""
    try:
        row: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    outcome = row.get("outcome") if isinstance(row, dict) else None
    writers = commands_giving(outcome) if isinstance(outcome, str) else ()
    if writers and command not in writers:
        whose = " or ".join(_named(writer) for writer in writers)
        raise ConfigError(
            f"{path} is the results log of {whose}, not of {_named(command)}: give {command} "
            "its own --results"
        )


def _named(command: str) -> str:
    return f"{'an' if command[0] in 'aeiou' else 'a'} `{command}`"


def _digest_array(hashes: list[str] | tuple[str, ...]) -> array[int]:
    """The 16-hex-digit ``hashes`` as the integers ``int(hash, 16)`` gives, in one array. Raises
    ``ValueError`` for a hash that is not hex; skips spaces (``bytes.fromhex`` does)."""
    digests = array("Q", bytes.fromhex("".join(hashes)))
    if sys.byteorder == "little":
        digests.byteswap()  # the hex is big-endian, as int(hash, 16) reads it
    return digests


def _columns(rows: list[Any]) -> tuple[tuple[Any, ...], ...]:
    """The line, outcome, hash, at and latency_ms of each of ``rows`` (parsed), a column each;
    a row without ``at`` or ``latency_ms`` (an older batchedit's) has the one :func:`_entry`
    takes then. Raises ``KeyError`` or ``TypeError`` for rows without the others, or not
    objects."""
    try:
        return tuple(zip(*map(_PICK_ALL, rows), strict=True))
    except KeyError:
        lines, outcomes, hashes = zip(*map(_PICK, rows), strict=True)
        ats = tuple(map(dict.get, rows, repeat("at"), repeat(_AT_FIRST)))
        latencies = tuple(map(dict.get, rows, repeat("latency_ms"), repeat(0)))
        return lines, outcomes, hashes, ats, latencies


class ResumeIndex:
    """The final outcome of each line of an earlier run: done (ok or invalid) with which hash.

    Stored in two flat arrays indexed by line number, so a million-line log costs about 9 MB.
    A torn last row (the writer was killed mid-write) is ignored: that line is simply redone.
    Any other damage raises :class:`~batchedit.jsonlog.LogDamaged` naming the line.
    """

    def __init__(self) -> None:
        self._digests = array("Q")
        self._done = bytearray()
        self._far: dict[int, tuple[int, int]] = {}
        self._rows = 0

    @classmethod
    def load(
        cls, path: Path, codes: Mapping[str, int] = _DONE, command: str = "run"
    ) -> ResumeIndex:
        """Read ``path``; a missing file is an empty index. ``codes`` are the outcomes the log
        may hold, each 1 (done), 2 (done, never applied) or 0 (to do again): those of
        ``command`` (``run``'s unless given). A row another command wrote raises
        :class:`ConfigError` naming both commands."""
        index = cls()
        if not path.exists():
            return index
        for first, rows in read_log_blocks(path, "results log"):
            if index._add_block(rows, codes):
                continue
            for number, raw in enumerate(rows, first):
                entry = _entry(raw, codes)
                if isinstance(entry, str):
                    _refuse_another_commands(path, raw, command)
                    raise LogDamaged(path, number, f"not a results row ({entry})")
                index._set(*entry)
        return index

    def _add_block(self, rows: list[bytes], codes: Mapping[str, int]) -> bool:
        """Add a block of rows whose fields all have the shapes a run writes, checking them a
        column at a time; ``False`` (nothing added) when any row is odd, for :func:`_entry` to
        judge row by row."""
        try:
            lines, outcomes, hashes, ats, latencies = _columns(list(map(orjson.loads, rows)))
            if (
                set(map(type, lines)) != {int}
                or min(lines) < 1
                or max(lines) > _MAX_LINE
                or not codes.keys() >= set(outcomes)
                or set(map(len, hashes)) != {16}
                or not set(map(type, ats)) <= _NUMBER_TYPES
                or min(ats) < _AT_FIRST
                or max(ats) >= _AT_END
                or not set(map(type, latencies)) <= _NUMBER_TYPES
                or min(latencies) < 0
                or max(latencies) >= LATENCY_MS_LIMIT
            ):
                return False
            digests = _digest_array(hashes)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return False
        if len(digests) != len(rows):  # fromhex skips spaces: a hash held some
            return False
        dones = bytes(map(codes.__getitem__, outcomes))
        top = max(lines)
        if top >= len(self._done) and top > 2 * (self._rows + len(rows)) + _DENSE_SLACK:
            for row in zip(lines, digests, dones, strict=True):
                self._set(*row)
            return True
        self._rows += len(rows)
        self._grow(top)
        if self._far:
            for line in lines:
                self._far.pop(line, None)
        all_digests, all_done = self._digests, self._done
        for line, digest, done in zip(lines, digests, dones, strict=True):
            all_digests[line] = digest
            all_done[line] = done
        return True

    def _grow(self, line: int) -> None:
        """Make the flat arrays reach ``line``."""
        grow = line + 1 - len(self._done)
        if grow > 0:
            self._done.extend(bytes(grow))
            self._digests.frombytes(bytes(8 * grow))

    def _set(self, line: int, digest: int, done: int) -> None:
        self._rows += 1
        if line >= len(self._done):
            if line > 2 * self._rows + _DENSE_SLACK:
                self._far[line] = (digest, done)
                return
            self._grow(line)
        if self._far:
            self._far.pop(line, None)
        self._digests[line] = digest
        self._done[line] = done

    def is_done(self, line: int, digest: str) -> bool:
        """Whether ``line`` already ended ``ok`` or ``invalid`` with this very content."""
        if self._far and line in self._far:
            far_digest, done = self._far[line]
            return done != 0 and far_digest == int(digest, 16)
        return (
            0 < line < len(self._done)
            and self._done[line] != 0
            and self._digests[line] == int(digest, 16)
        )

    def done_among(self, first: int, digests: list[str]) -> list[bool]:
        """Which of line ``first`` and the lines right after it, with these digests (as
        :func:`~batchedit.records.line_digest` makes them), :meth:`is_done`."""
        end = first + len(digests)
        # All of them flagged done (the usual resume): then one compare of the digests.
        flagged = first > 0 and end <= len(self._done) and 0 not in self._done[first:end]
        if flagged and not self._far and _digest_array(digests) == self._digests[first:end]:
            return [True] * len(digests)
        return [self.is_done(line, digest) for line, digest in enumerate(digests, first)]

    def invalid_among(self, first: int, count: int) -> int:
        """How many of line ``first`` and the ``count - 1`` lines after it ended ``invalid``
        (never applied)."""
        found = self._done[max(first, 0) : max(first + count, 0)].count(_INVALID)
        if self._far:
            far = (self._far.get(line) for line in range(first, first + count))
            found += sum(1 for entry in far if entry is not None and entry[1] == _INVALID)
        return found

    def __len__(self) -> int:
        return sum(1 for d in self._done if d) + sum(1 for _, d in self._far.values() if d)
