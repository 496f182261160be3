"""Where a plan's edits go: a file that appears only when complete, a stream, or a preview.

A stream (stdout piped into ``batchedit run -``) is written from a thread, so a reader that is
slower than the plan holds the plan back (at most :data:`AHEAD` lines wait) without ever
blocking the event loop; a reader that goes away ends the plan with a reason, not a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

import orjson

from batchedit.im.client import RoamMessage
from batchedit.im.errors import ConfigError
from batchedit.sender import RunState

Emit = Callable[[dict[str, Any], RoamMessage], bool | Awaitable[bool]]
"""Takes one planned edit and the message as it was read; ``False`` asks planning to stop."""

AHEAD: Final = 1024
"""Most edits planned but not yet written to a stream."""

_BATCH: Final = 256
"""Most edits written to a stream at once."""

STOP_WAIT: Final = 2.0
"""Seconds a stopping plan waits for the write in progress to a stream (a reader that does not
read blocks it); then the process may end with that line cut short."""


async def emitted(emit: Emit, edit: dict[str, Any], before: RoamMessage) -> bool:
    """Hand ``edit`` to ``emit`` (sync or async); whether planning may go on."""
    result = emit(edit, before)
    if inspect.isawaitable(result):
        result = await result
    return bool(result)


class _FileOutput:
    """Writes ``OUTPUT.partial``; :meth:`commit` renames it to OUTPUT, else it is removed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        try:
            self._out = self.partial.open("wb")
        except OSError as exc:
            raise ConfigError(f"cannot write {self.partial}: {exc.strerror}") from None

    def write(self, edit: dict[str, Any], before: RoamMessage) -> bool:
        self._out.write(orjson.dumps(edit) + b"\n")
        return True

    def close(self, commit: bool) -> None:
        try:
            self._out.close()
            if commit:
                self.partial.replace(self.path)
        finally:
            self.partial.unlink(missing_ok=True)  # still there only if planning did not complete


class _StreamOutput:
    """Writes to ``stream`` from a daemon thread, flushing each batch."""

    def __init__(self, stream: IO[bytes], state: RunState) -> None:
        self._stream = stream
        self._state = state
        self._loop = asyncio.get_running_loop()
        self._room = asyncio.Semaphore(AHEAD)
        self._lines: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._drained = asyncio.Event()
        self._stopped = asyncio.Event()
        self._closed = False
        self.error: str | None = None
        state.on_stop(self._release)

    def start(self) -> None:
        threading.Thread(target=self._drain, name="batchedit-plan-out", daemon=True).start()

    def _release(self) -> None:
        """Free every planner waiting for room: planning stops, or the reader has gone."""
        self._closed = True
        self._stopped.set()
        for _ in range(AHEAD):
            self._room.release()

    async def write(self, edit: dict[str, Any], before: RoamMessage) -> bool:
        if not self._closed:
            await self._room.acquire()
        if self._closed:
            return False
        self._lines.put(orjson.dumps(edit) + b"\n")
        return True

    def abandon(self) -> None:
        """Let the writer thread end after the write in progress; nobody waits for it."""
        self._lines.put(None)

    async def finish(self) -> None:
        """Wait until every edit handed over is written (or the reader has gone); once
        planning is stopping, for at most :data:`STOP_WAIT` seconds more (a reader that does
        not read could hold the write in progress forever)."""
        self._lines.put(None)
        drained = asyncio.ensure_future(self._drained.wait())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait([drained, stopped], return_when=asyncio.FIRST_COMPLETED)
            if not drained.done():
                await asyncio.wait([drained], timeout=STOP_WAIT)
        finally:
            drained.cancel()
            stopped.cancel()

    def _drain(self) -> None:
        failed = False
        while True:
            batch = [self._lines.get()]
            while batch[-1] is not None and len(batch) < _BATCH:
                try:
                    batch.append(self._lines.get_nowait())
                except queue.Empty:
                    break
            lines = [line for line in batch if line is not None]
            if not failed and not self._state.stopping:
                failed = not self._write(b"".join(lines))
            self._call(self._released, len(lines))
            if batch[-1] is None:
                self._call(self._drained.set)
                return

    def _write(self, data: bytes) -> bool:
        view = memoryview(data)
        try:
            while view:
                written = self._stream.write(view)
                if written is None:  # a non-blocking stream that is full: wait for room
                    time.sleep(0.01)
                view = view[written or 0 :]
            self._stream.flush()
        except Exception as exc:  # any failure of the stream ends the plan with its reason
            gone = isinstance(exc, BrokenPipeError | ValueError)  # ValueError: it was closed
            reason = "the reader of the output has gone" if gone else f"{type(exc).__name__}: {exc}"
            self._call(self._failed, reason)
            return False
        return True

    def _released(self, count: int) -> None:
        for _ in range(count):
            self._room.release()

    def _failed(self, reason: str) -> None:
        self.error = f"cannot write the edits: {reason}"
        self._release()

    def _call(self, function: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(function, *args)


class PlanOutput:
    """Where planned edits go, as ``async with``: a file (``Path``: written to
    ``OUTPUT.partial``, renamed when planning completes, removed otherwise), a binary stream
    (written as planned; :attr:`error` says if it failed), or an :data:`Emit` (a preview).

    Inside the block, :attr:`emit` takes each edit; ``state`` stopping means not complete.
    """

    def __init__(self, target: Path | IO[bytes] | Emit, state: RunState) -> None:
        self._target = target
        self._state = state
        self._file: _FileOutput | None = None
        self._stream: _StreamOutput | None = None
        self.emit: Emit = lambda edit, before: True

    @property
    def error(self) -> str | None:
        """Why the stream could not be written (the reader went away), or ``None``."""
        return self._stream.error if self._stream is not None else None

    async def __aenter__(self) -> PlanOutput:
        target = self._target
        if isinstance(target, Path):
            self._file = _FileOutput(target)
            self.emit = self._file.write
        elif callable(target):
            self.emit = target
        else:
            self._stream = _StreamOutput(target, self._state)
            self._stream.start()
            self.emit = self._stream.write
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close(commit=exc is None and not self._state.stopping)
        if self._stream is not None and exc is None:
            await self._stream.finish()
        elif self._stream is not None:
            self._stream.abandon()
