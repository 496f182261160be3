"""A data-migration fixture: conversations mixing every media element, half with JSON
CloudCustomData, and the state a URL move plus a CloudCustomData rename and bump should leave.

The expected content is written here by hand, from the same pieces the seed is made of, never
with batchedit's own rules, so a test comparing the two checks the rules.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from batchedit.emulator import Message, Store
from tests.helpers import ADMIN

OLD = "https://old-cdn.example.com/"
NEW = "https://new-cdn.example.com/"
OTHER = "https://elsewhere.example.org/"
T0 = 1_790_000_000

CCD_STYLES = (
    ('{"tag":"%s","v":1}', '{"label":"%s","v":2}'),
    (
        '{"v": 1, "tag": "%s", "price": 1.50, "name": "caf\\u00e9", "big": 12345678901234567890}',
        '{"v": 2, "label": "%s", "price": 1.50, "name": "caf\\u00e9", "big": 12345678901234567890}',
    ),
    (
        '{"tag": "%s", "meta": {"z": 1e3, "tag": "inner"}}',
        '{"label": "%s", "meta": {"z": 1e3, "tag": "inner"}, "v": 2}',
    ),
    ('{\n  "tag": "%s",\n  "v": 1\n}', '{\n  "label": "%s",\n  "v": 2\n}'),
    ('{"label":"%s","v":2}', '{"label":"%s","v":2}'),
)
"""(seed, expected after ``--ccd-rename tag label --ccd-set v 2``) pairs; the last is already
migrated, so its messages change only where a URL moves."""


def _url(rng: random.Random, name: str) -> str:
    return (OLD if rng.random() < 0.8 else OTHER) + f"{name}/{rng.randrange(10**6)}"


def _element(rng: random.Random, kind: str, n: int) -> dict[str, Any]:
    content: dict[str, Any]
    if kind == "TIMTextElem":
        content = {"Text": f"see {OLD}text/{n} and café"}  # a URL in text: never rewritten
    elif kind == "TIMImageElem":
        content = {
            "UUID": f"img{n}",
            "ImageFormat": 1,
            "ImageInfoArray": [
                {"Type": t, "Size": 100 * t, "Width": 10 * t, "Height": 5.5, "URL": _url(rng, "i")}
                for t in (1, 2, 3)
            ],
        }
    elif kind == "TIMSoundElem":
        content = {
            "Url": _url(rng, "s"),
            "UUID": f"snd{n}",
            "Size": 9,
            "Second": 2,
            "Download_Flag": 2,
        }
    elif kind == "TIMFileElem":
        content = {
            "Url": _url(rng, "f"),
            "UUID": f"file{n}",
            "FileSize": 1024,
            "FileName": "report.pdf",
            "Download_Flag": 2,
        }
    elif kind == "TIMVideoFileElem":
        content = {
            "VideoUrl": _url(rng, "v"),
            "VideoUUID": f"vid{n}",
            "VideoSize": 4096,
            "VideoSecond": 7,
            "VideoFormat": "mp4",
            "VideoDownloadFlag": 2,
            "ThumbUrl": _url(rng, "t"),
            "ThumbUUID": f"th{n}",
            "ThumbSize": 64,
            "ThumbWidth": 320,
            "ThumbHeight": 240,
            "ThumbFormat": "jpg",
            "ThumbDownloadFlag": 2,
        }
    else:
        content = {"Data": f'{{"link":"{OLD}c/{n}"}}', "Desc": "card", "Ext": OLD}
    return {"MsgType": kind, "MsgContent": content}


KINDS = (
    "TIMTextElem",
    "TIMImageElem",
    "TIMSoundElem",
    "TIMFileElem",
    "TIMVideoFileElem",
    "TIMCustomElem",
)


@dataclass(frozen=True, slots=True)
class Seeded:
    """What :func:`seed_migration` put in the store."""

    pairs: list[tuple[str, str]]
    expected_ccd: dict[str, str | None]
    """MsgKey -> the CloudCustomData after the migration."""


def seed_migration(store: Store, conversations: int = 100, per: int = 30) -> Seeded:
    """``conversations * per`` messages between ``m{c}a`` and ``m{c}b``, one to three elements
    each (at most one TIMCustomElem), half with a JSON CloudCustomData in one of
    :data:`CCD_STYLES`."""
    rng = random.Random(8)
    store.import_account(ADMIN)
    pairs = []
    expected: dict[str, str | None] = {}
    n = 0
    for c in range(conversations):
        a, b = f"m{c:03d}a", f"m{c:03d}b"
        store.import_account(a)
        store.import_account(b)
        pairs.append((a, b))
        for i in range(per):
            n += 1
            kinds = [KINDS[(n + i) % len(KINDS)]]
            kinds += rng.sample([k for k in KINDS if k != "TIMCustomElem"], rng.randrange(3))
            body = [_element(rng, kind, n) for kind in kinds]
            sender, recipient = (a, b) if rng.random() < 0.5 else (b, a)
            seed_ccd, after = None, None
            if n % 2:
                style = CCD_STYLES[n % len(CCD_STYLES)]
                seed_ccd, after = style[0] % f"t{n}", style[1] % f"t{n}"
            stamp = T0 + rng.randrange(86400)
            message = store.add(
                Message(sender, recipient, i + 1, rng.randrange(2**32), stamp, body, seed_ccd)
            )
            expected[message.key] = after
    return Seeded(pairs, expected)


def migrated_body(body: list[Any]) -> list[Any]:
    """``body`` with every media URL under :data:`OLD` moved to :data:`NEW`, by hand."""
    body = copy.deepcopy(body)
    for element in body:
        content = element["MsgContent"]
        names = {
            "TIMSoundElem": ["Url"],
            "TIMFileElem": ["Url"],
            "TIMVideoFileElem": ["VideoUrl", "ThumbUrl"],
        }.get(element["MsgType"], [])
        holders = [(content, name) for name in names]
        if element["MsgType"] == "TIMImageElem":
            holders = [(info, "URL") for info in content["ImageInfoArray"]]
        for holder, name in holders:
            if holder[name].startswith(OLD):
                holder[name] = NEW + holder[name][len(OLD) :]
    return body


def exact_state(store: Store) -> Iterator[bytes]:
    """Each message as stored, keys in their own order (not sorted): a byte-exact fingerprint."""
    for message in store.messages():
        yield orjson.dumps(
            [
                message.from_account,
                message.to_account,
                message.key,
                message.body,
                message.cloud_custom_data,
            ]
        )


def expected_migration(store: Store, seeded: Seeded) -> list[bytes]:
    """:func:`exact_state` of ``store`` (the seed) after the migration, built by hand."""
    lines = []
    for message in store.messages():
        lines.append(
            orjson.dumps(
                [
                    message.from_account,
                    message.to_account,
                    message.key,
                    migrated_body(message.body),
                    seeded.expected_ccd[message.key],
                ]
            )
        )
    return lines


def callback_archive(store: Store) -> bytes:
    """The ``C2C.CallbackAfterSendMsg`` payloads of every message in ``store``, as JSONL."""
    lines = []
    for message in store.messages():
        payload: dict[str, Any] = {
            "CallbackCommand": "C2C.CallbackAfterSendMsg",
            "From_Account": message.from_account,
            "To_Account": message.to_account,
            "MsgSeq": message.seq,
            "MsgRandom": message.random,
            "MsgTime": message.time,
            "MsgKey": message.key,
            "OnlineOnlyFlag": 0,
            "MsgBody": message.body,
            "SendMsgResult": 0,
            "ErrorInfo": "send msg succeed",
            "UnreadMsgNum": 1,
        }
        if message.cloud_custom_data is not None:
            payload["CloudCustomData"] = message.cloud_custom_data
        lines.append(orjson.dumps(payload) + b"\n")
    return b"".join(lines)
