"""Reading history with ``admin_getroammsg`` (spec section 3): paging, and finding one message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

from batchedit.im.client import ROAM, Caller, RoamMessage, roam_query
from batchedit.im.errors import ApiError

UINT32_MAX: Final = 2**32 - 1
PLAUSIBLE_TIMES: Final = (946_684_800, 4_102_444_800)
"""UNIX seconds of 2000-01-01 and 2100-01-01: the range a MsgKey's time part must fall in."""


async def iter_history(
    call: Caller,
    operator: str,
    peer: str,
    min_time: int,
    max_time: int,
    *,
    max_cnt: int = 100,
) -> AsyncIterator[RoamMessage]:
    """Yield every message of ``operator``'s view of the conversation in ``[min_time, max_time]``.

    ``call`` is ``ImClient.call`` or a wrapper of it (rate limit, retries). Pages come newest
    first, each page's messages oldest first, as the server sends them. Each follow-up request
    keeps ``MinTime`` and ``MaxCnt``, sets ``MaxTime`` to the previous page's ``LastMsgTime`` and
    passes its ``LastMsgKey``, until ``Complete`` is 1. A failed or malformed page (one that
    would page forever, too) raises :class:`ApiError`.
    """
    last_key: str | None = None
    upper = max_time
    while True:
        reply = await call(ROAM, roam_query(operator, peer, min_time, upper, max_cnt, last_key))
        if not reply.ok:
            raise ApiError(ROAM, reply.code, reply.info)
        items = reply.data.get("MsgList", [])
        try:
            if not isinstance(items, list):
                raise ValueError("MsgList is not an array")
            messages = [RoamMessage.from_json(item) for item in items]
            stamp, key = reply.data.get("LastMsgTime"), reply.data.get("LastMsgKey")
            if reply.data.get("Complete", 1) == 1 or not messages:
                last = None
            elif type(stamp) is not int or not isinstance(key, str):
                raise ValueError("an incomplete page without LastMsgTime and LastMsgKey")
            elif stamp > upper or (stamp, key) == (upper, last_key):
                raise ValueError("the next page would not move back in time")
            else:
                last = (stamp, key)
        except ValueError as exc:
            raise ApiError(ROAM, None, f"malformed answer: {exc}") from None
        for message in messages:
            yield message
        if last is None:
            return
        upper, last_key = last


@dataclass(frozen=True, slots=True)
class KeyParts:
    """The three fields of a C2C MsgKey (spec section 3, "MsgKey format")."""

    seq: int
    random: int
    time: int


def parse_msgkey(key: str) -> KeyParts | None:
    """``seq_random_time`` as numbers, or ``None`` when the key does not have that shape.

    Each field must be a decimal uint32 and the time plausible (2000 to 2100): the spec's
    "validated fallback" for recovering a message's second from its key.
    """
    fields = key.split("_")
    if len(fields) != 3 or not all(f.isdigit() and f.isascii() for f in fields):
        return None
    seq, rnd, stamp = (int(f) for f in fields)
    if max(seq, rnd) > UINT32_MAX or not PLAUSIBLE_TIMES[0] <= stamp <= PLAUSIBLE_TIMES[1]:
        return None
    return KeyParts(seq, rnd, stamp)


async def find_message(call: Caller, sender: str, recipient: str, key: str) -> RoamMessage | None:
    """The message ``sender`` sent ``recipient`` with MsgKey ``key``, or ``None`` if not found.

    Looks in the second the key names, paging with ``LastMsgKey`` when many messages share it;
    first in the sender's view, then in the recipient's (a message sent with
    ``SyncOtherMachine`` 2 is missing from the sender's). Raises ``ValueError`` for a key with
    no time part and :class:`ApiError` when a page cannot be fetched.
    """
    parts = parse_msgkey(key)
    if parts is None:
        raise ValueError(f"MsgKey {key!r} is not seq_random_time, so its second is unknown")
    for operator, peer in ((sender, recipient), (recipient, sender)):
        async for message in iter_history(call, operator, peer, parts.time, parts.time):
            if message.msg_key == key and message.from_account == sender:
                return message
    return None
