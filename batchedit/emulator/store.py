"""The emulator's accounts and C2C messages in memory: history paging and a JSONL state file."""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from batchedit.im.history import UINT32_MAX

PAGE_BYTES: Final = 13 * 1024
"""Size budget of one ``admin_getroammsg`` answer's MsgList (spec section 3: "currently 13 KB")."""


@dataclass(slots=True)
class Message:
    """One stored C2C message."""

    from_account: str
    to_account: str
    seq: int
    random: int
    time: int
    body: list[Any]
    cloud_custom_data: str | None = None
    flag_bits: int = 0
    hidden_from: str | None = None
    """An account whose view lacks this message (sent with ``SyncOtherMachine`` 2)."""

    @property
    def key(self) -> str:
        """The MsgKey, ``seq_random_time`` (spec section 3, "MsgKey format")."""
        return f"{self.seq}_{self.random}_{self.time}"

    @property
    def order(self) -> tuple[int, int, int]:
        """History order: by time, then MsgSeq within a second (spec section 4)."""
        return (self.time, self.seq, self.random)

    def to_item(self) -> dict[str, Any]:
        """The ``MsgList`` element that ``admin_getroammsg`` returns."""
        item: dict[str, Any] = {
            "From_Account": self.from_account,
            "To_Account": self.to_account,
            "MsgSeq": self.seq,
            "MsgRandom": self.random,
            "MsgTimeStamp": self.time,
            "MsgFlagBits": self.flag_bits,
            "IsPeerRead": 0,
            "MsgKey": self.key,
            "MsgBody": self.body,
        }
        if self.cloud_custom_data is not None:
            item["CloudCustomData"] = self.cloud_custom_data
        return item


