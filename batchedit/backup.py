"""Before-images and after-images: what a message held before the run edited it, what the run
wrote, and the undo edits they make.

A backed-up run appends one row per edit to BACKUP, on disk (fsynced) before the edit goes out:
``line``, ``From_Account``, ``To_Account``, ``MsgKey``, ``MsgTimeStamp``, ``MsgBody`` and
``CloudCustomData`` (``null`` when the message had none), and ``After``: the ``MsgBody`` and
``CloudCustomData`` the edit leaves. Undo restores each message to its *first* row, i.e. to its
state before the run, however often the run edited it, and only while the message still reads
as the run left it. Rows without ``After`` (an older batchedit wrote them) still undo, without
that check.
"""

from __future__ import annotations

import hashlib
import tempfile
from array import array
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

from batchedit.im.client import RoamMessage
from batchedit.im.errors import ApiError, ConfigError
from batchedit.im.history import find_message
from batchedit.jsonlog import JsonlAppender, LogDamaged, read_log
from batchedit.outcomes import Status
from batchedit.records import EditRecord, InvalidRecord, MessageId, parse_line
from batchedit.sender import RunState, Sender

FIELDS = ("MsgBody", "CloudCustomData")
"""The fields an edit writes, in the order their differences are named."""


def after_image(record: EditRecord, message: RoamMessage) -> dict[str, Any]:
    """What ``message`` reads once ``record`` is applied (a field the edit leaves out stays)."""
    fields = record.fields
    return {
        "MsgBody": fields.get("MsgBody", message.body),
        "CloudCustomData": fields.get("CloudCustomData", message.cloud_custom_data),
    }


def backup_row(record: EditRecord, message: RoamMessage) -> dict[str, Any]:
    """The backup row for ``message``, about to be edited by ``record``."""
    return {
        "line": record.line,
        "From_Account": message.from_account,
        "To_Account": message.to_account,
        "MsgKey": message.msg_key,
        "MsgTimeStamp": message.msg_timestamp,
        "MsgBody": message.body,
        "CloudCustomData": message.cloud_custom_data,
        "After": after_image(record, message),
    }


def differing_fields(fields: dict[str, Any], message: RoamMessage) -> tuple[str, ...]:
    """The fields ``fields`` (an edit's) sets that ``message`` reads otherwise.

    An empty ``CloudCustomData`` counts as none: the field cannot be deleted, only emptied.
    """
    differ = []
    if "MsgBody" in fields and fields["MsgBody"] != message.body:
        differ.append("MsgBody")
    if "CloudCustomData" in fields and (fields["CloudCustomData"] or None) != (
        message.cloud_custom_data or None
    ):
        differ.append("CloudCustomData")
    return tuple(differ)


def changes_nothing(record: EditRecord, message: RoamMessage) -> bool:
    """Whether ``record`` would leave ``message`` as it is."""
    return not differing_fields(record.fields, message)


def _digest(value: Any) -> int:
    encoded = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return int.from_bytes(hashlib.blake2b(encoded, digest_size=8).digest(), "big")


def image_digests(body: Any, cloud_custom_data: str | None) -> tuple[int, int]:
    """Fingerprints of a message's MsgBody and CloudCustomData (empty counts as none)."""
    return _digest(body), _digest(cloud_custom_data or None)


def _after_problem(image: Any) -> str | None:
    if not isinstance(image, dict):
        return "After: must be an object (what the edit left)"
    if not isinstance(image.get("MsgBody"), list):
        return "After.MsgBody: must be an array"
    if "CloudCustomData" not in image or not isinstance(image["CloudCustomData"], str | None):
        return "After.CloudCustomData: must be a string or null"
    return None


def _whole(value: Any) -> bool:
    return type(value) is int and value >= 0


def _backup_problem(row: Any) -> str | None:
    if not isinstance(row, dict):
        return "not a JSON object"
    for name in ("From_Account", "To_Account", "MsgKey"):
        if not isinstance(row.get(name), str) or not row[name]:
            return f"{name}: must be a non-empty string"
    if not isinstance(row.get("MsgBody"), list):
        return "MsgBody: must be an array (the message's before-image)"
    if "CloudCustomData" not in row or not isinstance(row["CloudCustomData"], str | None):
        return "CloudCustomData: must be a string or null"
    if "After" in row:
        return _after_problem(row["After"])
    return None


