"""Before-images: what a message held before the run edited it, and the undo edits they make.

A backed-up run appends one row per edit to BACKUP, on disk (fsynced) before the edit goes out:
``line``, ``From_Account``, ``To_Account``, ``MsgKey``, ``MsgTimeStamp``, ``MsgBody`` and
``CloudCustomData`` (``null`` when the message had none). Undo restores each message to its
*first* row, i.e. to its state before the run, however often the run edited it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from batchedit.im.client import RoamMessage
from batchedit.im.errors import ApiError
from batchedit.im.history import find_message
from batchedit.jsonlog import JsonlAppender, LogDamaged, read_log
from batchedit.outcomes import Status
from batchedit.records import EditRecord, MessageId
from batchedit.sender import RunState, Sender


def before_image(record: EditRecord, message: RoamMessage) -> dict[str, Any]:
    """The backup row for ``message``, about to be edited by ``record``."""
    return {
        "line": record.line,
        "From_Account": message.from_account,
        "To_Account": message.to_account,
        "MsgKey": message.msg_key,
        "MsgTimeStamp": message.msg_timestamp,
        "MsgBody": message.body,
        "CloudCustomData": message.cloud_custom_data,
    }


def changes_nothing(record: EditRecord, message: RoamMessage) -> bool:
    """Whether ``record`` would leave ``message`` as it is.

    An empty ``CloudCustomData`` counts as none: the field cannot be deleted, only emptied.
    """
    fields = record.fields
    if "MsgBody" in fields and fields["MsgBody"] != message.body:
        return False
    return not (
        "CloudCustomData" in fields
        and (fields["CloudCustomData"] or None) != (message.cloud_custom_data or None)
    )


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
    return None


def _first_images(backup: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    seen: set[MessageId] = set()
    for number, raw in read_log(backup, "backup", shared_lock=True):
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise LogDamaged(backup, number, "not a backup row (not JSON)") from None
        problem = _backup_problem(row)
        if problem is not None:
            raise LogDamaged(backup, number, f"not a backup row ({problem})")
        message = (row["From_Account"], row["To_Account"], row["MsgKey"])
        if message not in seen:
            seen.add(message)
            yield number, row


def undo_edits(backup: Path) -> IO[bytes]:
    """The edit file that restores every backed-up message, as a seekable JSONL stream.

    One line per message in order of first appearance, so a resumed undo sees the same lines.
    A message that had no CloudCustomData gets an empty one: the API cannot delete the field.
    A torn last row is skipped (its edit was never sent); any other damaged row raises
    :class:`~batchedit.jsonlog.LogDamaged` (a :class:`ConfigError`) naming its line.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115 - the caller closes it
    try:
        for number, row in _first_images(backup):
            edit = {
                "From_Account": row["From_Account"],
                "To_Account": row["To_Account"],
                "MsgKey": row["MsgKey"],
                "MsgBody": row["MsgBody"],
                "CloudCustomData": row["CloudCustomData"] or "",
            }
            try:
                spool.write(orjson.dumps(edit) + b"\n")
            except orjson.JSONEncodeError as exc:
                raise LogDamaged(backup, number, f"MsgBody cannot be sent back ({exc})") from None
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


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


class BeforeImages:
    """Fetches each message's before-image and puts it on disk before its edit goes out.

    ``reader`` sends the ``admin_getroammsg`` calls (its own limiter: the reads have their own
    200/s budget). Unless ``force``, an edit that would change nothing is not sent.
    """

    def __init__(self, reader: Sender, log: JsonlAppender, state: RunState, force: bool) -> None:
        self._reader = reader
        self._log = log
        self._state = state
        self._force = force

    async def prepare(self, record: EditRecord) -> Skip | None:
        """Back ``record``'s message up; ``None`` when its edit may go out."""
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
        if not self._force and changes_nothing(record, message):
            return Skip(Status.OK, "", 0, "unchanged: the message already reads so; not sent")
        try:
            self._log.append(before_image(record, message))
            await self._log.durable()
        except orjson.JSONEncodeError as exc:
            return Skip(Status.FAILED, f"before-image cannot be stored ({exc}); edit not sent")
        except OSError as exc:
            self._state.stop(
                "fatal",
                f"cannot write the backup {self._log.path} ({exc.strerror}): no edit goes out "
                "without its before-image on disk; make room, then run again with --resume",
            )
            return Skip(None, "")
        return None