def conversation_of(a: str, b: str) -> tuple[str, str]:
    """The order-free identity of the conversation between ``a`` and ``b``."""
    return (a, b) if a <= b else (b, a)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of history as ``admin_getroammsg`` answers it."""

    items: list[dict[str, Any]]
    complete: bool
    last_time: int
    last_key: str


class UnknownKey(LookupError):
    """A LastMsgKey that names no message of the conversation."""


@dataclass(slots=True)
class Store:
    """Accounts and messages. Each conversation's messages stay sorted by history order."""

    accounts: dict[str, dict[str, str]] = field(default_factory=dict)
    conversations: dict[tuple[str, str], list[Message]] = field(default_factory=dict)
    by_key: dict[tuple[tuple[str, str], str], Message] = field(default_factory=dict)

    def import_account(self, user_id: str, nick: str | None = None) -> None:
        """Create ``user_id`` (re-importing updates the nick, creates no duplicate)."""
        profile = self.accounts.setdefault(user_id, {})
        if nick is not None:
            profile["Nick"] = nick

    def add(self, message: Message) -> Message:
        """Store ``message``; its MsgRandom is re-rolled until its MsgKey is unique."""
        conv = conversation_of(message.from_account, message.to_account)
        rng = random.Random(message.key)
        while (conv, message.key) in self.by_key:
            message.random = rng.randrange(UINT32_MAX + 1)
        messages = self.conversations.setdefault(conv, [])
        bisect.insort(messages, message, key=lambda m: m.order)
        self.by_key[(conv, message.key)] = message
        return message

    def find(self, a: str, b: str, key: str) -> Message | None:
        """The message with MsgKey ``key`` in the conversation of ``a`` and ``b``."""
        return self.by_key.get((conversation_of(a, b), key))

    def page(
        self,
        operator: str,
        peer: str,
        min_time: int,
        max_time: int,
        max_cnt: int,
        last_key: str | None,
    ) -> Page:
        """One page, newest first, as spec section 3's pagination rule describes.

        The page holds the newest visible messages in ``[min_time, max_time]`` that come before
        ``last_key`` in history order, at most ``max_cnt`` and about :data:`PAGE_BYTES`, listed
        oldest first; ``last_time``/``last_key`` name its oldest message.
        """
        messages = self.conversations.get(conversation_of(operator, peer), [])
        low = bisect.bisect_left(messages, (min_time, -1, -1), key=lambda m: m.order)
        high = bisect.bisect_left(messages, (max_time + 1, -1, -1), key=lambda m: m.order)
        if last_key is not None:
            anchor = self.find(operator, peer, last_key)
            if anchor is None:
                raise UnknownKey(last_key)
            high = min(high, bisect.bisect_left(messages, anchor.order, key=lambda m: m.order))
        picked: list[Message] = []
        size = 0
        index = high - 1
        while index >= low and len(picked) < max_cnt:
            message = messages[index]
            if message.hidden_from != operator:
                item_size = len(orjson.dumps(message.to_item()))
                if picked and size + item_size > PAGE_BYTES:
                    break
                picked.append(message)
                size += item_size
            index -= 1
        rest = (m for m in messages[low : index + 1] if m.hidden_from != operator)
        complete = next(rest, None) is None
        picked.reverse()
        last = picked[0] if picked else None
        return Page(
            [m.to_item() for m in picked],
            complete,
            last.time if last else 0,
            last.key if last else "",
        )

    def messages(self) -> Iterator[Message]:
        """Every message, conversation by conversation, in history order."""
        for conv in sorted(self.conversations):
            yield from self.conversations[conv]

    def dump_lines(self) -> Iterator[bytes]:
        """The state as JSONL lines: accounts sorted by UserID, then messages in history order.

        Deterministic, so two states compare equal byte for byte exactly when they are equal.
        """
        for user_id in sorted(self.accounts):
            line = {"type": "account", "UserID": user_id, **self.accounts[user_id]}
            yield orjson.dumps(line, option=orjson.OPT_SORT_KEYS)
        for message in self.messages():
            line = {"type": "message", **message.to_item()}
            del line["IsPeerRead"]
            if message.hidden_from is not None:
                line["HiddenFrom"] = message.hidden_from
            yield orjson.dumps(line, option=orjson.OPT_SORT_KEYS)

    def save(self, path: Path) -> None:
        """Write the state to ``path`` (via a temporary file, so a reader never sees half)."""
        partial = path.with_name(path.name + ".partial")
        with partial.open("wb") as out:
            for line in self.dump_lines():
                out.write(line + b"\n")
        partial.replace(path)

    @classmethod
    def load(cls, lines: Iterable[bytes]) -> Store:
        """Read a state written by :meth:`save` (blank lines ignored); ``ValueError`` names the
        first line that is not a state row."""
        store = cls()
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                row = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise ValueError(f"line {number}: not a state row (not JSON)") from None
            try:
                store._load_row(row)
            except ValueError as exc:
                raise ValueError(f"line {number}: not a state row ({exc})") from None
        return store

    def _load_row(self, row: Any) -> None:
        """Add one state row; ``ValueError`` says what is wrong with it."""
        if not isinstance(row, dict):
            raise ValueError("not a JSON object")
        kind = row.get("type")
        if kind == "account":
            self.import_account(_field(row, "UserID", str), _field(row, "Nick", str, None))
        elif kind == "message":
            self.add(
                Message(
                    from_account=_field(row, "From_Account", str),
                    to_account=_field(row, "To_Account", str),
                    seq=_field(row, "MsgSeq", int),
                    random=_field(row, "MsgRandom", int),
                    time=_field(row, "MsgTimeStamp", int),
                    body=_field(row, "MsgBody", list),
                    cloud_custom_data=_field(row, "CloudCustomData", str, None),
                    flag_bits=_field(row, "MsgFlagBits", int, 0),
                    hidden_from=_field(row, "HiddenFrom", str, None),
                )
            )
        else:
            raise ValueError(f"unknown type {kind!r}")


_REQUIRED: Final = object()


def _field(row: dict[str, Any], name: str, kind: type, default: Any = _REQUIRED) -> Any:
    """``row[name]`` if it is a ``kind`` (a JSON bool is no int); ``default`` when absent or
    null, if given."""
    value = row.get(name)
    if value is None and default is not _REQUIRED:
        return default
    if type(value) is not kind:
        raise ValueError(f"{name}: must be {_KINDS[kind]}")
    return value


_KINDS: Final = {str: "a string", int: "a whole number", list: "an array"}