def undo_edit(row: dict[str, Any]) -> dict[str, Any]:
    """The edit that restores a backup row's before-image.

    A message that had no CloudCustomData gets an empty one: the API cannot delete the field.
    """
    return {
        "From_Account": row["From_Account"],
        "To_Account": row["To_Account"],
        "MsgKey": row["MsgKey"],
        "MsgBody": row["MsgBody"],
        "CloudCustomData": row["CloudCustomData"] or "",
    }


def restore_problem(row: dict[str, Any]) -> str | None:
    """Why ``undo`` could not send a backup row's before-image back, or ``None``: the undo
    edit is checked as every edit is (element formats, the 8 KB limit)."""
    try:
        item = parse_line(row["line"], orjson.dumps(undo_edit(row)))
    except orjson.JSONEncodeError as exc:
        return f"MsgBody cannot be encoded ({exc})"
    if isinstance(item, InvalidRecord):
        return item.reason.split(": ", 1)[1]
    return None


@dataclass(frozen=True, slots=True)
class AfterImages:
    """What a run left one message as: the last edit's after-image, and any earlier edit's (an
    edit that failed after an earlier one of the same message took)."""

    last: tuple[int, int]
    earlier: frozenset[tuple[int, int]]

    def changed(self, message: RoamMessage) -> tuple[str, ...]:
        """The fields in which ``message`` no longer reads as the run left it (named against
        the last edit); none when it reads as any of the run's edits left it."""
        try:
            now = image_digests(message.body, message.cloud_custom_data)
        except orjson.JSONEncodeError:  # nested too deeply: not what the run wrote
            return FIELDS
        if now == self.last or now in self.earlier:
            return ()
        return tuple(name for name, a, b in zip(FIELDS, now, self.last, strict=True) if a != b)


