"""The feeding stage of a run: each entry the reader hands on goes to the worker pool, straight to
the results (an invalid line, a dry run's outcome), or is counted as skipped (lines an earlier
run finished, handed on as one :class:`~batchedit.records.Done` per run of them).

A dry run that sends nothing makes each line's outcome in the reader thread
(:func:`dry_outcome`): one object per line, no record.
"""

from __future__ import annotations

from collections.abc import Callable

from batchedit.edits import outcome_of
from batchedit.outcomes import Outcome, Status, Summary
from batchedit.pool import OrderedPool
from batchedit.reader import LineReader
from batchedit.records import (
    Done,
    EditRecord,
    InvalidRecord,
    Item,
    MessageId,
    check_line,
    parse_line,
)
from batchedit.results import ResumeIndex
from batchedit.sender import RunState

DRY_RUN = "dry run: valid, not sent"
"""The note of a valid line in a dry run that sends nothing."""

Entry = Item | Outcome
"""What the reader makes of a line that is not done: a record, or a dry run's outcome."""


def dry_outcome(number: int, raw: bytes, digest: str) -> Outcome:
    """A dry run's outcome for one line: valid (not sent) or invalid."""
    checked = check_line(number, raw, digest)
    if isinstance(checked, InvalidRecord):
        return outcome_of(checked, Status.INVALID, info=checked.reason)
    fields = checked[1]
    return Outcome(
        number,
        digest,
        Status.OK,
        fields["From_Account"],
        fields["To_Account"],
        fields["MsgKey"],
        note=DRY_RUN,
    )


class Feed:
    """Hands a run's lines on; ``record`` gives a line its final outcome."""

    def __init__(
        self,
        state: RunState,
        summary: Summary,
        index: ResumeIndex | None,
        record: Callable[[Outcome], None],
    ) -> None:
        self._state = state
        self._summary = summary
        self._index = index
        self._record = record

    async def __call__(
        self, reader: LineReader[Entry], pool: OrderedPool[EditRecord] | None
    ) -> None:
        """Hand every line to the pool (none: a dry run that sends nothing, whose lines come as
        outcomes) until the input ends or the run stops. Raises what reading raised."""
        redo: set[MessageId] = set()
        state, record, index = self._state, self._record, self._index
        while (batch := await reader.batch()) is not None:
            for entry in batch:
                if state.stopped is not None:
                    return
                if type(entry) is Outcome:  # a dry run's
                    record(entry)
                elif type(entry) is EditRecord:
                    if pool is None:
                        raise RuntimeError("a record to send in a dry run that sends nothing")
                    if index is not None:
                        redo.add(entry.message)
                    if not await pool.submit(entry):
                        return
                elif isinstance(entry, InvalidRecord):
                    record(outcome_of(entry, Status.INVALID, info=entry.reason))
                elif isinstance(entry, Done):
                    for item in self._skip(entry, redo):
                        if pool is None or state.stopping or not await pool.submit(item):
                            return

    def _skip(self, done: Done, redo: set[MessageId]) -> list[EditRecord]:
        """Count the lines of ``done`` as skipped, but for those to redo all the same: a line
        whose message has an earlier line being redone (the message must still end with the
        last edit of the file). Returns those."""
        again: list[EditRecord] = []
        if redo:
            for number, raw in enumerate(done.raws, done.line):
                item = parse_line(number, raw)
                if isinstance(item, EditRecord) and item.message in redo:
                    again.append(item)
        index = self._index
        invalid = index.invalid_among(done.line, len(done.raws)) if index is not None else 0
        if again and index is not None:
            invalid -= sum(index.invalid_among(item.line, 1) for item in again)
        self._summary.skipped += len(done.raws) - len(again)
        self._summary.skipped_invalid += invalid
        return again
