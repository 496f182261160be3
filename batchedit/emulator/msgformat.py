"""The emulator's own reading of the message element formats (spec section 7).

Written from the spec, not shared with the client's validator: where the client invents or
forgets a rule, a test that drives one against the other shows it.

Each check answers ``(code, reason)`` for the first problem, or ``None``: 90007 a MsgBody that
is not an Array, 90002 a MsgBody or element that does not follow the message format at all
(empty, not an object, no ``MsgType`` String or ``MsgContent`` object), 90010 an element that
does not follow its MsgType's format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

Check = Callable[[Any], bool]
Problem = tuple[int, str]


def _string(value: Any) -> bool:
    return isinstance(value, str)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _flag(value: Any) -> bool:
    """A download flag: a Number that must be 2 (spec: "Download_Flag (Number, must be 2)")."""
    return _number(value) and value == 2


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _array(value: Any) -> bool:
    return isinstance(value, list)


def _image_infos(value: Any) -> bool:
    """``ImageInfoArray``: objects each with a String URL and Number Width and Height (for REST
    sends), and Number Type and Size when given."""
    if not isinstance(value, list) or not value:
        return False
    for info in value:
        if not isinstance(info, dict):
            return False
        if not (_string(info.get("URL")) and _number(info.get("Width"))):
            return False
        if not _number(info.get("Height")):
            return False
        if any(name in info and not _number(info[name]) for name in ("Type", "Size")):
            return False
    return True


# MsgType → (required fields, optional fields), each field name → its check.
FORMATS: Final[Mapping[str, tuple[Mapping[str, Check], Mapping[str, Check]]]] = {
    "TIMTextElem": ({"Text": _string}, {}),
    "TIMLocationElem": ({"Desc": _string, "Latitude": _number, "Longitude": _number}, {}),
    "TIMFaceElem": ({"Index": _number, "Data": _string}, {}),
    "TIMCustomElem": ({"Data": _string}, {"Desc": _string, "Ext": _string, "Sound": _string}),
    "TIMSoundElem": (
        {"UUID": _string},
        {"Url": _string, "Download_Flag": _flag, "Size": _number, "Second": _number},
    ),
    "TIMImageElem": (
        {"UUID": _string, "ImageInfoArray": _image_infos},
        {"ImageFormat": _number},
    ),
    "TIMFileElem": (
        {"Url": _string, "UUID": _string, "Download_Flag": _flag},
        {"FileSize": _number, "FileName": _string},
    ),
    "TIMVideoFileElem": (
        {
            "VideoUrl": _string,
            "VideoUUID": _string,
            "ThumbUrl": _string,
            "ThumbUUID": _string,
            "ThumbWidth": _number,
            "ThumbHeight": _number,
            "VideoDownloadFlag": _flag,
            "ThumbDownloadFlag": _flag,
        },
        {
            "VideoSize": _number,
            "VideoSecond": _number,
            "VideoFormat": _string,
            "ThumbSize": _number,
            "ThumbFormat": _string,
        },
    ),
    "TIMRelayElem": (
        {"Title": _string, "MsgNum": _integer, "CompatibleText": _string},
        {"AbstractList": _strings, "MsgList": _array, "JsonMsgKey": _string},
    ),
}
"""Fields not listed here pass unchecked: the spec names no rule for them."""


def _element_problem(where: str, msg_type: str, content: dict[str, Any]) -> Problem | None:
    required, optional = FORMATS[msg_type]
    for name, check in required.items():
        if name not in content:
            return 90010, f"{where}: {msg_type} needs MsgContent.{name}"
        if not check(content[name]):
            return 90010, f"{where}: MsgContent.{name} is not valid for {msg_type}"
    for name, check in optional.items():
        if name in content and not check(content[name]):
            return 90010, f"{where}: MsgContent.{name} is not valid for {msg_type}"
    if msg_type == "TIMRelayElem" and "MsgList" not in content and "JsonMsgKey" not in content:
        return 90010, f"{where}: TIMRelayElem needs MsgList or JsonMsgKey"
    if msg_type == "TIMSoundElem" and not (
        {"Url", "Download_Flag"} <= content.keys() or {"Size", "Second"} <= content.keys()
    ):
        # The spec: "for REST sends: Url, UUID, Download_Flag required; old 2.x/3.x SDK form
        # has only UUID/Size/Second". Such elements are stored, so sending one back is taken.
        return 90010, f"{where}: TIMSoundElem needs Url and Download_Flag (or Size and Second)"
    return None


def body_problem(body: Any) -> Problem | None:
    """The first reason the service refuses ``body`` as a MsgBody, or ``None``."""
    if not isinstance(body, list):
        return 90007, "MsgBody is not an Array"
    if not body:
        return 90002, "MsgBody holds no element"
    custom = 0
    for index, element in enumerate(body):
        where = f"MsgBody[{index}]"
        if not isinstance(element, dict):
            return 90002, f"{where} is not a message element"
        msg_type, content = element.get("MsgType"), element.get("MsgContent")
        if not isinstance(msg_type, str) or not isinstance(content, dict):
            return 90002, f"{where} needs a MsgType String and a MsgContent object"
        if msg_type not in FORMATS:
            return 90010, f"{where}: unknown MsgType {msg_type!r}"
        custom += msg_type == "TIMCustomElem"
        if custom > 1:
            return 90010, f"{where}: a message holds at most one TIMCustomElem"
        problem = _element_problem(where, msg_type, content)
        if problem is not None:
            return problem
    return None


def depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed JSON ``value`` (a scalar is 0)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest
