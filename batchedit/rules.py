"""The built-in rules of ``batchedit plan``: what each changes in a message, and nothing else.

* ``--replace REGEX REPLACEMENT``: the ``Text`` of every TIMTextElem; with ``--custom-desc`` the
  ``Desc`` of TIMCustomElem, with ``--custom-data`` its ``Data`` and ``Ext``.
* ``--rewrite-url OLD_PREFIX NEW_PREFIX``: every URL field of every media element
  (:data:`MEDIA_URLS`) that starts with OLD_PREFIX starts with NEW_PREFIX instead.
* ``--set-cloud-custom-data TEMPLATE``: a new CloudCustomData from a string template.
* ``--ccd-rename``, ``--ccd-set``, ``--ccd-delete``: JSON-aware CloudCustomData edits that keep
  every byte they do not change (:mod:`batchedit.ccdjson`).

Every other field of every element stays as it was, in its order.
"""

from __future__ import annotations

import copy
import json
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from batchedit.ccdjson import JsonEditError, delete_key, dotted, rename_key, set_value
from batchedit.im.client import RoamMessage
from batchedit.im.errors import ConfigError

TEMPLATE_FIELDS = ("MsgKey", "From_Account", "To_Account", "MsgTimeStamp", "CloudCustomData")
"""The ``$names`` a ``--set-cloud-custom-data`` template may use."""

MEDIA_URLS: Final = {
    "TIMImageElem": ("ImageInfoArray[].URL",),
    "TIMSoundElem": ("Url",),
    "TIMFileElem": ("Url",),
    "TIMVideoFileElem": ("VideoUrl", "ThumbUrl"),
}
"""The URL fields ``--rewrite-url`` reads, by MsgType (the image's are in each ImageInfoArray
item)."""

Content = tuple[list[Any], str | None]
"""A message's ``MsgBody`` and ``CloudCustomData`` (``None``: it has none)."""


class RuleError(ValueError):
    """A message the rules cannot edit as asked; the text says why (it is left alone)."""


def parse_template(text: str) -> string.Template:
    """A CloudCustomData template; ``$CloudCustomData`` is the current value ("" if none)."""
    template = string.Template(text)
    try:
        template.substitute(dict.fromkeys(TEMPLATE_FIELDS, ""))
    except (KeyError, ValueError) as exc:
        known = ", ".join(f"${name}" for name in TEMPLATE_FIELDS)
        raise ConfigError(f"bad template {text!r} ({exc}); it may use {known}") from None
    return template


