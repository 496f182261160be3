"""The emulated APIs: each takes the parsed JSON body and returns the answer's fields.

An API error is raised as :class:`Refusal` with the code the real service answers (spec sections
2 to 6); the HTTP layer turns it into the envelope. Only messages inside the roaming window
(``retention_days``, spec section 3) can be read, recalled or modified.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from batchedit.emulator.msgformat import body_problem
from batchedit.emulator.store import Message, Store, UnknownKey
from batchedit.im.history import UINT32_MAX

_MSG_KEY: Final = re.compile(r"([0-9]{1,10})_([0-9]{1,10})_([0-9]{1,10})", re.ASCII)

Answer = dict[str, Any]


class Refusal(Exception):
    """An API-level error: ``ErrorCode`` and ``ErrorInfo``."""

    def __init__(self, code: int, info: str) -> None:
        super().__init__(code, info)
        self.code = code
        self.info = info


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_uint32(value: object) -> bool:
    return _is_int(value) and 0 <= value <= UINT32_MAX  # type: ignore[operator]


def _well_formed_key(key: str) -> bool:
    """Whether ``key`` has the ``seq_random_time`` shape, each part a uint32 (spec section 3)."""
    match = _MSG_KEY.fullmatch(key)
    return match is not None and all(int(part) <= UINT32_MAX for part in match.groups())


@dataclass(slots=True)
class Apis:
    """The emulated APIs over one :class:`Store`."""

    store: Store
    admin: str
    unknown_msgkey_code: int = 20026
    clock: Callable[[], float] = time.time
    retention_days: float | None = 7.0
    """The roaming window; ``None`` keeps every message visible."""
    edit_recalled: Literal["allow", "refuse"] = "allow"
    """Whether modify_c2c_msg may edit a recalled message (unverified; refused with 20023)."""

    def table(self) -> Mapping[str, Callable[[dict[str, Any]], Answer]]:
        """``service/command`` → handler."""
        return {
            "openim/modify_c2c_msg": self.modify_c2c_msg,
            "openim/admin_getroammsg": self.admin_getroammsg,
            "openim/sendmsg": self.sendmsg,
            "openim/admin_msgwithdraw": self.admin_msgwithdraw,
            "im_open_login_svc/account_import": self.account_import,
            "im_open_login_svc/multiaccount_import": self.multiaccount_import,
            "im_open_login_svc/account_check": self.account_check,
        }

    def _sender(self, body: dict[str, Any], code: int) -> str:
        sender = body.get("From_Account")
        if not isinstance(sender, str) or not sender:
            raise Refusal(code, "From_Account is missing or not a String")
        if sender not in self.store.accounts:
            unknown = 20003 if code == 20001 else 90008
            raise Refusal(unknown, f"From_Account {sender!r} not imported")
        return sender

    def _recipient(self, body: dict[str, Any]) -> str:
        recipient = body.get("To_Account")
        if not isinstance(recipient, str) or not recipient:
            raise Refusal(90003, "To_Account is missing or not a String")
        if recipient not in self.store.accounts:
            raise Refusal(90012, f"To_Account {recipient!r} not imported")
        return recipient

    def _oldest_visible(self) -> int:
        """The earliest MsgTimeStamp inside the roaming window."""
        if self.retention_days is None:
            return -(2**63)
        return math.ceil(self.clock() - self.retention_days * 86400)

    def _visible(self, sender: str, recipient: str, key: str) -> Message | None:
        """The message ``key`` sent by ``sender`` to ``recipient``, if inside the window."""
        message = self.store.find(sender, recipient, key)
        if message is None or message.from_account != sender:
            return None
        return message if message.time >= self._oldest_visible() else None

    @staticmethod
    def _check_body(body: Any) -> None:
        problem = body_problem(body)
        if problem is not None:
            raise Refusal(*problem)

    def modify_c2c_msg(self, body: dict[str, Any]) -> Answer:
        """Overwrite MsgBody and/or CloudCustomData of an existing message (spec section 2)."""
        sender = self._sender(body, 20001)
        recipient = self._recipient(body)
        key = body.get("MsgKey")
        if not isinstance(key, str):
            raise Refusal(20001, "MsgKey is missing or not a String")
        if not _well_formed_key(key):
            raise Refusal(90054, f"MsgKey {key!r} is not of the form seq_random_time")
        has_body = "MsgBody" in body
        has_ccd = "CloudCustomData" in body
        if not (has_body or has_ccd):
            raise Refusal(20001, "nothing to modify: give MsgBody and/or CloudCustomData")
        if has_body:
            self._check_body(body["MsgBody"])
        ccd = body.get("CloudCustomData")
        if has_ccd and not isinstance(ccd, str):
            raise Refusal(20001, "CloudCustomData must be a String")
        message = self._visible(sender, recipient, key)
        if message is None:
            raise Refusal(self.unknown_msgkey_code, f"message {key!r} does not exist")
        if message.flag_bits == 8 and self.edit_recalled == "refuse":
            raise Refusal(20023, f"message {key!r} was recalled")
        if has_body:
            message.body = body["MsgBody"]
        if has_ccd:
            # The field cannot be deleted; an empty string reads back as no CloudCustomData.
            message.cloud_custom_data = ccd or None
        return {"ErrorInfo": "succeed"}

    def admin_getroammsg(self, body: dict[str, Any]) -> Answer:
        """One page of a conversation (spec section 3); accepts the legacy field names too."""
        operator = body.get("Operator_Account", body.get("From_Account"))
        peer = body.get("Peer_Account", body.get("To_Account"))
        if not isinstance(operator, str) or operator not in self.store.accounts:
            raise Refusal(90008, "Operator_Account is missing or not imported")
        if not isinstance(peer, str) or peer not in self.store.accounts:
            raise Refusal(90003, "Peer_Account is missing or not imported")
        numbers = [body.get(name) for name in ("MaxCnt", "MinTime", "MaxTime")]
        if not all(_is_int(n) for n in numbers) or numbers[0] <= 0:  # type: ignore[operator]
            raise Refusal(90001, "MaxCnt (> 0), MinTime and MaxTime must be integers")
        max_cnt, min_time, max_time = (int(n) for n in numbers)  # type: ignore[arg-type]
        if max_time > UINT32_MAX:
            raise Refusal(90001, "MaxTime is above the uint32 range")
        min_time = max(min_time, self._oldest_visible())
        last_key = body.get("LastMsgKey")
        if last_key is not None and not isinstance(last_key, str):
            raise Refusal(90001, "LastMsgKey must be a String")
        try:
            page = self.store.page(operator, peer, min_time, max_time, max_cnt, last_key or None)
        except UnknownKey:
            info = f"LastMsgKey {last_key!r} is not a message of this conversation"
            raise Refusal(90054, info) from None
        return {
            "Complete": int(page.complete),
            "MsgCnt": len(page.items),
            "LastMsgTime": page.last_time,
            "LastMsgKey": page.last_key,
            "MsgList": page.items,
        }

    def sendmsg(self, body: dict[str, Any]) -> Answer:
        """Store a message and answer its MsgTime and MsgKey (spec section 4).

        ``MsgTimeStamp`` (listed in older request models) places the message at that time, which
        is how tests build history with many messages in one second.
        """
        if "From_Account" not in body:
            body = {**body, "From_Account": self.admin}
        sender = self._sender(body, 90008)
        recipient = self._recipient(body)
        msg_random = body.get("MsgRandom")
        if not _is_uint32(msg_random):
            raise Refusal(90005, "MsgRandom is missing or not a uint32")
        seq = body.get("MsgSeq", random.randrange(UINT32_MAX + 1))
        if not _is_uint32(seq):
            raise Refusal(20001, "MsgSeq must be a uint32")
        stamp = body.get("MsgTimeStamp", int(self.clock()))
        if not _is_uint32(stamp):
            raise Refusal(90006, "MsgTimeStamp must be a uint32 of UNIX seconds")
        sync = body.get("SyncOtherMachine")
        if sync is not None and not _is_int(sync):
            raise Refusal(90031, "SyncOtherMachine must be an integer")
        self._check_body(body.get("MsgBody"))
        ccd = body.get("CloudCustomData")
        if ccd is not None and not isinstance(ccd, str):
            raise Refusal(20001, "CloudCustomData must be a String")
        message = self.store.add(
            Message(
                from_account=sender,
                to_account=recipient,
                seq=seq,
                random=msg_random,  # type: ignore[arg-type]
                time=stamp,
                body=body["MsgBody"],
                cloud_custom_data=ccd or None,
                hidden_from=sender if sync == 2 else None,
            )
        )
        return {"MsgTime": message.time, "MsgKey": message.key}

    def admin_msgwithdraw(self, body: dict[str, Any]) -> Answer:
        """Recall a message: it stays in history with MsgFlagBits 8 (spec section 5)."""
        sender = self._sender(body, 90008)
        recipient = self._recipient(body)
        key = body.get("MsgKey")
        if not isinstance(key, str) or not _well_formed_key(key):
            raise Refusal(90054, "MsgKey is missing or invalid")
        message = self._visible(sender, recipient, key)
        if message is None:
            raise Refusal(20022, f"message {key!r} does not exist")
        if message.flag_bits == 8:
            raise Refusal(20023, f"message {key!r} was already recalled")
        message.flag_bits = 8
        return {}

    def account_import(self, body: dict[str, Any]) -> Answer:
        """Create one account (spec section 6)."""
        user_id = body.get("UserID")
        if not isinstance(user_id, str) or not user_id or len(user_id.encode()) > 32:
            raise Refusal(70402, "UserID must be a String of 1 to 32 bytes")
        nick = body.get("Nick")
        self.store.import_account(user_id, nick if isinstance(nick, str) else None)
        return {}

    def multiaccount_import(self, body: dict[str, Any]) -> Answer:
        """Create up to 100 accounts; both the old and the new body shapes (spec section 6)."""
        listed = body.get("AccountList", body.get("Accounts"))
        if not isinstance(listed, list) or not 0 < len(listed) <= 100:
            raise Refusal(70206, "give 1 to 100 accounts in AccountList")
        failed = []
        for entry in listed:
            user_id = entry.get("UserID") if isinstance(entry, dict) else entry
            if isinstance(user_id, str) and user_id and len(user_id.encode()) <= 32:
                self.store.import_account(user_id)
            else:
                failed.append(user_id)
        return {"FailAccounts": failed}

    def account_check(self, body: dict[str, Any]) -> Answer:
        """Which of up to 100 accounts exist (spec section 6)."""
        items = body.get("CheckItem")
        if not isinstance(items, list) or not 0 < len(items) <= 100:
            raise Refusal(70206, "give 1 to 100 items in CheckItem")
        results = []
        for item in items:
            user_id = item.get("UserID") if isinstance(item, dict) else None
            imported = isinstance(user_id, str) and user_id in self.store.accounts
            results.append(
                {
                    "UserID": user_id,
                    "ResultCode": 0,
                    "ResultInfo": "",
                    "AccountStatus": "Imported" if imported else "NotImported",
                }
            )
        return {"ResultItem": results}
