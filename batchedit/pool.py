"""A bounded worker pool that keeps edits of one message in file order.

Records enter through :meth:`OrderedPool.submit`, which waits while ``buffer`` records are
already queued or running (backpressure for the reader). Two records for the same message are
never in flight together: the second waits behind the first and runs on the same worker right
after it, so the last one in the file is applied last.

Shutdown, as aiojobs does it: :meth:`drain` waits for everything submitted; :meth:`stop` takes no
more work and lets running records finish; :meth:`close` waits up to a grace period, then cancels.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class OrderedPool(Generic[T]):
    """Runs ``handle(item)`` for each submitted item on at most ``concurrency`` workers."""

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
        self._slots = asyncio.Semaphore(buffer or concurrency * 4)
        self._queue: asyncio.Queue[T | None] = asyncio.Queue()
        self._chains: dict[Hashable, deque[T]] = {}
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._workers = [asyncio.create_task(self._work()) for _ in range(concurrency)]

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping

    async def submit(self, item: T) -> None:
        """Queue ``item``, waiting for room in the buffer."""
        await self._slots.acquire()
        self._pending += 1
        self._idle.clear()
        chain = self._chains.get(self._key(item))
        if chain is not None:
            chain.append(item)
            return
        self._chains[self._key(item)] = deque()
        self._queue.put_nowait(item)

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None or self._stopping:
                return
            key = self._key(item)
            while True:
                try:
                    await self._handle(item)
                finally:
                    self._done_one()
                chain = self._chains[key]
                if not chain or self._stopping:
                    del self._chains[key]
                    break
                item = chain.popleft()

    def _done_one(self) -> None:
        self._slots.release()
        self._pending -= 1
        if self._pending == 0:
            self._idle.set()

    async def drain(self) -> None:
        """Wait until every submitted item was handled (or the pool stopped)."""
        await self._idle.wait()

    def stop(self) -> None:
        """Take no new items; items already running finish. Unblocks :meth:`drain`."""
        self._stopping = True
        self._idle.set()
        for _ in self._workers:
            # Wakes every parked worker; each sees the flag and ends without taking work.
            self._queue.put_nowait(None)

    async def close(self, grace: float) -> None:
        """Stop, give running items ``grace`` seconds to finish, then cancel what is left."""
        self.stop()
        _, late = await asyncio.wait(self._workers, timeout=grace)
        for worker in late:
            worker.cancel()
        ended = await asyncio.gather(*self._workers, return_exceptions=True)
        for result in ended:
            # A handler must not raise; if one did, that is a bug to show, not to swallow.
            if isinstance(result, Exception):
                raise result
