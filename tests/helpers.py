"""Constants and small builders shared by the tests."""

from __future__ import annotations

from typing import Any

SDKAPPID = 1400000000
SECRET = "test-secret-key"
ADMIN = "administrator"


def text_body(text: str) -> list[dict[str, Any]]:
    """A MsgBody of one text element."""
    return [{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}]
