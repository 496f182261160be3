"""What a person sees while ``run``, ``undo`` or ``plan`` works: the first invalid lines, and a
live progress line."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TextIO

from batchedit.outcomes import Outcome, Status

SHOWN_INVALID = 20
"""How many invalid lines are printed (and as many of each of the other outcomes in
:data:`SHOWN`); the rest are only in the results log."""

SHOWN = (Status.INVALID, Status.CONFLICT, Status.MISMATCH, Status.MISSING)
"""The outcomes whose lines are printed as they come."""

TICK = 0.5
"""Seconds between two progress ticks."""


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot of work in progress.

    ``done`` units (lines, conversations) are finished, ``skipped`` of them without work
    (``--resume``); ``counts`` are shown in order; ``rate`` is the limit in force, in requests
    per second (``None``: no limit).
    """

    done: int
    counts: Mapping[str, int]
    unit: str = "lines"
    skipped: int = 0
    rate: float | None = None


class Observer(Protocol):
    """Watches a run or plan: every outcome as it is recorded, and a tick twice a second."""

    def outcome(self, outcome: Outcome) -> None:
        """A line reached its final outcome (``run`` and ``undo`` only)."""

    def notice(self, line: str) -> None:
        """A line to show before the work starts (the start line, a warning)."""

    def tick(self, progress: Progress) -> None:
        """Periodic progress."""


class ConsoleObserver:
    """Prints to ``stream`` (stderr): invalid lines as they come, and, on a terminal, a progress
    line (done/total, speed, ETA, counts, rate limit) rewritten in place twice a second.
    """

    def __init__(self, stream: TextIO, total: int | None, *, live: bool, quiet: bool) -> None:
        self._stream = stream
        self._total = total
        self._live = live and not quiet
        self._quiet = quiet
        self._shown: Counter[Status] = Counter()
        self._started = time.monotonic()
        self._drawn = False

    def outcome(self, outcome: Outcome) -> None:
        """Print why a line is invalid, a conflict, a mismatch or missing (the first
        :data:`SHOWN_INVALID` of each)."""
        status = outcome.status
        if status not in SHOWN or self._quiet:
            return
        self._shown[status] += 1
        name = status.value
        if self._shown[status] <= SHOWN_INVALID:
            self._clear()
            # An invalid line's reason starts with its number; the others name their message.
            where = "" if status is Status.INVALID else f"line {outcome.line} ({outcome.msg_key}): "
            print(f"{name}: {where}{outcome.info}", file=self._stream)
        elif self._shown[status] == SHOWN_INVALID + 1:
            self._clear()
            print(f"{name}: ... more {name} lines; see the results log", file=self._stream)

    def notice(self, line: str) -> None:
        """Print a line before the run starts (the start line, a warning), even when quiet."""
        print(line, file=self._stream)

    def tick(self, progress: Progress) -> None:
        """Redraw the progress line."""
        if not self._live:
            return
        done = progress.done
        elapsed = time.monotonic() - self._started
        speed = (done - progress.skipped) / elapsed if elapsed > 0 else 0.0
        parts = [f"{done}/{self._total}" if self._total else f"{done} {progress.unit}"]
        parts.append(f"{speed:.0f}/s")
        if self._total and speed > 0:
            left = max(0, self._total - done) / speed
            parts.append(f"ETA {int(left // 60)}m{int(left % 60):02d}s")
        parts.append(" ".join(f"{name} {n}" for name, n in progress.counts.items()))
        if progress.rate is not None:
            parts.append(f"limit {progress.rate:.0f}/s")
        self._stream.write("\r\x1b[2K" + " | ".join(parts))
        self._stream.flush()
        self._drawn = True

    def _clear(self) -> None:
        if self._drawn:
            self._stream.write("\r\x1b[2K")
            self._drawn = False

    def finish(self) -> None:
        """End the progress line before the summary is printed."""
        if self._drawn:
            self._stream.write("\n")
            self._drawn = False


@contextlib.asynccontextmanager
async def ticking(
    observer: Observer | None, snapshot: Callable[[], Progress]
) -> AsyncIterator[None]:
    """Inside the block, tick ``observer`` (if any) with ``snapshot()`` every :data:`TICK` s."""
    if observer is None:
        yield
        return

    async def tick() -> None:
        while True:
            observer.tick(snapshot())
            await asyncio.sleep(TICK)

    task = asyncio.create_task(tick())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])


def count_lines(path: str) -> int:
    """Lines in a file (a last line without a newline counts), read in 1 MiB blocks."""
    lines = 0
    last = b"\n"
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")
