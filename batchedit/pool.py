"""A bounded worker pool that keeps edits of one message in file order.

Records enter through :meth:`OrderedPool.submit`, which waits while ``buffer`` records are
already queued or running (backpressure for the reader). Two records for the same message are
never in flight together: the second waits behind the first and runs on the same worker right
after it, so the last one in the file is applied last.

The pool is an async context manager, entered after everything its handler uses (client, logs)
so that it closes before them. Shutdown, as aiojobs does it: :meth:`drain` waits for everything
submitted; :meth:`stop` takes no more work and lets running records finish; :meth:`close` waits
up to a grace period, then cancels. Leaving the ``async with`` block closes at once: whatever
still runs is cancelled and awaited, so a cancelled caller never leaves live workers behind.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")


class OrderedPool(Generic[T]):
    """Runs ``handle(item)`` for each submitted item on at most ``concurrency`` workers.

    ``handle`` should not raise: an exception from it stops the pool (no hang, no lost slot)
    and is raised again by :meth:`close`.
    """

    def __init__(
        self,
        handle: Callable[[T], Awaitable[None]],
        key: Callable[[T], Hashable],
        concurrency: int,
        buffer: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._handle = handle
        self._key = key
        self._concurrency = concurrency
        self._buffer = buffer or concurrency * 4
        # The submitter is woken once a quarter of the buffer is free, not at each free slot:
        # one wake-up per many records instead of one per record.
        self._refill = self._buffer - max(1, self._buffer // 4)
        self._queue: asyncio.Queue[T | None] = asyncio.Queue()
        self._chains: dict[Hashable, deque[T]] = {}
        self._pending = 0
        self._running = 0
        self._room = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._workers: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> OrderedPool[T]:
        self._workers = [asyncio.create_task(self._work()) for _ in range(self._concurrency)]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(0)

    @property
    def running(self) -> int:
        """Items being handled now (at most ``concurrency``)."""
        return self._running

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (or a handler raised)."""
        return self._stopping

    async def submit(self, item: T) -> bool:
        """Queue ``item``, waiting for room in the buffer; ``False`` (not queued) once stopping."""
        while not self._stopping and self._pending >= self._buffer:
            self._room.clear()
            await self._room.wait()
        if self._stopping:
            return False
        self._pending += 1
        self._idle.clear()
        key = self._key(item)
        chain = self._chains.get(key)
        if chain is not None:
            chain.append(item)
        else:
            self._chains[key] = deque()
            self._queue.put_nowait(item)
        return True

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None or self._stopping:
                return
            key = self._key(item)
            try:
                while True:
                    self._running += 1
                    try:
                        await self._handle(item)
                    except Exception:
                        self.stop()
                        raise
                    finally:
                        self._running -= 1
                        self._done_one()
                    chain = self._chains[key]
                    if not chain or self._stopping:
                        break
                    item = chain.popleft()
            finally:
                # Whatever still waits behind a stop, an error or a cancellation is dropped
                # unhandled: the owner leaves those records for a later run.
                for _ in self._chains.pop(key, ()):
                    self._done_one()

    def _done_one(self) -> None:
        self._pending -= 1
        if self._pending <= self._refill:
            self._room.set()
        if self._pending == 0:
            self._idle.set()

    async def drain(self) -> None:
        """Wait until every submitted item was handled (or the pool stopped)."""
        await self._idle.wait()

    def stop(self) -> None:
        """Take no new items; items already running finish. Unblocks :meth:`drain` and
        :meth:`submit`."""
        if self._stopping:
            return
        self._stopping = True
        self._idle.set()
        self._room.set()
        for _ in self._workers:
            # Wakes every parked worker; each sees the flag and ends without taking work.
            self._queue.put_nowait(None)

    async def close(self, grace: float) -> None:
        """Stop, give running items ``grace`` seconds to finish, then cancel what is left.

        Raises the first exception a handler raised, if any.
        """
        self.stop()
        if not self._workers:
            return
        if grace > 0:
            await asyncio.wait(self._workers, timeout=grace)
        for worker in self._workers:
            worker.cancel()  # a no-op for a worker that already ended
        ended = await asyncio.gather(*self._workers, return_exceptions=True)
        for result in ended:
            # A handler must not raise; if one did, that is a bug to show, not to swallow.
            if isinstance(result, Exception):
                raise result
