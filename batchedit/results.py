"""The results log: one JSONL line per final outcome, appended as it happens.

The last entry for a line number is that line's final outcome. ``--resume`` reads the log back
into a :class:`ResumeIndex` and skips the lines that are already done with the same content.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import orjson

from batchedit.im.errors import ConfigError
from batchedit.jsonlog import LogDamaged, read_log
from batchedit.outcomes import AT_RANGE, LATENCY_MS_LIMIT, commands_giving

_DONE: Final = {"ok": 1, "failed": 0, "invalid": 2}
"""``run``'s outcomes: 1 done, 2 done but never applied, 0 to do again."""
_DENSE_SLACK: Final = 1 << 20
"""Line numbers up to twice the rows read plus this are kept in flat arrays; rarer, larger ones
in a dict, so no row, however odd its line number, costs more than a few bytes."""
_MAX_LINE: Final = 2**63 - 1
_NUMBER: Final = (int, float)
_AT_FIRST, _AT_END = AT_RANGE


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
        for number, raw in read_log(path, "results log"):
            entry = _entry(raw, codes)
            if isinstance(entry, str):
                _refuse_another_commands(path, raw, command)
                raise LogDamaged(path, number, f"not a results row ({entry})")
            index._set(*entry)
        return index

    def _set(self, line: int, digest: int, done: int) -> None:
        self._rows += 1
        size = len(self._done)
        if line >= size:
            if line > 2 * self._rows + _DENSE_SLACK:
                self._far[line] = (digest, done)
                return
            grow = line + 1 - size
            self._done.extend(bytes(grow))
            self._digests.frombytes(bytes(8 * grow))
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

    def was_invalid(self, line: int) -> bool:
        """Whether ``line``'s earlier final outcome was ``invalid`` (never applied)."""
        return 0 < line < len(self._done) and self._done[line] == 2

    def __len__(self) -> int:
        return sum(1 for d in self._done if d) + sum(1 for _, d in self._far.values() if d)
