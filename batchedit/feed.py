"""The feeding stage of a run: each entry the reader hands on goes to the worker pool, straight to
the results (an invalid line, a dry run's outcome), or is counted as skipped (lines an earlier
run finished, handed on as one :class:`~batchedit.records.Done` per run of them).

A dry run that sends nothing makes each line's outcome in the reader thread
(:func:`dry_outcome`): one object per line, no record.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, Final

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


# A dry run makes one Outcome per valid line. The dataclass's frozen __init__ sets each field
# by name through object.__setattr__; setting the slots through their descriptors takes half the
# time, and that is a fifth of a dry run's work per line. The fields a line does not change are
# taken from an Outcome the dataclass made.
_SLOTS: Final[dict[str, Callable[[Outcome, Any], None]]] = {
    f.name: getattr(Outcome, f.name).__set__ for f in dataclasses.fields(Outcome)
}
_PER_LINE: Final = ("line", "digest", "from_account", "to_account", "msg_key", "at")
_DRY_VALID: Final = Outcome(0, "", Status.OK, None, None, None, note=DRY_RUN)
_ALIKE: Final = tuple(
    (set_, getattr(_DRY_VALID, name)) for name, set_ in _SLOTS.items() if name not in _PER_LINE
)
_SET_LINE, _SET_DIGEST, _SET_FROM, _SET_TO, _SET_KEY, _SET_AT = (_SLOTS[n] for n in _PER_LINE)


def dry_outcome(number: int, raw: bytes, digest: str) -> Outcome:
    """A dry run's outcome for one line: valid (not sent) or invalid."""
    checked = check_line(number, raw, digest)
    if isinstance(checked, InvalidRecord):
        return outcome_of(checked, Status.INVALID, info=checked.reason)
    fields = checked[1]
    # As Outcome(number, digest, Status.OK, <the identity>, note=DRY_RUN) makes it.
    outcome: Outcome = object.__new__(Outcome)
    _SET_LINE(outcome, number)
    _SET_DIGEST(outcome, digest)
    _SET_FROM(outcome, fields["From_Account"])
    _SET_TO(outcome, fields["To_Account"])
    _SET_KEY(outcome, fields["MsgKey"])
    _SET_AT(outcome, time.time())
    for set_, value in _ALIKE:
        set_(outcome, value)
    return outcome


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
                    if index is not None and entry.status is Status.OK:
                        redo.add(
                            (entry.from_account or "", entry.to_account or "", entry.msg_key or "")
                        )
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
                        if pool is None:  # a resumed dry run: what the resume would redo
                            record(outcome_of(item, Status.OK, note=DRY_RUN))
                        elif state.stopping or not await pool.submit(item):
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
