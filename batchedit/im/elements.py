"""The TIMMsgElement formats (spec section 7) and a checker that names the first problem."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

_STR = "string"
_NUM = "number"
_INT = "integer"
_ARR = "array"


@dataclass(frozen=True, slots=True)
class ElementFormat:
    """Fields of one MsgType's ``MsgContent``: name → JSON type, and which are required."""

    fields: Mapping[str, str]
    required: frozenset[str]


def _fmt(required: Mapping[str, str], optional: Mapping[str, str] | None = None) -> ElementFormat:
    return ElementFormat({**required, **(optional or {})}, frozenset(required))


ELEMENT_FORMATS: Final[Mapping[str, ElementFormat]] = {
    "TIMTextElem": _fmt({"Text": _STR}),
    "TIMLocationElem": _fmt({"Desc": _STR, "Latitude": _NUM, "Longitude": _NUM}),
    "TIMFaceElem": _fmt({"Index": _NUM, "Data": _STR}),
    "TIMCustomElem": _fmt({"Data": _STR}, {"Desc": _STR, "Ext": _STR, "Sound": _STR}),
    "TIMSoundElem": _fmt(
        {"Url": _STR, "UUID": _STR, "Download_Flag": _NUM}, {"Size": _NUM, "Second": _NUM}
    ),
    "TIMImageElem": _fmt({"UUID": _STR, "ImageFormat": _NUM, "ImageInfoArray": _ARR}),
    "TIMFileElem": _fmt(
        {"Url": _STR, "UUID": _STR, "Download_Flag": _NUM},
        {"FileSize": _NUM, "FileName": _STR},
    ),
    "TIMVideoFileElem": _fmt(
        {
            "VideoUrl": _STR,
            "VideoUUID": _STR,
            "ThumbUrl": _STR,
            "ThumbUUID": _STR,
            "ThumbWidth": _NUM,
            "ThumbHeight": _NUM,
            "VideoDownloadFlag": _NUM,
            "ThumbDownloadFlag": _NUM,
        },
        {
            "VideoSize": _NUM,
            "VideoSecond": _NUM,
            "VideoFormat": _STR,
            "ThumbSize": _NUM,
            "ThumbFormat": _STR,
        },
    ),
    "TIMRelayElem": _fmt(
        {"Title": _STR, "MsgNum": _INT, "CompatibleText": _STR},
        {"AbstractList": _ARR, "MsgList": _ARR, "JsonMsgKey": _STR},
    ),
}
"""MsgType → format. Fields beyond those listed are passed through unchecked."""

MAX_BODY_BYTES: Final = 8192
"""Largest request body the service accepts, in bytes (spec section 7, "Limits")."""


def _has_type(value: object, kind: str) -> bool:
    if kind == _STR:
        return isinstance(value, str)
    if kind == _ARR:
        return isinstance(value, list)
    if isinstance(value, bool):
        return False
    if kind == _INT:
        return isinstance(value, int)
    return isinstance(value, int | float)


@dataclass(frozen=True, slots=True)
class BodyProblem:
    """Why a MsgBody is not acceptable: a field path, a reason, and the server's code for it."""

    field: str
    reason: str
    code: int

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


def check_msg_body(body: Any) -> BodyProblem | None:
    """The first problem of a ``MsgBody`` value, or ``None`` when the server would accept it.

    Codes as the service answers them: 90007 not an array, 90002 an element that is not an
    element at all, 90010 an element that does not follow its MsgType's format.
    """
    if not isinstance(body, list):
        return BodyProblem("MsgBody", "must be an array of elements", 90007)
    if not body:
        return BodyProblem("MsgBody", "must not be empty", 90002)
    custom = 0
    for index, element in enumerate(body):
        where = f"MsgBody[{index}]"
        if not isinstance(element, dict):
            return BodyProblem(where, "must be an object with MsgType and MsgContent", 90002)
        msg_type = element.get("MsgType")
        content = element.get("MsgContent")
        if not isinstance(msg_type, str) or not isinstance(content, dict):
            return BodyProblem(where, "needs a string MsgType and an object MsgContent", 90002)
        fmt = ELEMENT_FORMATS.get(msg_type)
        if fmt is None:
            return BodyProblem(f"{where}.MsgType", f"unknown MsgType {msg_type!r}", 90010)
        custom += msg_type == "TIMCustomElem"
        if custom > 1:
            return BodyProblem(where, "a message may hold at most one TIMCustomElem", 90010)
        missing = sorted(fmt.required - content.keys())
        if missing:
            return BodyProblem(f"{where}.MsgContent.{missing[0]}", f"required by {msg_type}", 90010)
        for name, kind in fmt.fields.items():
            if name in content and not _has_type(content[name], kind):
                return BodyProblem(f"{where}.MsgContent.{name}", f"must be a {kind}", 90010)
    return None