class UndoPlan:
    """A BACKUP read for ``undo``: ``source``, the edit file that restores every backed-up
    message (one line per message, in order of first appearance, so a resumed undo sees the
    same lines), and the after-images of each, by line. Close it (or use it as a context
    manager) when done.

    Keeps two fingerprints per message in memory (16 bytes), not the images themselves.
    """

    def __init__(self, source: IO[bytes], path: Path) -> None:
        self.source = source
        self.path = path
        self._last = array("Q")
        self._checked = bytearray()
        self._earlier: dict[int, set[tuple[int, int]]] = {}

    @property
    def messages(self) -> int:
        """How many messages (undo lines) there are."""
        return len(self._checked)

    @property
    def unchecked(self) -> int:
        """Messages with a row without an after-image: restored without the conflict check."""
        return self.messages - sum(self._checked)

    def afters(self, line: int) -> AfterImages | None:
        """What the run left line ``line``'s message as, or ``None`` when a row of it has no
        after-image (that message cannot be checked)."""
        index = line - 1
        if not 0 <= index < len(self._checked) or not self._checked[index]:
            return None
        last = (self._last[2 * index], self._last[2 * index + 1])
        return AfterImages(last, frozenset(self._earlier.get(index, ())))

    def add_row(self, index: int | None, after: tuple[int, int] | None) -> None:
        """Note a backup row's after-image (``None``: it has none) for the message at
        ``index``, or for a new message (the next line) when ``index`` is ``None``."""
        if index is None:
            self._last.extend(after or (0, 0))
            self._checked.append(after is not None)
        elif after is None:
            self._checked[index] = 0
        elif self._checked[index]:
            last = (self._last[2 * index], self._last[2 * index + 1])
            self._earlier.setdefault(index, set()).add(last)
            self._last[2 * index], self._last[2 * index + 1] = after

    def close(self) -> None:
        """Let go of the edit file."""
        self.source.close()

    def __enter__(self) -> UndoPlan:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_backup(backup: Path) -> UndoPlan:
    """The :class:`UndoPlan` of ``backup``.

    A torn last row is skipped (its edit was never sent); any other damaged row raises
    :class:`~batchedit.jsonlog.LogDamaged` (a :class:`ConfigError`) naming its line.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115 - the plan closes it
    plan = UndoPlan(spool, backup)
    try:
        seen: dict[MessageId, int] = {}
        for number, raw in read_log(backup, "backup", shared_lock=True):
            try:
                row = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise LogDamaged(backup, number, "not a backup row (not JSON)") from None
            if isinstance(row, dict) and not (
                _whole(row.get("line")) and _whole(row.get("MsgTimeStamp"))
            ):
                # Every version of backup rows has had both; an edit file has neither.
                raise ConfigError(
                    f"{backup}: line {number} is not a backup row (no 'line' and 'MsgTimeStamp' "
                    "whole numbers): undo takes the BACKUP a `batchedit run --backup` wrote, "
                    "not an edit file"
                )
            problem = _backup_problem(row)
            if problem is not None:
                raise LogDamaged(backup, number, f"not a backup row ({problem})")
            after = row.get("After")
            message = (row["From_Account"], row["To_Account"], row["MsgKey"])
            try:
                digests = (
                    None
                    if after is None
                    else image_digests(after["MsgBody"], after["CloudCustomData"])
                )
                index = seen.get(message)
                if index is None:
                    seen[message] = plan.messages
                    spool.write(orjson.dumps(undo_edit(row)) + b"\n")
            except orjson.JSONEncodeError as exc:
                raise LogDamaged(backup, number, f"MsgBody cannot be sent back ({exc})") from None
            plan.add_row(index, digests)
    except BaseException:
        plan.close()
        raise
    spool.seek(0)
    return plan


@dataclass(frozen=True, slots=True)
class Skip:
    """Why an edit is not sent after all: its final status and what to tell the user.

    ``status`` ``None`` means the run stopped during the look-up: no outcome, the line is left
    for ``--resume``.
    """

    status: Status | None
    info: str
    code: int | None = None
    note: str | None = None
    fields: tuple[str, ...] = ()


class BeforeImages:
    """Looks each message up before its edit goes out, and puts its before-image on disk first.

    ``reader`` sends the ``admin_getroammsg`` calls (its own limiter: the reads have their own
    200/s budget); ``log`` is the backup (``None``: the look-up only checks). An edit that would
    change nothing is not sent unless ``send_unchanged``. With ``expect`` (an undo), an edit of
    a message that no longer reads as the run left it is a conflict and is not sent, unless
    ``overrule``. With a ``log``, an edit whose before-image could not be sent back by ``undo``
    is not sent either.
    """

    def __init__(
        self,
        reader: Sender,
        log: JsonlAppender | None,
        state: RunState,
        *,
        send_unchanged: bool = False,
        expect: UndoPlan | None = None,
        overrule: bool = False,
    ) -> None:
        self._reader = reader
        self._log = log
        self._state = state
        self._send_unchanged = send_unchanged
        self._expect = expect
        self._overrule = overrule

    async def prepare(self, record: EditRecord) -> Skip | str | None:
        """Look ``record``'s message up (and back it up): a :class:`Skip` when its edit is not
        to go out; else a note for its outcome, or ``None``."""
        try:
            message = await find_message(
                self._reader.call, record.from_account, record.to_account, record.msg_key
            )
        except ValueError as exc:
            return Skip(Status.FAILED, f"before-image: {exc}; edit not sent")
        except ApiError as exc:
            if self._state.stopping:
                return Skip(None, "")
            return Skip(Status.FAILED, f"before-image not fetched ({exc}); edit not sent", exc.code)
        if message is None:
            return Skip(
                Status.FAILED,
                f"before-image not found: no message {record.msg_key} from "
                f"{record.from_account} to {record.to_account} in its second; edit not sent",
            )
        if message.recalled:
            return Skip(Status.FAILED, "before-image: the message was recalled; edit not sent")
        if not self._send_unchanged and changes_nothing(record, message):
            return Skip(Status.OK, "", 0, "unchanged: the message already reads so; not sent")
        note = None
        afters = self._expect.afters(record.line) if self._expect is not None else None
        changed = afters.changed(message) if afters is not None else ()
        if changed:
            names = " and ".join(changed)
            if not self._overrule:
                return Skip(
                    Status.CONFLICT,
                    f"{names} changed since the run wrote it; not restored, so as not to undo "
                    "that change (--force restores it anyway)",
                    0,
                    fields=changed,
                )
            note = f"forced: {names} had changed since the run wrote it"
        if self._log is None:
            return note
        return await self._back_up(record, message) or note

    async def _back_up(self, record: EditRecord, message: RoamMessage) -> Skip | None:
        row = backup_row(record, message)
        problem = restore_problem(row)
        if problem is not None:
            return Skip(
                Status.FAILED,
                f"before-image could not be sent back by undo ({problem}); edit not sent",
            )
        log = self._log
        if log is None:
            raise RuntimeError("_back_up called without a backup")
        try:
            log.append(row)
            await log.durable()
        except orjson.JSONEncodeError as exc:
            return Skip(Status.FAILED, f"before-image cannot be stored ({exc}); edit not sent")
        except OSError as exc:
            self._state.stop(
                "fatal",
                f"cannot write the backup {log.path} ({exc.strerror}): no edit goes out "
                "without its before-image on disk; make room, then run again with --resume",
            )
            return Skip(None, "")
        return None
