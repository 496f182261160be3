"""Append-only JSONL logs (the results log, the backup) that survive a crash and a second run.

A log is locked (``flock``, exclusive) for as long as a run has it open, so two runs never write
one log. A crash can leave at most one torn row, the last, without its newline: opening the log
cuts it off again, and reading ignores it. Rows are written with one ``write`` each; a
:meth:`JsonlAppender.durable` wait puts them on disk (one ``fsync`` for every row written
meanwhile: a group commit), and closing fsyncs too.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

import orjson

from batchedit.console import log_note
from batchedit.im.errors import ConfigError

MAX_ROW_BYTES: Final = 8 * 1024 * 1024
"""Longer rows are damage: ours stay far below (a before-image holds one message)."""
_TAIL_CHUNK: Final = 64 * 1024
_READ_BLOCK: Final = 256 * 1024
"""Bytes read at once; far below :data:`MAX_ROW_BYTES`."""


class LogDamaged(ConfigError):
    """A log has a damaged row that is not the torn last one: the run cannot trust it."""

    def __init__(self, path: Path, line: int, what: str) -> None:
        super().__init__(
            f"{path}: line {line}: {what}; only a torn last row is repaired, so fix or remove "
            "that line by hand"
        )


def lock_holder(fd: int) -> str:
    """`` (pid N)`` for the process holding an ``flock`` on ``fd``'s file, if Linux says so."""
    info = os.fstat(fd)
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    with contextlib.suppress(OSError), open("/proc/locks", encoding="ascii") as locks:
        for entry in locks:
            fields = entry.split()
            if "FLOCK" in fields and "->" not in fields and wanted in fields:
                return f" (pid {fields[fields.index('FLOCK') + 3]})"
    return ""


