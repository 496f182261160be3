"""What a person sees during a run: the first invalid lines, and a live progress line."""

from __future__ import annotations

import time
from typing import TextIO

from batchedit.outcomes import Outcome, Status, Summary

SHOWN_INVALID = 20
"""How many invalid lines are printed; the rest are only in the results log."""


class ConsoleObserver:
    """Prints to ``stream`` (stderr): invalid lines as they come, and, on a terminal, a progress
    line (done/total, rate, ETA, ok/failed/retrying) rewritten in place twice a second.
    """

    def __init__(self, stream: TextIO, total: int | None, *, live: bool, quiet: bool) -> None:
        self._stream = stream
        self._total = total
        self._live = live and not quiet
        self._quiet = quiet
        self._invalid = 0
        self._started = time.monotonic()
        self._drawn = False

    def outcome(self, outcome: Outcome) -> None:
        """Print an invalid line's reason (the first :data:`SHOWN_INVALID` of them)."""
        if outcome.status is not Status.INVALID or self._quiet:
            return
        self._invalid += 1
        if self._invalid <= SHOWN_INVALID:
            self._clear()
            print(f"invalid: {outcome.info}", file=self._stream)
        elif self._invalid == SHOWN_INVALID + 1:
            self._clear()
            print("invalid: ... more invalid lines; see the results log", file=self._stream)

    def notice(self, line: str) -> None:
        """Print a line before the run starts (the start line, a warning), even when quiet."""
        print(line, file=self._stream)

    def tick(self, summary: Summary, rate: float | None, retrying: int) -> None:
        """Redraw the progress line."""
        if not self._live:
            return
        done = summary.total + summary.skipped
        elapsed = time.monotonic() - self._started
        speed = summary.total / elapsed if elapsed > 0 else 0.0
        parts = [f"{done}/{self._total}" if self._total else f"{done} lines"]
        parts.append(f"{speed:.0f}/s")
        if self._total and speed > 0:
            left = max(0, self._total - done) / speed
            parts.append(f"ETA {int(left // 60)}m{int(left % 60):02d}s")
        parts.append(
            f"ok {summary.statuses['ok']} failed {summary.statuses['failed']} "
            f"invalid {summary.statuses['invalid']} retrying {retrying}"
        )
        if rate is not None:
            parts.append(f"limit {rate:.0f}/s")
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


def count_lines(path: str) -> int:
    """Lines in a file (a last line without a newline counts), read in 1 MiB blocks."""
    lines = 0
    last = b"\n"
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")
