"""Demo data: six days of plausible one-to-one chats, and the edit targets that point at them.

Six days, not seven: the whole history stays inside the default 7-day roaming window for a day
after it was made.
"""

from __future__ import annotations

import random
from typing import Any

from batchedit.emulator.store import Message, Store
from batchedit.im.history import UINT32_MAX

_PHRASES = (
    "see you at the station at {h}",
    "did you get the report?",
    "call me on 555-01{n:02d} after lunch",
    "the invoice number is INV-{n:04d}",
    "lol that was great",
    "buy cheap followers at spam.example now",
    "meeting moved to {h}",
    "thanks, talk tomorrow",
    "my email is user{n}@mail.example",
    "ok",
)


def seed_demo(store: Store, count: int, seed: int, now: int) -> list[dict[str, Any]]:
    """Add ``count`` messages among a few hundred users over the 6 days before ``now``.

    Returns one edit target per message: ``From_Account``, ``To_Account``, ``MsgKey`` (plus the
    message's ``Text``, handy for building a sample batch). Same ``seed``, same data.
    """
    rng = random.Random(seed)
    users = [f"user{i:03d}" for i in range(max(2, min(300, count // 5 + 2)))]
    for user in users:
        store.import_account(user)
    targets = []
    for _ in range(count):
        sender, recipient = rng.sample(users, 2)
        text = rng.choice(_PHRASES).format(h=f"{rng.randrange(8, 20)}:00", n=rng.randrange(100))
        message = store.add(
            Message(
                from_account=sender,
                to_account=recipient,
                seq=rng.randrange(1, 100_000),
                random=rng.randrange(UINT32_MAX + 1),
                time=now - rng.randrange(6 * 86400),
                body=[{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}],
                cloud_custom_data=rng.choice([None, '{"v":1}']),
            )
        )
        targets.append(
            {
                "From_Account": sender,
                "To_Account": recipient,
                "MsgKey": message.key,
                "Text": text,
            }
        )
    return targets
