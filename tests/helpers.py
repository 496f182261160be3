"""Constants and small builders shared by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from batchedit.emulator import Message, Store
from batchedit.outcomes import Outcome
from batchedit.progress import Progress
from batchedit.sender import RunControl

SDKAPPID = 1400000000
SECRET = "test-secret-key"
ADMIN = "administrator"


def text_body(text: str) -> list[dict[str, Any]]:
    """A MsgBody of one text element."""
    return [{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}]


def seed_messages(
    store: Store, count: int, users: int = 20, start: int = 1_700_000_000
) -> list[dict[str, str]]:
    """Put ``count`` text messages into an emulator store; return their edit targets."""
    names = [f"u{i:02d}" for i in range(users)]
    for name in names:
        store.import_account(name)
    targets = []
    for i in range(count):
        sender, recipient = names[i % users], names[(i * 7 + 1) % users]
        if sender == recipient:
            recipient = names[(i + 1) % users]
        message = store.add(
            Message(sender, recipient, i, i, start + i // 10, text_body(f"original {i}"))
        )
        targets.append({"From_Account": sender, "To_Account": recipient, "MsgKey": message.key})
    return targets


def write_edits(path: Path, edits: list[dict[str, Any]]) -> Path:
    """Write edit records as JSONL."""
    path.write_bytes(b"".join(orjson.dumps(edit) + b"\n" for edit in edits))
    return path


def read_results(path: Path) -> dict[int, dict[str, Any]]:
    """The final outcome of each line: the last entry for it in a results log."""
    final: dict[int, dict[str, Any]] = {}
    for raw in path.read_bytes().splitlines():
        row = orjson.loads(raw)
        final[row["line"]] = row
    return final


def expected_state(store: Store, edits: list[dict[str, Any]]) -> bytes:
    """What a store dumps after applying ``edits`` in order (last one wins), as the server would."""
    for edit in edits:
        message = store.find(edit["From_Account"], edit["To_Account"], edit["MsgKey"])
        if message is None:
            continue
        if "MsgBody" in edit:
            message.body = edit["MsgBody"]
        if "CloudCustomData" in edit:
            message.cloud_custom_data = edit["CloudCustomData"] or None
    return b"".join(line + b"\n" for line in store.dump_lines())


class InterruptAfter:
    """An observer that presses Ctrl-C (as the CLI's handler does) after ``count`` outcomes;
    progress and notices go unwatched."""

    def __init__(self, count: int, control: RunControl) -> None:
        self._left = count
        self._control = control

    def outcome(self, outcome: Outcome) -> None:
        self._left -= 1
        if self._left == 0:
            self._control.interrupt()

    def tick(self, progress: Progress) -> None:
        """Progress is not watched here."""

    def notice(self, line: str) -> None:
        """Notices (the start line) are not watched here."""