def compile_replacement(pattern: str, replacement: str) -> tuple[re.Pattern[str], str]:
    """A ``--replace`` rule; a bad regex or replacement raises :class:`ConfigError`."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"bad --replace regex {pattern!r}: {exc}") from None
    _check_replacement(compiled, replacement)
    return compiled, replacement


def _check_replacement(pattern: re.Pattern[str], replacement: str) -> None:
    """Raise :class:`ConfigError` now for a replacement that names a group ``pattern`` lacks
    (``\\9``) or holds a bad escape, rather than on the first message it meets."""
    # The same groups, matching the empty string: expanding the replacement once checks it.
    names = {number: name for name, number in pattern.groupindex.items()}
    groups = "".join(
        f"(?P<{names[n]}>)" if n in names else "()" for n in range(1, pattern.groups + 1)
    )
    try:
        re.sub(groups, replacement, "", count=1)
    except (re.error, IndexError) as exc:
        raise ConfigError(f"bad --replace replacement {replacement!r}: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_path(text: str, flag: str) -> tuple[str, ...]:
    """A dotted CloudCustomData key path (``meta.tag``); :class:`ConfigError` if a key is empty."""
    keys = tuple(text.split("."))
    if not all(keys):
        raise ConfigError(f"bad {flag} path {text!r}: give keys joined by dots, like meta.tag")
    return keys


@dataclass(frozen=True, slots=True)
class CcdEdit:
    """One JSON-aware CloudCustomData edit: set ``path`` to ``argument`` (compact JSON text),
    rename the key at ``path`` to ``argument``, or delete it."""

    kind: Literal["set", "rename", "delete"]
    path: tuple[str, ...]
    argument: str = ""

    @classmethod
    def set(cls, path: str, value: str) -> CcdEdit:
        """``--ccd-set PATH VALUE`` (VALUE is JSON); :class:`ConfigError` if VALUE is not."""
        try:
            parsed = json.loads(value, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise ConfigError(
                f"--ccd-set {path}: {value!r} is not a JSON value (a string needs its quotes: "
                "'\"text\"')"
            ) from None
        compact = json.dumps(parsed, ensure_ascii=False, separators=(",", ":"))
        return cls("set", parse_path(path, "--ccd-set"), compact)

    @classmethod
    def rename(cls, old: str, new: str) -> CcdEdit:
        """``--ccd-rename OLD NEW``: NEW is the new key, or a path beside OLD (``a.x a.y``)."""
        path = parse_path(old, "--ccd-rename")
        target = parse_path(new, "--ccd-rename")
        if len(target) > 1 and target[:-1] != path[:-1]:
            raise ConfigError(
                f"--ccd-rename {old} {new}: a key is renamed in its own object; give the new "
                f"key ({target[-1]}) or a path beside the old one"
            )
        return cls("rename", path, target[-1])

    @classmethod
    def delete(cls, path: str) -> CcdEdit:
        """``--ccd-delete PATH``."""
        return cls("delete", parse_path(path, "--ccd-delete"))

    def apply(self, text: str) -> str:
        """``text`` (a JSON object) after this edit; :class:`JsonEditError` says why not."""
        if self.kind == "set":
            return set_value(text, self.path, self.argument)
        if self.kind == "rename":
            return rename_key(text, self.path, self.argument)
        return delete_key(text, self.path)

    def __str__(self) -> str:
        shown = {"set": f" {self.argument}", "rename": f" {self.argument}", "delete": ""}
        return f"--ccd-{self.kind} {dotted(self.path)}{shown[self.kind]}"


def _is_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Rules:
    """What to change; see the module's docstring for each rule.

    ``replacements`` apply in order; ``url_rewrites`` are (old prefix, new prefix), the first
    that matches a URL applies; ``ccd_edits`` apply in order (the CLI gives renames, then sets,
    then deletes). ``cloud_custom_data`` (a template) and ``ccd_edits`` exclude each other.
    A message without CloudCustomData is left alone by ``ccd_edits``.
    """

    replacements: tuple[tuple[re.Pattern[str], str], ...] = ()
    custom_desc: bool = False
    cloud_custom_data: string.Template | None = None
    custom_data: bool = False
    url_rewrites: tuple[tuple[str, str], ...] = ()
    ccd_edits: tuple[CcdEdit, ...] = ()
    _texts: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for pattern, replacement in self.replacements:
            _check_replacement(pattern, replacement)
        if (self.custom_desc or self.custom_data) and not self.replacements:
            raise ConfigError("--custom-desc and --custom-data widen --replace: give --replace")
        if self.cloud_custom_data is not None and self.ccd_edits:
            raise ConfigError(
                "--set-cloud-custom-data replaces CloudCustomData whole: give it, or "
                "--ccd-set/--ccd-rename/--ccd-delete, not both"
            )
        if any(not old for old, _ in self.url_rewrites):
            raise ConfigError("--rewrite-url needs a non-empty OLD_PREFIX")
        custom = ("Desc",) * self.custom_desc + ("Data", "Ext") * self.custom_data
        texts = {"TIMTextElem": ("Text",), "TIMCustomElem": custom}
        object.__setattr__(self, "_texts", {k: v for k, v in texts.items() if v})

    @property
    def empty(self) -> bool:
        """Whether there is no rule at all."""
        return not (
            self.replacements
            or self.url_rewrites
            or self.ccd_edits
            or self.cloud_custom_data is not None
        )

    def reads(self) -> list[str]:
        """What each rule looks at, for a summary that explains why nothing changed."""
        found = []
        if self.replacements:
            fields = [f"{kind} {' and '.join(names)}" for kind, names in self._texts.items()]
            found.append(f"--replace reads {', '.join(fields)} only")
        if self.url_rewrites:
            found.append(f"--rewrite-url reads the URLs of {', '.join(MEDIA_URLS)} only")
        if self.ccd_edits:
            found.append("--ccd-* rules read CloudCustomData holding a JSON object only")
        return found

    def rewrite(self, message: RoamMessage) -> dict[str, Any] | None:
        """The edit record for ``message``, or ``None`` when the rules change nothing.

        Raises :class:`RuleError` for a message the rules cannot edit as asked.
        """
        body, ccd = self.apply(message, (message.body, message.cloud_custom_data))
        edit: dict[str, Any] = {
            "From_Account": message.from_account,
            "To_Account": message.to_account,
            "MsgKey": message.msg_key,
        }
        if body != message.body:
            edit["MsgBody"] = body
        if ccd != message.cloud_custom_data:
            edit["CloudCustomData"] = ccd
        return edit if len(edit) > 3 else None

    def apply(self, message: RoamMessage, content: Content) -> Content:
        """``content`` (``message``'s, or what a transform made of it) after the rules.

        Raises :class:`RuleError` when CloudCustomData rules meet a value they cannot edit.
        """
        body, ccd = content
        if self.replacements or self.url_rewrites:
            body = self._rewrite_body(body)
        if self.cloud_custom_data is not None:
            current = ccd or ""
            new = self.cloud_custom_data.substitute(
                MsgKey=message.msg_key,
                From_Account=message.from_account,
                To_Account=message.to_account,
                MsgTimeStamp=message.msg_timestamp,
                CloudCustomData=current,
            )
            if new != current and _is_json(current) and not _is_json(new):
                shown = new if len(new) <= 80 else new[:80] + "..."
                raise RuleError(
                    f"CloudCustomData: --set-cloud-custom-data makes {shown!r} of JSON, which "
                    "is not JSON; left alone"
                )
            if new != current:
                ccd = new
        if self.ccd_edits and ccd:
            try:
                for edit in self.ccd_edits:
                    ccd = edit.apply(ccd)
            except JsonEditError as exc:
                raise RuleError(f"CloudCustomData {exc}; left alone") from None
        return body, ccd

    def _replace(self, text: str) -> str:
        for pattern, replacement in self.replacements:
            text = pattern.sub(replacement, text)
        return text

    def _rewrite_url(self, url: Any) -> Any:
        if isinstance(url, str):
            for old, new in self.url_rewrites:
                if url.startswith(old):
                    return new + url[len(old) :]
        return url

    def _rewrite_body(self, body: list[Any]) -> list[Any]:
        body = copy.deepcopy(body)
        for element in body:
            content = element.get("MsgContent") if isinstance(element, dict) else None
            if not isinstance(content, dict):
                continue
            kind = element.get("MsgType")
            if self.replacements:
                for name in self._texts.get(kind, ()):
                    if isinstance(content.get(name), str):
                        content[name] = self._replace(content[name])
            if self.url_rewrites:
                _each_url(kind, content, self._rewrite_url)
        return body


def _each_url(kind: Any, content: dict[str, Any], rewrite: Callable[[Any], Any]) -> None:
    """Replace each URL field of a media element's ``content`` with ``rewrite(url)``."""
    if kind == "TIMImageElem":
        images = content.get("ImageInfoArray")
        for image in images if isinstance(images, list) else ():
            if isinstance(image, dict) and "URL" in image:
                image["URL"] = rewrite(image["URL"])
        return
    for name in MEDIA_URLS.get(kind, ()) if isinstance(kind, str) else ():
        if name in content:
            content[name] = rewrite(content[name])
