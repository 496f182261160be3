"""The TIMMsgElement formats (spec section 7) and a checker that names the first problem.

The rules are those a stored message meets, so that a message read back with
``admin_getroammsg`` can be sent back unchanged (an undo): a field the formats mark optional
for REST sends is optional here (``ImageFormat``), and the older SDKs' form of an element is
accepted where it has one (``TIMSoundElem`` with ``UUID``, ``Size`` and ``Second`` only).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

_STR = "string"
_NUM = "number"
_INT = "integer"
_ARR = "array"
_FLAG = "download flag"
_STRS = "array of strings"
_INFOS = "array of image infos"


@dataclass(frozen=True, slots=True)
class ElementFormat:
    """Fields of one MsgType's ``MsgContent``: name → kind, which are required, and sets of
    which one must be given whole (a format with two forms, or with one of two fields)."""

    fields: Mapping[str, str]
    required: frozenset[str]
    one_of: tuple[tuple[str, ...], ...] = field(default=())


def _fmt(
    required: Mapping[str, str],
    optional: Mapping[str, str] | None = None,
    one_of: tuple[tuple[str, ...], ...] = (),
) -> ElementFormat:
    return ElementFormat({**required, **(optional or {})}, frozenset(required), one_of)


ELEMENT_FORMATS: Final[Mapping[str, ElementFormat]] = {
    "TIMTextElem": _fmt({"Text": _STR}),
    "TIMLocationElem": _fmt({"Desc": _STR, "Latitude": _NUM, "Longitude": _NUM}),
    "TIMFaceElem": _fmt({"Index": _NUM, "Data": _STR}),
    "TIMCustomElem": _fmt({"Data": _STR}, {"Desc": _STR, "Ext": _STR, "Sound": _STR}),
    "TIMSoundElem": _fmt(
        {"UUID": _STR},
        {"Url": _STR, "Download_Flag": _FLAG, "Size": _NUM, "Second": _NUM},
        (("Url", "Download_Flag"), ("Size", "Second")),
    ),
    "TIMImageElem": _fmt({"UUID": _STR, "ImageInfoArray": _INFOS}, {"ImageFormat": _NUM}),
    "TIMFileElem": _fmt(
        {"Url": _STR, "UUID": _STR, "Download_Flag": _FLAG},
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
            "VideoDownloadFlag": _FLAG,
            "ThumbDownloadFlag": _FLAG,
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
        {"AbstractList": _STRS, "MsgList": _ARR, "JsonMsgKey": _STR},
        (("MsgList",), ("JsonMsgKey",)),
    ),
}
"""MsgType → format. Fields beyond those listed are passed through unchecked."""

MAX_BODY_BYTES: Final = 8192
"""Largest request body the service accepts, in bytes (spec section 7, "Limits")."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _image_info_problem(value: object) -> tuple[str, str] | None:
    """What is wrong with an ``ImageInfoArray`` (a path below it, and why): it needs at least
    one info, each with a string ``URL`` and number ``Width`` and ``Height`` (and number
    ``Type`` and ``Size`` when given)."""
    if not isinstance(value, list):
        return "", "must be an array"
    if not value:
        return "", "must hold at least one image info"
    for index, info in enumerate(value):
        if not isinstance(info, dict):
            return f"[{index}]", "must be an object"
        if not isinstance(info.get("URL"), str):
            return f"[{index}].URL", "must be a string"
        for name in ("Width", "Height", "Type", "Size"):
            if (name in info or name in ("Width", "Height")) and not _is_number(info.get(name)):
                return f"[{index}].{name}", "must be a number"
    return None


_CHECKS: Final[Mapping[str, tuple[Callable[[object], bool], str]]] = {
    _STR: (lambda v: isinstance(v, str), "must be a string"),
    _NUM: (_is_number, "must be a number"),
    _INT: (lambda v: _is_number(v) and isinstance(v, int), "must be an integer"),
    _ARR: (lambda v: isinstance(v, list), "must be an array"),
    _FLAG: (lambda v: _is_number(v) and v == 2, "must be 2 (a download flag)"),
    _STRS: (
        lambda v: isinstance(v, list) and all(isinstance(item, str) for item in v),
        "must be an array of strings",
    ),
}
"""Kind → its check, and what a value that fails it is told."""


def _kind_problem(kind: str, value: object) -> tuple[str, str] | None:
    """What is wrong with ``value`` as a ``kind`` (a path below it, and why), or ``None``."""
    if kind == _INFOS:
        return _image_info_problem(value)
    check, reason = _CHECKS[kind]
    return None if check(value) else ("", reason)


@dataclass(frozen=True, slots=True)
class BodyProblem:
    """Why a MsgBody is not acceptable: a field path, a reason, and the server's code for it."""

    field: str
    reason: str
    code: int

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


def _content_problem(where: str, msg_type: str, content: dict[str, Any]) -> BodyProblem | None:
    fmt = ELEMENT_FORMATS[msg_type]
    missing = sorted(fmt.required - content.keys())
    if missing:
        return BodyProblem(f"{where}.MsgContent.{missing[0]}", f"required by {msg_type}", 90010)
    if fmt.one_of and not any(all(name in content for name in form) for form in fmt.one_of):
        first, *others = fmt.one_of
        wanted = next(name for name in first if name not in content)
        alternatives = " or ".join(" and ".join(form) for form in others)
        return BodyProblem(
            f"{where}.MsgContent.{wanted}",
            f"required by {msg_type} (unless it has {alternatives})",
            90010,
        )
    for name, kind in fmt.fields.items():
        if name in content:
            problem = _kind_problem(kind, content[name])
            if problem is not None:
                below, reason = problem
                return BodyProblem(f"{where}.MsgContent.{name}{below}", reason, 90010)
    return None


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
        if msg_type not in ELEMENT_FORMATS:
            return BodyProblem(f"{where}.MsgType", f"unknown MsgType {msg_type!r}", 90010)
        custom += msg_type == "TIMCustomElem"
        if custom > 1:
            return BodyProblem(where, "a message may hold at most one TIMCustomElem", 90010)
        problem = _content_problem(where, msg_type, content)
        if problem is not None:
            return problem
    return None
