"""What a run does with each valid line: the protocol every kind of run plugs into, and the
edit that ``run`` and ``undo`` make.

:func:`~batchedit.runner.run_batch` reads, checks, orders and records the lines; what it does
with each valid one is its :class:`LineKind`'s action. :class:`Edits` sends the line as a
``modify_c2c_msg`` edit (``run``; ``undo`` with the :class:`~batchedit.backup.UndoPlan` of its
BACKUP); :class:`~batchedit.verify.ReadBack` reads the message back (``verify``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Any, Protocol

from batchedit.backup import BeforeImages, Skip, UndoPlan
from batchedit.im.client import MODIFY, ROAM
from batchedit.jsonlog import JsonlAppender
from batchedit.outcomes import EDIT_OUTCOMES, UNDO_OUTCOMES, Outcome, Outcomes, Status, Summary
from batchedit.ratelimit import Limiter
from batchedit.records import EditRecord, Item
from batchedit.sender import RunState, Sender, Track
from batchedit.wiring import Senders

UNCERTAIN = "uncertain: an attempt timed out, and the server may still have carried it out"
"""The note of a line whose attempts included a timeout."""

UNCHECKED = "no conflict check: its backup rows have no after-image (an older batchedit wrote them)"
"""The note of an undo line whose message could not be checked against what the run wrote."""

Action = Callable[[EditRecord, Track], Awaitable[Outcome | None]]
"""What a run does with one valid line (its attempts go to the :class:`Track`): the line's
final outcome, or ``None`` when it has none yet (the run stopped; or, for ``verify``, a later
line of the same message decides it)."""


@dataclass(frozen=True, slots=True)
class Wiring:
    """What a line action works with, once the run has opened it."""

    senders: Senders
    state: RunState
    summary: Summary
    backup: JsonlAppender | None
    """The run's BACKUP, open and locked (``None``: no backup)."""
    force: bool
    """The run's ``force`` (:attr:`~batchedit.runner.RunConfig.force`)."""
    dry_run: bool
    """A dry run: no edit may be sent."""
    notice: Callable[[str], None]
    """Tells the user something before the work starts (stderr)."""


class LineKind(Protocol):
    """A kind of run: the outcomes its lines get, and what it does with each valid line."""

    @property
    def outcomes(self) -> Outcomes:
        """The outcomes this kind gives its lines."""

    @property
    def reads_on_dry_run(self) -> bool:
        """Whether a dry run still reads (so keeps the credentials it is given)."""

    async def open(self, source: IO[bytes], wiring: Wiring) -> tuple[Action, Limiter | None]:
        """The action, and the limiter whose rate the progress line and summary show; called
        once the logs are open, before the first line is read from ``source``."""


def outcome_of(item: Item, status: Status, **fields: Any) -> Outcome:
    """``item``'s outcome."""
    return Outcome(
        item.line, item.digest, status, item.from_account, item.to_account, item.msg_key, **fields
    )


def notes(*parts: str | None) -> str | None:
    """The notes given, joined; ``None`` if there are none."""
    return "; ".join(part for part in parts if part) or None


class Edits:
    """``run`` and ``undo``: each valid line is sent as a ``modify_c2c_msg`` edit.

    With a backup, each message is looked up first and its before-image put on disk; with
    ``undo`` (an :class:`~batchedit.backup.UndoPlan`), each message is looked up first and its
    edit held back as a conflict when the message no longer reads as the run left it, unless
    the run's ``force``. ``force`` without ``undo`` sends edits that change nothing, too. A
    dry run sends no edit: an undo's still looks each message up, and says what it would do.
    """

    def __init__(self, undo: UndoPlan | None = None) -> None:
        self._undo = undo
        self._force = False
        self._dry_run = False
        self._sender: Sender | None = None
        self._before: BeforeImages | None = None
        self._summary: Summary | None = None

    @property
    def outcomes(self) -> Outcomes:
        """``run``'s outcomes, or ``undo``'s (with ``conflict``)."""
        return EDIT_OUTCOMES if self._undo is None else UNDO_OUTCOMES

    @property
    def reads_on_dry_run(self) -> bool:
        """An undo's dry run reads each message, to find the conflicts."""
        return self._undo is not None

    async def open(self, source: IO[bytes], wiring: Wiring) -> tuple[Action, Limiter | None]:
        """The edit action; the limiter of the edits."""
        self._summary = wiring.summary
        self._force, self._dry_run = wiring.force, wiring.dry_run
        self._sender = wiring.senders.sender(MODIFY, wiring.summary.sent_at)
        undo = self._undo
        if undo is not None and undo.unchecked and not self._force:
            wiring.notice(
                f"{undo.path}: {undo.unchecked} of its {undo.messages} messages have rows "
                "without an after-image (an older batchedit wrote them): those are restored "
                "without the conflict check"
            )
        # Forced too: the outcome then says which restores went over a change.
        checks = undo is not None and undo.unchecked < undo.messages
        if wiring.backup is not None or checks:
            # Reads have their own 200/s budget (a per-API limit), hence their own limiter.
            self._before = BeforeImages(
                wiring.senders.sender(ROAM, self._count_read),
                wiring.backup,
                wiring.state,
                send_unchanged=self._force and undo is None,
                expect=undo,
                overrule=self._force,
            )
        return self._edit, self._sender.limiter

    def _count_read(self, _: float) -> None:
        if self._summary is not None:
            self._summary.reads += 1

    def _unchecked(self, item: EditRecord) -> str | None:
        if self._undo is None or self._force or self._undo.afters(item.line) is not None:
            return None
        return UNCHECKED

    async def _edit(self, item: EditRecord, track: Track) -> Outcome | None:
        """Send one edit (after its look-up, if any); its final outcome."""
        note = None
        if self._before is not None:
            verdict = await self._before.prepare(item)
            if isinstance(verdict, Skip):
                if verdict.status is None:
                    return None
                fields = {"code": verdict.code, "info": verdict.info, "note": verdict.note}
                return outcome_of(item, verdict.status, **fields, fields=verdict.fields)
            note = verdict
        if self._dry_run:
            dry = "dry run: would be restored, not sent"
            return outcome_of(item, Status.OK, note=notes(dry, note, self._unchecked(item)))
        if self._sender is None:
            raise RuntimeError("Edits used before open()")
        retry_note = await self._sender.send(MODIFY, item.body, track, item.message)
        reply = track.last
        if reply is None:
            return None
        return outcome_of(
            item,
            Status.OK if reply.ok else Status.FAILED,
            code=reply.code,
            info=reply.info,
            latency=reply.latency,
            **track.counts(),
            note=notes(
                UNCERTAIN if track.timed_out else None, retry_note, note, self._unchecked(item)
            ),
        )
