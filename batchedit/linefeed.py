"""Physical lines of an input, read in a thread and handed to the loop in batches.

A pipe or terminal may stay quiet for any time; waiting on it must keep neither signals nor
ticks from running. So the reading happens in a daemon thread, which never runs more than a few
batches ahead, and which is simply left behind if the loop stops listening: a read that never
returns cannot keep the process alive.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncGenerator, Callable
from typing import IO, Final

from batchedit.records import read_lines

BATCH: Final = 512
"""Most lines handed over at once."""

AHEAD: Final = 4
"""Most batches read ahead of the loop."""

POLL: Final = 0.2
"""Seconds between two looks at ``stopping`` while the input is quiet."""

Line = tuple[int, bytes]
"""A 1-based line number and the line (see :func:`batchedit.records.read_lines`)."""


class InputFailed(Exception):
    """Reading the input failed; the message says how."""


async def line_batches(
    stream: IO[bytes], stopping: Callable[[], bool] = lambda: False
) -> AsyncGenerator[list[Line], None]:
    """Batches of ``stream``'s lines, as :func:`~batchedit.records.read_lines` gives them;
    they end early once ``stopping()`` is true, even while the input is quiet (it is asked
    every :data:`POLL` seconds then).

    Raises :class:`InputFailed` when reading fails. Breaking out of the loop early is fine:
    the reading thread stops at its next hand-over, or is left behind in a read that waits.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[list[Line] | BaseException | None] = asyncio.Queue(AHEAD)
    left = threading.Event()

    def hand_over(item: list[Line] | BaseException | None) -> bool:
        if left.is_set():
            return False
        try:
            asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()
        except (RuntimeError, concurrent.futures.CancelledError):  # the loop is gone
            return False
        return not left.is_set()

    def produce() -> None:
        batch: list[Line] = []
        try:
            for line in read_lines(stream):
                batch.append(line)
                if len(batch) >= BATCH:
                    if not hand_over(batch):
                        return
                    batch = []
        except Exception as exc:  # handed to the loop, which reports it
            hand_over(exc)
            return
        if not batch or hand_over(batch):
            hand_over(None)

    # A daemon thread: should a read never return, it cannot keep the process alive.
    threading.Thread(target=produce, name="batchedit-lines", daemon=True).start()
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), POLL)
            except TimeoutError:
                if stopping():
                    return
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise InputFailed(f"{type(item).__name__}: {item}") from item
            yield item
    finally:
        # Unblock a hand-over in progress, so the thread sees that the loop has left.
        left.set()
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                queue.get_nowait()
