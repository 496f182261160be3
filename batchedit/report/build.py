"""The report of one or more results logs: each line's final outcome folded into a Summary.

The last row for a line number is that line's final outcome, across all the logs given, in
order. The counts are the same fold a run prints (:class:`~batchedit.outcomes.Summary`), over
those final rows; the times and the throttled replies count every row, superseded ones too.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from batchedit.outcomes import Outcome, Status, Summary, outcomes_of
from batchedit.report.logs import ResultsLogs
from batchedit.report.timeline import PAUSE, Timeline

LISTED = 1000
"""Failed and invalid lines a report keeps (the first, by line number)."""


class _LastRows:
    """The position of each line's last row: a flat array while line numbers are dense.

    Line numbers far above the rows seen so far (none, in a log ``run`` wrote) go to a dict, so
    a stray huge number cannot make the array huge.
    """

    def __init__(self) -> None:
        self._flat = array("q")
        self._sparse: dict[int, int] = {}
        self.lines = 0

    def set(self, line: int, ordinal: int) -> None:
        if line in self._sparse:
            self._sparse[line] = ordinal
            return
        if line >= len(self._flat):
            if line > 2 * ordinal + 1024:
                self.lines += 1
                self._sparse[line] = ordinal
                return
            self._flat.extend(array("q", [-1]) * (line + 1 - len(self._flat)))
        self.lines += self._flat[line] < 0
        self._flat[line] = ordinal

    def final(self, rows: int) -> bytearray:
        """A flag per row of the stream: 1 where the row is its line's last."""
        flags = bytearray(rows)
        for ordinal in itertools.chain(self._flat, self._sparse.values()):
            if ordinal >= 0:
                flags[ordinal] = 1
        return flags


@dataclass(frozen=True, slots=True)
class Report:
    """What the results logs say, ready to print or to draw."""

    paths: tuple[Path, ...]
    summary: Summary
    """The fold of each line's final row; ``elapsed`` is the working time (pauses left out)."""
    rows: int
    lines: int
    throttled: int
    """Attempts refused for the rate, over all rows."""
    failed: tuple[Outcome, ...]
    """Lines whose final outcome is failed or invalid, by line number, at most ``LISTED``."""
    torn: tuple[Path, ...]
    """Logs whose torn last row (a crash mid-write) was skipped."""
    stretches: tuple[tuple[float, float], ...]
    """First and last UNIX seconds of each stretch of work."""
    timeline: Timeline

    @property
    def unlisted(self) -> int:
        """Failed and invalid lines (and any other not good) beyond ``failed``."""
        statuses = self.summary.statuses
        return sum(statuses[s.value] for s in Status if not s.good) - len(self.failed)

    @property
    def listing(self) -> str:
        """What the list of lines that are not good is called: ``failed and invalid lines``."""
        *names, last = [s.value for s in self.summary.shown if not s.good]
        return f"{', '.join(names)} and {last} lines"

    def notes(self) -> list[str]:
        """What the reader of the numbers should know: skipped torn rows, rows without a time."""
        notes = [
            f"{path}: skipped its torn last row (a run was killed while writing it)"
            for path in self.torn
        ]
        untimed = self.timeline.untimed
        if untimed:
            which = "no row has" if untimed == self.rows else f"{untimed} of {self.rows} rows have"
            notes.append(
                f"{which} a time (written before batchedit recorded `at`): times are unknown"
                + ("" if untimed == self.rows else " for those; the charts leave them out")
            )
        return notes

    def render(self, listed: int = 20) -> str:
        """The text report: the run summary of the final outcomes, then the first ``listed``
        failed and invalid lines (none when 0)."""
        superseded = self.rows - self.lines
        head = f"{', '.join(map(str, self.paths))}: {self.rows} rows for {self.lines} lines" + (
            f" ({superseded} superseded by a later row for the same line)" if superseded else ""
        )
        lines = [head, self.summary.render()]
        if self.throttled:
            lines.append(f"  throttled replies: {self.throttled} (each may cut the rate)")
        if self.stretches:
            first, last = utc(self.stretches[0][0]), utc(self.stretches[-1][1])
            if first[:10] == last[:10]:
                last = last[11:]
            span = f"  recorded: {first} to {last} UTC"
            if len(self.stretches) > 1:
                span += f" in {len(self.stretches)} stretches (pauses over {PAUSE:g} s not timed)"
            lines.append(span)
        else:
            lines.append("  recorded: times unknown")
        if self.failed and listed:
            lines.append(f"{self.listing} ({len(self.failed) + self.unlisted}):")
            lines += [f"  {describe(outcome)}" for outcome in self.failed[:listed]]
            more = len(self.failed) + self.unlisted - min(listed, len(self.failed))
            if more:
                lines.append(f"  ... and {more} more (see the results log, or --html)")
        return "\n".join(lines)


def utc(at: float) -> str:
    """``at`` (UNIX seconds) as a UTC date and time."""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def describe(outcome: Outcome) -> str:
    """One failed or invalid line on one line of text."""
    text = f"line {outcome.line}: {outcome.status.value}"
    if outcome.code is not None:
        text += f", ErrorCode {outcome.code}"
    if outcome.attempts > 1:
        text += f" after {outcome.attempts} attempts"
    if outcome.info:
        text += f": {' '.join(outcome.info.split())}"
    if outcome.note:
        text += f" ({outcome.note})"
    if outcome.msg_key is not None:
        text += f" [{outcome.from_account} -> {outcome.to_account} {outcome.msg_key}]"
    return text


def build_report(paths: Sequence[Path], *, listed: int = LISTED) -> Report:
    """Read ``paths`` (results logs, in the order they were written) into a :class:`Report`.

    Raises :class:`~batchedit.report.logs.ReportError` naming the file and line of a row that
    is not a results row; a torn last row is skipped and noted instead. Reads each log twice
    (first to find each line's last row, then to fold those), keeping a few bytes per row.
    """
    logs = ResultsLogs(paths)
    timeline = Timeline()
    last = _LastRows()
    rows = throttled = 0
    for outcome in logs.rows():
        timeline.add(outcome)
        last.set(outcome.line, rows)
        throttled += outcome.throttled
        rows += 1
    summary = Summary()
    # A max-heap on the line number (negated) keeps the ``listed`` lowest failed lines.
    worst: list[tuple[int, Outcome]] = []
    for outcome in logs.rows(last.final(rows).__getitem__):
        summary.add(outcome)
        if not outcome.status.good and listed:
            heapq.heappush(worst, (-outcome.line, outcome))
            if len(worst) > listed:
                heapq.heappop(worst)
    summary.outcomes = outcomes_of(summary.statuses)
    stretches = timeline.stretches()
    working = sum(last_at - first_at for first_at, last_at in stretches)
    summary.elapsed = working
    # The achieved rate is over the working time, the way a run measures it over its own.
    summary.first_send, summary.last_send = 0.0, working
    return Report(
        paths=tuple(paths),
        summary=summary,
        rows=rows,
        lines=last.lines,
        throttled=throttled,
        failed=tuple(outcome for _, outcome in sorted(worst, reverse=True)),
        torn=tuple(logs.torn),
        stretches=tuple(stretches),
        timeline=timeline,
    )
