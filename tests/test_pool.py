"""The ordered worker pool alone: backpressure, order, errors, shutdown; gated by futures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from batchedit.pool import OrderedPool

HANG_GUARD = 30.0
"""Seconds after which a test counts as hung; never reached when the pool behaves."""


class Gated:
    """A handler that blocks each item on a future the test resolves, and logs what happens."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []
        self.cancelled: list[str] = []
        self.gates: dict[str, asyncio.Future[None]] = {}
        self._changed = asyncio.Event()

    def gate(self, item: str) -> asyncio.Future[None]:
        return self.gates.setdefault(item, asyncio.get_running_loop().create_future())

    async def __call__(self, item: str) -> None:
        self.started.append(item)
        self._changed.set()
        try:
            await self.gate(item)
        except asyncio.CancelledError:
            self.cancelled.append(item)
            raise
        self.finished.append(item)
        self._changed.set()

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait until ``condition()`` holds after some item started or finished."""
        while not condition():
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), HANG_GUARD)
            except TimeoutError:
                raise AssertionError(f"never happened: {what}") from None


def _key(item: str) -> str:
    return item.split(".", maxsplit=1)[0]


async def test_one_message_runs_in_submission_order_never_twice_at_once() -> None:
    """Items of one key run one after another, in order, while other keys run alongside."""
    handler = Gated()
    async with OrderedPool(handler, _key, concurrency=4) as pool:
        for item in ("a.1", "b.1", "a.2", "a.3"):
            assert await pool.submit(item)
        await handler.until(lambda: handler.started == ["a.1", "b.1"], "a.1 and b.1 start")
        handler.gate("a.1").set_result(None)
        await handler.until(lambda: "a.2" in handler.started, "a.2 starts after a.1")
        assert "a.3" not in handler.started
        for item in ("a.2", "a.3", "b.1"):
            handler.gate(item).set_result(None)
        await asyncio.wait_for(pool.drain(), HANG_GUARD)
    assert [i for i in handler.finished if i.startswith("a")] == ["a.1", "a.2", "a.3"]


async def test_running_counts_items_being_handled_not_those_queued() -> None:
    """``running`` (the progress's in-flight count) counts handlers at work: never more than
    the concurrency, and not the items queued behind them."""
    handler = Gated()
    async with OrderedPool(handler, _key, concurrency=2) as pool:
        for item in ("a.1", "b.1", "c.1", "a.2"):
            assert await pool.submit(item)
        await handler.until(lambda: len(handler.started) == 2, "two items running")
        assert pool.running == 2
        for item in ("a.1", "b.1", "c.1", "a.2"):
            handler.gate(item).set_result(None)
        await asyncio.wait_for(pool.drain(), HANG_GUARD)
        assert pool.running == 0


async def test_submit_waits_for_room_and_returns_false_once_stopped() -> None:
    """A full buffer holds the submitter back; a stop releases it without queuing the item."""
    handler = Gated()
    async with OrderedPool(handler, _key, concurrency=1, buffer=2) as pool:
        assert await pool.submit("a.1")
        assert await pool.submit("b.1")
        blocked = asyncio.ensure_future(pool.submit("c.1"))
        await asyncio.sleep(0)
        assert not blocked.done()
        handler.gate("a.1").set_result(None)
        assert await asyncio.wait_for(blocked, HANG_GUARD)
        waiting = asyncio.ensure_future(pool.submit("d.1"))
        await asyncio.sleep(0)
        pool.stop()
        assert await asyncio.wait_for(waiting, HANG_GUARD) is False
        assert await pool.submit("e.1") is False
        for gate in handler.gates.values():
            if not gate.done():
                gate.set_result(None)
        await asyncio.wait_for(pool.close(HANG_GUARD), HANG_GUARD)
    assert "d.1" not in handler.started


async def test_a_handler_error_stops_the_pool_instead_of_hanging_it() -> None:
    """An exception inside a worker stops the pool: the submitter and drain are released, the
    items queued behind are dropped, and close raises the error."""

    async def handle(item: str) -> None:
        if item == "a.1":
            raise OSError(28, "No space left on device")
        await asyncio.sleep(0)

    pool = OrderedPool(handle, _key, concurrency=2, buffer=3)
    accepted = []

    async def feed() -> None:
        async with pool:
            for item in ("a.1", "a.2", "a.3", "b.1", "c.1", "d.1", "e.1", "f.1"):
                accepted.append(await pool.submit(item))
            await pool.drain()
            await pool.close(1.0)

    with pytest.raises(OSError, match="No space left"):
        await asyncio.wait_for(feed(), HANG_GUARD)
    assert pool.stopping
    assert accepted[:3] == [True, True, True]
    assert not any(accepted[3:])


async def test_leaving_the_block_by_an_exception_cancels_running_items() -> None:
    """A caller that is cancelled or fails inside ``async with`` leaves no worker running: each
    running item is cancelled (so it can record itself) and awaited before the block exits."""
    handler = Gated()

    async def fail_inside() -> None:
        async with OrderedPool(handler, _key, concurrency=3) as pool:
            for item in ("a.1", "b.1", "a.2"):
                await pool.submit(item)
            await handler.until(lambda: len(handler.started) == 2, "two items running")
            raise RuntimeError("caller failed")

    with pytest.raises(RuntimeError, match="caller failed"):
        await fail_inside()
    assert sorted(handler.cancelled) == ["a.1", "b.1"]
    assert "a.2" not in handler.started


async def test_grace_lets_items_finish_then_cancels_the_rest() -> None:
    """close(grace) waits for running items; what is still running when it expires is
    cancelled."""
    handler = Gated()
    async with OrderedPool(handler, _key, concurrency=2) as pool:
        await pool.submit("a.1")
        await pool.submit("b.1")
        await handler.until(lambda: len(handler.started) == 2, "both running")
        handler.gate("a.1").set_result(None)
        await handler.until(lambda: handler.finished == ["a.1"], "a.1 finishes")
        await asyncio.wait_for(pool.close(0.01), HANG_GUARD)
    assert handler.finished == ["a.1"]
    assert handler.cancelled == ["b.1"]
