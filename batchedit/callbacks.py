"""Messages from an archive of ``C2C.CallbackAfterSendMsg`` payloads, for plans with no reads.

Teams that moderate keep the bodies of the after-send callback, one JSON object a line: each
holds the message's ``MsgKey``, ``From_Account``, ``To_Account``, ``MsgSeq``, ``MsgRandom``,
``MsgTime`` (UNIX seconds), ``MsgBody`` and ``CloudCustomData`` (when set), as sent. An archive
may be stale: a message may have been edited or recalled since its callback was kept, which a
run with ``--backup`` finds out (it reads each message before editing it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from batchedit.im.client import RoamMessage
from batchedit.records import MAX_LINE_BYTES, TOO_LONG, read_object

AFTER_SEND: Final = "C2C.CallbackAfterSendMsg"
"""The callback whose payloads an archive holds (a payload without ``CallbackCommand`` is taken
as one, since many archives keep the body alone)."""


@dataclass(frozen=True, slots=True)
class BadLine:
    """An archive line that is no callback payload; ``reason`` starts with ``archive line N:``."""

    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """A payload that names no message to edit, and which kind it is (counted, not reported)."""

    kind: str


def _whole(payload: dict[str, Any], name: str) -> int | str:
    value = payload.get(name)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64:
        return value
    return f"{name}: missing or not a whole number"


def _message(payload: dict[str, Any]) -> RoamMessage | str:
    for name in ("From_Account", "To_Account", "MsgKey"):
        if not isinstance(payload.get(name), str) or not payload[name]:
            return f"{name}: missing or not a non-empty string"
    if not isinstance(payload.get("MsgBody"), list):
        return "MsgBody: missing or not an array"
    ccd = payload.get("CloudCustomData")
    if ccd is not None and not isinstance(ccd, str):
        return "CloudCustomData: not a string"
    numbers = [_whole(payload, name) for name in ("MsgSeq", "MsgRandom", "MsgTime")]
    for number in numbers:
        if isinstance(number, str):
            return number
    seq, rnd, stamp = (int(n) for n in numbers)
    return RoamMessage(
        from_account=payload["From_Account"],
        to_account=payload["To_Account"],
        msg_seq=seq,
        msg_random=rnd,
        msg_timestamp=stamp,
        msg_key=payload["MsgKey"],
        flag_bits=0,
        body=payload["MsgBody"],
        cloud_custom_data=ccd,
        is_peer_read=0,
    )


def parse_callback(number: int, raw: bytes) -> RoamMessage | BadLine | Skipped | None:
    """One archive line: its message, why it is not one, or ``None`` for a blank line.

    Payloads of other callbacks are :class:`Skipped` by command; so are messages that were
    never stored: not delivered (``SendMsgResult`` not 0) or online-only (``OnlineOnlyFlag``).
    """

    def bad(reason: str) -> BadLine:
        return BadLine(number, f"archive line {number}: {reason}")

    if raw is TOO_LONG:
        return bad(f"longer than {MAX_LINE_BYTES} bytes, not read")
    if not raw.strip():
        return None
    payload = read_object(raw)
    if isinstance(payload, str):
        return bad(payload)
    command = payload.get("CallbackCommand", AFTER_SEND)
    if not isinstance(command, str):
        return bad("CallbackCommand: not a string")
    if command != AFTER_SEND:
        return Skipped(f"{command[:60]} payloads")
    result = payload.get("SendMsgResult", 0)
    if result != 0:
        return Skipped("messages not delivered (SendMsgResult not 0)")
    if payload.get("OnlineOnlyFlag", 0) == 1:
        return Skipped("online-only messages (never stored)")
    message = _message(payload)
    return bad(message) if isinstance(message, str) else message
