"""The results log: one JSONL line per final outcome, appended and flushed as it happens.

The last entry for a line number is that line's final outcome. ``--resume`` reads the log back
into a :class:`ResumeIndex` and skips the lines that are already done with the same content.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import orjson

from batchedit.im.errors import ConfigError

_DONE = {"ok": 1, "invalid": 2}


class JsonlAppender:
    """Appends rows to a JSONL file (results log, backup), flushing each so a crash loses none."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None

    def __enter__(self) -> JsonlAppender:
        try:
            self._file = self.path.open("ab")
        except OSError as exc:
            raise ConfigError(f"cannot open {self.path} for appending: {exc.strerror}") from None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def append(self, row: Mapping[str, Any]) -> None:
        """Append and flush one row."""
        if self._file is None:
            raise RuntimeError("JsonlAppender used outside 'with'")
        self._file.write(orjson.dumps(row) + b"\n")
        self._file.flush()


class ResumeIndex:
    """The final outcome of each line of an earlier run: done (ok or invalid) with which hash.

    Stored in two flat arrays indexed by line number, so a million-line log costs about 9 MB.
    A torn last line (the writer was killed mid-write) is ignored: that line is simply redone.
    """

    def __init__(self) -> None:
        self._digests = array("Q")
        self._done = bytearray()

    @classmethod
    def load(cls, path: Path) -> ResumeIndex:
        """Read ``path``; a missing file is an empty index."""
        index = cls()
        if not path.exists():
            return index
        with path.open("rb") as stream:
            for raw in stream:
                try:
                    row = orjson.loads(raw)
                    line = int(row["line"])
                    digest = int(row["hash"], 16)
                    done = _DONE.get(row["outcome"], 0)
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
                index._set(line, digest, done)
        return index

    def _set(self, line: int, digest: int, done: int) -> None:
        if line <= 0:
            return
        if line >= len(self._done):
            grow = line + 1 - len(self._done)
            self._done.extend(bytes(grow))
            self._digests.extend([0] * grow)
        self._digests[line] = digest
        self._done[line] = done

    def is_done(self, line: int, digest: str) -> bool:
        """Whether ``line`` already ended ``ok`` or ``invalid`` with this very content."""
        return (
            0 < line < len(self._done)
            and self._done[line] != 0
            and self._digests[line] == int(digest, 16)
        )

    def was_invalid(self, line: int) -> bool:
        """Whether ``line``'s earlier final outcome was ``invalid`` (never applied)."""
        return 0 < line < len(self._done) and self._done[line] == _DONE["invalid"]

    def __len__(self) -> int:
        return sum(1 for d in self._done if d)
