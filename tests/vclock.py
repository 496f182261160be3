"""An asyncio loop on a virtual clock: when nothing is ready, time jumps to the next timer.

``loop.time()`` is what asyncio schedules timers by and what aiolimiter paces by, so code under
test runs unchanged, in no real time, and gives the same answer however busy the machine is.
``lateness`` adds to every jump, as a real loop wakes up late (epoll rounds up to milliseconds).
Each turn of the loop also moves the clock by a nanosecond, as a real clock moves while the loop
works: aiolimiter may re-arm its timer for the very instant it woke at (float rounding), and a
clock that never moves would spin there for ever.
"""

from __future__ import annotations

import asyncio
import random
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

TURN = 1e-9
"""Virtual seconds each turn of the loop takes."""

REAL_WAIT = 10.0
"""Real seconds to wait for a thread's wake-up when no timer is pending (a deadlock beyond)."""


class _Clock:
    def __init__(self, start: float, lateness: float, seed: int) -> None:
        self.now = start
        self.lateness = lateness
        self._rng = random.Random(seed)

    def jump(self, seconds: float) -> None:
        self.now += seconds + (self._rng.uniform(0, self.lateness) if self.lateness else 0.0)


class _Selector(selectors.SelectSelector):
    """Real I/O is polled without waiting; a wait for a timer moves the virtual clock instead."""

    def __init__(self, clock: _Clock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if events or timeout == 0:
            self._clock.jump(TURN)
            return events
        if timeout is None:
            events = super().select(REAL_WAIT)
            if not events:
                raise RuntimeError("virtual loop: nothing scheduled and nothing arrived")
            return events
        self._clock.jump(timeout)
        return events


class VirtualLoop(asyncio.SelectorEventLoop):
    """A selector loop whose ``time()`` is the virtual clock."""

    def __init__(self, clock: _Clock) -> None:
        super().__init__(_Selector(clock))
        self._virtual = clock

    def time(self) -> float:
        """The virtual time, in seconds."""
        return self._virtual.now


def run_virtual(
    main: Coroutine[Any, Any, T], *, start: float = 0.0, lateness: float = 0.0, seed: int = 5
) -> T:
    """Run ``main`` on a virtual clock starting at ``start`` seconds.

    Every wait for a timer ends up to ``lateness`` seconds late (uniform, seeded).
    """
    clock = _Clock(start, lateness, seed)
    with asyncio.Runner(loop_factory=lambda: VirtualLoop(clock)) as runner:
        return runner.run(main)
