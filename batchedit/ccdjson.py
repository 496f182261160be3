"""Edits of a JSON object held in a string (a message's CloudCustomData) that keep its bytes.

Each edit splices the original text: a key that is set, renamed or deleted changes, and nothing
else does. The other keys keep their order, spacing, number spelling and string escapes byte
for byte; a new key goes after the last one, in the object's own separator style.

A path is a tuple of keys, outermost first (``("meta", "tag")`` for ``{"meta": {"tag": ..}}``).
Keys along a path must be unique in their objects: an edit that meets a duplicate raises
:class:`JsonEditError`, since which copy a reader takes is up to the reader.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from batchedit.records import json_type

_SPACE: Final = " \t\n\r"
_DECODER: Final = json.JSONDecoder()


class JsonEditError(ValueError):
    """The text is not a JSON object, or the edit cannot be made in it; the message says why."""


@dataclass(frozen=True, slots=True)
class _Member:
    """One ``"key": value`` of an object, as offsets into the text."""

    key: str
    start: int
    """The key's opening quote."""
    key_end: int
    """Just after the key's closing quote."""
    value_start: int
    end: int
    """Just after the value."""


@dataclass(frozen=True, slots=True)
class _Object:
    start: int
    """The opening brace."""
    members: tuple[_Member, ...]


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in _SPACE:
        index += 1
    return index


def _read_object(text: str, start: int) -> _Object:
    """The members of the object whose ``{`` is at ``start`` (the text is known to be JSON)."""
    index = _skip(text, start + 1)
    members: list[_Member] = []
    if text[index] == "}":
        return _Object(start, ())
    while True:
        # scanstring is json's own string scanner (C-accelerated); typeshed does not list it.
        key, key_end = json.decoder.scanstring(text, index + 1)  # type: ignore[attr-defined]
        value_start = _skip(text, _skip(text, key_end) + 1)  # past the colon
        _, end = _DECODER.raw_decode(text, value_start)
        members.append(_Member(key, index, key_end, value_start, end))
        index = _skip(text, end)
        if text[index] != ",":
            return _Object(start, tuple(members))
        index = _skip(text, index + 1)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_object(text: str) -> _Object:
    """The top-level object of ``text``; :class:`JsonEditError` if it is not a JSON object."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        reason = str(exc).split(":", 1)[0] if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise JsonEditError(f"not JSON ({reason or 'nested too deeply'})") from None
    if not isinstance(value, dict):
        raise JsonEditError(f"not a JSON object, got {json_type(value)}")
    return _read_object(text, _skip(text, 0))


def dotted(path: Sequence[str]) -> str:
    """A path as the user writes it: ``meta.tag``."""
    return ".".join(path)


def _find(obj: _Object, key: str, path: Sequence[str]) -> _Member | None:
    found = [member for member in obj.members if member.key == key]
    if len(found) > 1:
        raise JsonEditError(f"{dotted(path)} is given {len(found)} times")
    return found[0] if found else None


def _holder(text: str, path: Sequence[str]) -> _Object | None:
    """The object that holds ``path``'s last key; ``None`` if a key on the way is missing or
    holds no object."""
    obj = parse_object(text)
    for depth, key in enumerate(path[:-1]):
        member = _find(obj, key, path[: depth + 1])
        if member is None or text[member.value_start] != "{":
            return None
        obj = _read_object(text, member.value_start)
    return obj


def _key(key: str) -> str:
    return json.dumps(key, ensure_ascii=False)


def _canonical(value_text: str) -> str:
    """One spelling per JSON value, telling 1 from 1.0 and true (Python's == does not)."""
    return json.dumps(json.loads(value_text), ensure_ascii=False, separators=(",", ":"))


def _insert(text: str, obj: _Object, key: str, value: str) -> str:
    """``text`` with ``"key": value`` added after ``obj``'s last member, in its style."""
    if not obj.members:
        at = obj.start + 1
        return f"{text[:at]}{_key(key)}:{value}{text[at:]}"
    last = obj.members[-1]
    colon = text[last.key_end : last.value_start]
    if len(obj.members) > 1:
        separator = text[obj.members[-2].end : last.start]
    else:  # the space after the brace, else after the colon: {"a": 1} gives {"a": 1, "v": 2}
        separator = "," + (text[obj.start + 1 : last.start] or colon[len(colon.rstrip()) :])
    return f"{text[: last.end]}{separator}{_key(key)}{colon}{value}{text[last.end :]}"


def set_value(text: str, path: Sequence[str], value: str) -> str:
    """``text`` with ``path`` set to the JSON ``value`` (compact JSON text), creating the
    objects on the way that are missing; unchanged if it already holds that value."""
    obj = parse_object(text)
    for depth, key in enumerate(path[:-1]):
        member = _find(obj, key, path[: depth + 1])
        if member is None:
            nested = value
            for inner in reversed(path[depth + 1 :]):
                nested = f"{{{_key(inner)}:{nested}}}"
            return _insert(text, obj, key, nested)
        if text[member.value_start] != "{":
            raise JsonEditError(f"{dotted(path[: depth + 1])} holds no object to set a key in")
        obj = _read_object(text, member.value_start)
    member = _find(obj, path[-1], path)
    if member is None:
        return _insert(text, obj, path[-1], value)
    if _canonical(text[member.value_start : member.end]) == _canonical(value):
        return text
    return text[: member.value_start] + value + text[member.end :]


def rename_key(text: str, path: Sequence[str], new: str) -> str:
    """``text`` with the key at ``path`` renamed to ``new`` in place (same position, same
    value); unchanged if there is no such key."""
    obj = _holder(text, path)
    member = _find(obj, path[-1], path) if obj is not None else None
    if obj is None or member is None:
        return text
    if _find(obj, new, [*path[:-1], new]) is not None:
        raise JsonEditError(f"cannot rename {dotted(path)}: {dotted([*path[:-1], new])} exists")
    return text[: member.start] + _key(new) + text[member.key_end :]


def delete_key(text: str, path: Sequence[str]) -> str:
    """``text`` without the key at ``path`` (and one comma next to it); unchanged if there is
    no such key."""
    obj = _holder(text, path)
    member = _find(obj, path[-1], path) if obj is not None else None
    if obj is None or member is None:
        return text
    members = obj.members
    index = members.index(member)
    if len(members) == 1:
        start, end = member.start, member.end
    elif index < len(members) - 1:
        start, end = member.start, members[index + 1].start
    else:
        start, end = members[index - 1].end, member.end
    return text[:start] + text[end:]
