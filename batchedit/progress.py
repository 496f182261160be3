"""What a person (or a log pipeline) sees while ``run``, ``undo`` or ``plan`` works: the start
line, the first invalid lines, and progress: a live line on a terminal, else a plain (or JSON)
line every few seconds."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import stat
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any, Protocol

from batchedit.console import Console
from batchedit.outcomes import Outcome, Status
from batchedit.ratelimit import RateStats

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
    per second (``None``: no limit); ``in_flight`` counts units being worked on now
    (``None``: not counted); ``limits`` are the limiter's counters so far (``None``: no limit).
    """

    done: int
    counts: Mapping[str, int]
    unit: str = "lines"
    skipped: int = 0
    rate: float | None = None
    in_flight: int | None = None
    limits: RateStats | None = None


class Observer(Protocol):
    """Watches a run or plan: every outcome as it is recorded, and a tick twice a second."""

    def outcome(self, outcome: Outcome) -> None:
        """A line reached its final outcome (``run`` and ``undo`` only)."""

    def notice(self, line: str) -> None:
        """A line to show before the work starts (the start line, a warning)."""

    def tick(self, progress: Progress) -> None:
        """Periodic progress."""


class Observers:
    """Several observers watching one run, each told everything in the order given."""

    def __init__(self, *observers: Observer) -> None:
        self._observers = observers

    def outcome(self, outcome: Outcome) -> None:
        """Tell each observer."""
        for observer in self._observers:
            observer.outcome(outcome)

    def notice(self, line: str) -> None:
        """Tell each observer."""
        for observer in self._observers:
            observer.notice(line)

    def tick(self, progress: Progress) -> None:
        """Tell each observer."""
        for observer in self._observers:
            observer.tick(progress)


class ConsoleObserver:
    """Shows a run on ``console``: notices (the start line, warnings), invalid lines as they
    come, and progress (done/total, speed, ETA, counts, the rate limit in force).

    On a terminal in text mode the progress line is redrawn in place at every tick, cut to the
    terminal's width so that it never wraps; otherwise (a file, a pipe, JSON lines) a progress
    line is written every ``every`` seconds (0: never). ``quiet`` shows only notices. ``total``
    is the number of units to do, if known (for the ETA); ``clock`` gives seconds (monotonic).
    """

    def __init__(
        self,
        console: Console,
        total: int | None,
        *,
        quiet: bool = False,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        logged: bool = True,
    ) -> None:
        self._console = console
        self._logged = logged
        self._total = total
        self._quiet = quiet
        self._live = console.terminal and not console.json
        self._every = every
        self._clock = clock
        self._shown: Counter[Status] = Counter()
        self._started: float | None = None
        self._due = 0.0

    def outcome(self, outcome: Outcome) -> None:
        """Show why a line is invalid, a conflict, a mismatch or missing (the first
        :data:`SHOWN_INVALID` of each)."""
        status = outcome.status
        if status not in SHOWN or self._quiet:
            return
        self._shown[status] += 1
        name = status.value
        if self._shown[status] <= SHOWN_INVALID:
            # An invalid line's reason starts with its number; the others name their message.
            where = "" if status is Status.INVALID else f"line {outcome.line} ({outcome.msg_key}): "
            self._console.line(name, f"{name}: {where}{outcome.info}", line=outcome.line)
        elif self._shown[status] == SHOWN_INVALID + 1:
            more = f"{name}: ... more {name} lines" + (
                "; see the results log" if self._logged else ""
            )
            self._console.line(name, more)

    def notice(self, line: str) -> None:
        """Show a line before the work starts, even when quiet; its event is the word before
        its first colon (``start``, ``warning``)."""
        word = line.partition(":")[0]
        self._console.line(word if word.isalpha() else "notice", line)

    def tick(self, progress: Progress) -> None:
        """Redraw the live line, or write a progress line if one is due."""
        now = self._clock()
        if self._started is None:
            self._started = self._due = now
        if self._quiet:
            return
        elapsed = now - self._started
        done = progress.done
        speed = (done - progress.skipped) / elapsed if elapsed > 0 else 0.0
        left = max(0, self._total - done) / speed if self._total and speed > 0 else None
        where = f"{done}/{self._total}" if self._total else f"{done} {progress.unit}"
        counts = " ".join(f"{name} {n}" for name, n in progress.counts.items())
        parts = [
            where,
            f"{speed:.0f}/s",
            f"ETA {_duration(left)}" if left is not None else "",
            counts,
            f"limit {progress.rate:.0f}/s" if progress.rate is not None else "",
        ]
        if self._live:
            self._console.status(_fit(parts, progress.counts, self._console.width()))
            return
        if not self._every or now < self._due + self._every:
            return
        self._due += self._every * max(1, int((now - self._due) // self._every))
        unit = "" if progress.unit == "lines" or not self._total else f" {progress.unit}"
        fields: dict[str, Any] = {
            "done": done,
            "total": self._total,
            "unit": progress.unit,
            "counts": dict(progress.counts),
            "speed": round(speed, 1),
            "rate": None if progress.rate is None else round(progress.rate, 1),
            "eta_s": None if left is None else round(left, 1),
            "elapsed_s": round(elapsed, 1),
        }
        text = " | ".join(part for part in [where + unit, *parts[1:]] if part)
        self._console.line("progress", f"progress: {text}", **fields)

    def finish(self) -> None:
        """End the live line (it stays on screen) before the summary is written."""
        self._console.keep_status()


def _fit(parts: list[str], counts: Mapping[str, int], width: int) -> str:
    """The live line in at most ``width - 1`` columns: zero counts (but the first) left out,
    the names abbreviated, then the limit and the speed left out, then cut."""
    where, speed, eta, every, limit = parts
    shown = [(name, n) for i, (name, n) in enumerate(counts.items()) if n or not i]
    some = " ".join(f"{name} {n}" for name, n in shown)
    short = " ".join(f"{name[0]} {n}" for name, n in shown)
    for choice in (
        [where, speed, eta, every, limit],
        [where, speed, eta, some, limit],
        [where, speed, eta, short, limit],
        [where, speed, eta, short],
        [where, eta, short],
    ):
        text = " | ".join(part for part in choice if part)
        if len(text) < width:
            return text
    return text[: max(0, width - 1)]


def _duration(seconds: float) -> str:
    """``1h02m03s``, ``2m03s``."""
    whole = round(seconds)
    hours, minutes, secs = whole // 3600, whole // 60 % 60, whole % 60
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


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


def count_lines(stream: IO[bytes]) -> int | None:
    """Lines left in ``stream`` (a last line without a newline counts), read in 1 MiB blocks
    and then sought back; ``None`` for a stream that cannot seek (a pipe, a terminal) or a file
    that is not a regular one (a device)."""
    try:
        if not stream.seekable():
            return None
        real = isinstance(stream, io.BufferedReader | io.FileIO)
        if real and not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            return None
        start = stream.tell()
    except (OSError, ValueError):
        return None
    lines = 0
    last = b"\n"
    while block := stream.read(1 << 20):
        lines += block.count(b"\n")
        last = block[-1:]
    stream.seek(start)
    return lines + (last != b"\n")