def _lock(stream: IO[bytes], path: Path, shared: bool = False) -> None:
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        fcntl.flock(stream.fileno(), mode | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock_holder(stream.fileno())
        stream.close()
        raise ConfigError(
            f"{path} is in use by another batchedit run{holder}: wait for it to end (two runs "
            "on one log would both send everything)"
        ) from None


def _cut_torn_tail(fd: int, path: Path) -> None:
    """Truncate the log after its last newline, saying so, when its last row has none."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    os.ftruncate(fd, end)
    os.fsync(fd)
    log_note(
        f"{path}: its last row was torn by a crash ({size - end} bytes without a newline); "
        "cut it off (that line counts as not done)",
        "repair",
    )


def _is_linked(stream: IO[bytes], path: Path) -> bool:
    """Whether ``path`` still names the file open as ``stream``."""
    opened = os.fstat(stream.fileno())
    try:
        named = path.stat()
    except OSError:
        return False
    return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)


def _fsync_directory(path: Path) -> None:
    """Make a newly created file's name durable too."""
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JsonlAppender:
    """Appends rows to a JSONL log, each with one ``write`` so a crash tears at most the last.

    Use it as a context manager: entering locks the log (:class:`ConfigError` if another run
    holds it) and cuts a torn last row; leaving fsyncs and unlocks.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None
        self._size = 0
        self._written = 0
        self._synced = 0
        self._syncing: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        self.created = False
        """Whether entering made the file (it did not exist)."""

    def __enter__(self) -> JsonlAppender:
        while True:
            try:
                created = not self.path.exists()
                stream = self.path.open("a+b")
            except OSError as exc:
                raise ConfigError(
                    f"cannot open {self.path} for appending: {exc.strerror}"
                ) from None
            _lock(stream, self.path)
            if _is_linked(stream, self.path):
                break
            # A refused run removed the log it had made (see remove_if_unwritten) after this one
            # opened it: this run's rows belong in the file at the path now.
            stream.close()
        self.created = created
        try:
            _cut_torn_tail(stream.fileno(), self.path)
            if created:
                _fsync_directory(self.path)
        except OSError as exc:
            stream.close()
            raise ConfigError(f"cannot repair {self.path}: {exc.strerror}") from None
        self._size = os.fstat(stream.fileno()).st_size
        self._file = stream
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            if self._file is None:
                return
            try:
                os.fsync(self._file.fileno())
            except OSError as error:
                log_note(
                    f"{self.path}: could not be synced to disk at the end ({error.strerror})",
                    "warning",
                )
            finally:
                self._file.close()
                self._file = None

    def remove_if_unwritten(self) -> None:
        """Delete the log if entering made it and nothing was written to it since: a run
        refused while opening its logs leaves no file behind. Called while the log is open, so
        no other run holds it (one that opened it meanwhile sees it gone once it gets the lock).
        """
        if self._file is not None and self.created and self._size == 0:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def append(self, row: Mapping[str, Any]) -> None:
        """Write one row (on its way to disk, not yet durable: see :meth:`durable`).

        A failed write (disk full) is undone before the ``OSError`` goes up, so the log never
        holds a torn row in its middle; a row that cannot be encoded raises
        ``orjson.JSONEncodeError`` before anything is written.
        """
        if self._file is None:
            raise RuntimeError("JsonlAppender used outside 'with'")
        data = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
        fd = self._file.fileno()
        try:
            done = os.write(fd, data)
            while done < len(data):
                done += os.write(fd, data[done:])
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._size)
            raise
        self._size += len(data)
        self._written += 1

    async def durable(self) -> None:
        """Return once every row appended so far is on disk.

        Rows appended while an ``fsync`` runs share the next one, so a busy log costs one
        ``fsync`` per batch, not per row. Raises ``OSError`` if the disk refuses.
        """
        target = self._written
        while self._synced < target:
            if self._syncing is None:
                self._syncing = asyncio.create_task(self._sync())
            await asyncio.shield(self._syncing)

    async def _sync(self) -> None:
        upto = self._written
        try:
            await asyncio.to_thread(self._fsync)
        finally:
            self._syncing = None
        self._synced = max(self._synced, upto)

    def _fsync(self) -> None:
        # Under the lock: the log may be closed meanwhile (the run ending), and a closed
        # descriptor's number may already belong to another file.
        with self._lock:
            if self._file is not None:
                os.fsync(self._file.fileno())


def read_log(path: Path, kind: str, *, shared_lock: bool = False) -> Iterator[tuple[int, bytes]]:
    """The complete rows of a log as (line number, bytes), each with its newline.

    As :func:`read_log_blocks`, one row at a time.
    """
    for first, rows in read_log_blocks(path, kind, shared_lock=shared_lock):
        for number, raw in enumerate(rows, first):
            yield number, raw + b"\n"


def read_log_blocks(
    path: Path, kind: str, *, shared_lock: bool = False
) -> Iterator[tuple[int, list[bytes]]]:
    """The complete rows of a log, a block at a time: (line number of the first row, the rows
    without their newlines).

    A last row without a newline is a row torn by a crash: it is skipped (and said so). A row
    longer than :data:`MAX_ROW_BYTES` raises :class:`LogDamaged`. With ``shared_lock`` the log
    is locked against a run writing it meanwhile. ``OSError`` becomes :class:`ConfigError`
    naming the ``kind`` of log ("backup").
    """
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {kind} {path}: {exc.strerror}") from None
    if shared_lock:
        _lock(stream, path, shared=True)
    with stream:
        number = 1
        start: list[bytes] = []  # the pieces of the row not ended yet, ``pending`` bytes
        pending = 0
        while True:
            try:
                block = stream.read(_READ_BLOCK)
            except OSError as exc:
                raise ConfigError(f"cannot read {kind} {path}: {exc.strerror}") from None
            if not block:
                break
            rows = block.split(b"\n")
            if len(rows) == 1:
                start.append(block)
                pending += len(block)
                if pending > MAX_ROW_BYTES:
                    raise LogDamaged(path, number, f"row longer than {MAX_ROW_BYTES} bytes")
                continue
            if start:
                start.append(rows[0])
                rows[0] = b"".join(start)
            tail = rows.pop()
            start, pending = ([tail], len(tail)) if tail else ([], 0)
            # Only a row begun in an earlier block can be longer than a block, so only the first.
            if len(rows[0]) > MAX_ROW_BYTES:
                raise LogDamaged(path, number, f"row longer than {MAX_ROW_BYTES} bytes")
            yield number, rows
            number += len(rows)
        if start:
            log_note(
                f"{path}: its last row (line {number}) was torn by a crash "
                f"({pending} bytes without a newline); ignored it",
                "repair",
            )
