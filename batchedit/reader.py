"""The reader stage: input lines are read and validated in a thread, handed to the loop in batches.

A pipe or terminal may stay quiet for any time, and waiting on it must never keep a stop (Ctrl-C,
SIGTERM, a fatal answer) from ending the run. So a stream over a pipe, socket or terminal is read
from its file descriptor directly, after a wait that :meth:`LineReader.stop` cuts short; a regular
file or an in-memory stream is read as it is. The thread never runs more than one batch ahead of
the loop, so memory stays flat however long the input is.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import selectors
import stat
import threading
from collections.abc import Callable
from types import TracebackType
from typing import IO, TYPE_CHECKING, Generic, TypeVar

from batchedit.records import Done, DoneCheck, read_batches

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

T = TypeVar("T")
BATCH = 512
"""The reader waits while this many lines wait for the loop."""


class InputError(Exception):
    """The input stream itself failed (an I/O error, or a bug reading it); the message says how."""


class _Wakeable(io.RawIOBase):
    """Reads a pipe, socket or terminal; :meth:`wake`, from any thread, ends a wait as EOF.

    The descriptor is borrowed: closing this object leaves it open.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._wake_r, self._wake_w = os.pipe()
        self._selector = selectors.PollSelector()
        self._selector.register(fd, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._woken = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        while not self._woken:
            ready = {key.fd for key, _ in self._selector.select()}
            if self._wake_r in ready:
                self._woken = True
            elif self._fd in ready:
                with contextlib.suppress(BlockingIOError):  # someone set O_NONBLOCK; wait again
                    return os.readv(self._fd, [buffer])
        return 0

    def wake(self) -> None:
        """End the current or next wait; every later read returns EOF."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    def close(self) -> None:
        if not self.closed:
            self._selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
        super().close()


def _waitable_fd(stream: IO[bytes]) -> int | None:
    """The descriptor of a stream over a pipe, socket or terminal, else ``None``."""
    if not isinstance(stream, io.BufferedReader | io.FileIO):
        return None  # in-memory or spooled streams never block (and asking a spool rolls it over)
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError):
        return None
    return None if stat.S_ISREG(mode) or stat.S_ISBLK(mode) else fd


class LineReader(Generic[T]):
    """Reads ``stream`` in a thread: every line as :func:`~batchedit.records.read_batches` gives
    it (``parse`` and ``done`` as there), in batches.

    Create it inside the running loop and use it as ``async with``; leaving the block stops the
    thread and waits for it.
    """

    def __init__(
        self,
        stream: IO[bytes],
        parse: Callable[[int, bytes, str], T],
        done: DoneCheck | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._finished = self._loop.create_future()
        self._stream = stream
        self._parse = parse
        self._done = done
        self._raw: _Wakeable | None = None
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._ready: list[T | Done] = []
        self._waiting_lines = 0
        """Lines in ``_ready``: a :class:`Done` holds many."""
        self._ended = False
        self._stopped = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.lines_read = 0
        """The number of the last line taken from the stream (handed over or not)."""

    async def __aenter__(self) -> LineReader[T]:
        fd = _waitable_fd(self._stream)
        if fd is not None:
            self._raw = _Wakeable(fd)
        # A daemon thread: should a read ever hang anyway, it cannot keep the process alive.
        threading.Thread(target=self._produce, name="batchedit-reader", daemon=True).start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        await asyncio.shield(self._finished)

    def stop(self) -> None:
        """Read no further; a wait on a quiet pipe or terminal ends now."""
        with self._lock:
            self._stopped = True
            self._room.notify_all()
            if self._raw is not None and not self._raw.closed:
                self._raw.wake()

    async def batch(self) -> list[T | Done] | None:
        """The records read since the last call (waiting for at least one); ``None`` at the end
        of the input or after :meth:`stop`. Raises :class:`InputError` if reading failed."""
        # Always yield once: a reader that keeps ahead must not starve the loop (signals, ticks).
        await asyncio.sleep(0)
        while True:
            with self._lock:
                if self._ready and not self._stopped:
                    ready, self._ready = self._ready, []
                    self._waiting_lines = 0
                    self._room.notify_all()
                    return ready
                if self._error is not None:
                    error = self._error
                    raise InputError(f"{type(error).__name__}: {error}") from error
                if self._ended or self._stopped:
                    return None
                waiter = self._waiter = self._loop.create_future()
            await waiter

    def _produce(self) -> None:
        stream: IO[bytes] = self._stream
        if self._raw is not None:
            stream = io.BufferedReader(self._raw, 1 << 16)
        try:
            # Closed before the loop hears of the end: the stream is then left where reading
            # ended, for the count of the lines left unread.
            with contextlib.closing(read_batches(stream, self._parse, self._done)) as batches:
                for lines, batch in batches:
                    self.lines_read += lines
                    with self._lock:
                        while self._waiting_lines >= BATCH and not self._stopped:
                            self._room.wait()
                        if self._stopped:
                            return
                        self._ready.extend(batch)
                        self._waiting_lines += lines
                        self._poke()
        except Exception as exc:  # handed to the loop, which stops the run with it
            with self._lock:
                self._error = exc
        finally:
            with self._lock:
                self._ended = True
                self._poke()
                if self._raw is not None:
                    self._raw.close()  # under the lock: stop() must never write to a reused fd
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(_resolve, self._finished)

    def _poke(self) -> None:
        """Wake the loop if it waits for records (called with the lock held)."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._loop.call_soon_threadsafe(_resolve, waiter)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
