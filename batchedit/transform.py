"""``--transform``: a function of the user's that decides a message's new content.

Named ``MODULE:FUNCTION`` (imported as Python would, the current directory first) or
``path/to/file.py:FUNCTION``. It is called once per message with a new dict of the message as
read (:data:`MESSAGE_FIELDS`; ``CloudCustomData`` is ``None`` when the message has none) and
returns a dict with the new ``MsgBody`` and/or ``CloudCustomData`` (a field left out stays as it
is, so ``{}`` changes nothing itself), or ``None`` to leave the message alone, built-in rules
included. It may be ``async``; a sync one runs in the event loop, so it should not wait on
the network.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from batchedit.im.client import RoamMessage, redact
from batchedit.im.errors import ConfigError
from batchedit.rules import Content

MESSAGE_FIELDS: Final = (
    "From_Account",
    "To_Account",
    "MsgKey",
    "MsgTimeStamp",
    "MsgSeq",
    "MsgRandom",
    "MsgBody",
    "CloudCustomData",
)
"""The fields of the dict a transform is given."""

RESULT_FIELDS: Final = ("MsgBody", "CloudCustomData")
"""The fields a transform may return."""

MAX_REASON_CHARS: Final = 300
_IMPORTLIB: Final = Path(importlib.__file__).parent


class TransformError(ValueError):
    """The transform raised, or returned something that is no edit; the text says which."""


def described(exc: BaseException) -> str:
    """``Type: message (at file.py:LINE)``, redacted and cut short, for one line of output."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<")
        and frame.filename != __file__
        and Path(frame.filename).parent != _IMPORTLIB
    ]
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    text = redact(f"{type(exc).__name__}: {exc}")
    if len(text) > MAX_REASON_CHARS:
        text = text[:MAX_REASON_CHARS] + "..."
    return text + where


def _import(name: str) -> ModuleType:
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(name)


def _load_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise ConfigError(f"no file {path}")
    name = f"batchedit_transform_{len(sys.modules)}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path} cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    # As when the file is run as a script: its own directory comes first for its imports.
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True, slots=True)
class Transform:
    """A loaded transform: ``name`` as the user gave it, and the function."""

    name: str
    function: Callable[[dict[str, Any]], Any]

    @classmethod
    def load(cls, spec: str) -> Transform:
        """``MODULE:FUNCTION`` or ``path/to/file.py:FUNCTION``; :class:`ConfigError` says what
        is wrong (no such module or file, an error while importing it, no such function)."""
        where, colon, name = spec.rpartition(":")
        if not colon or not where or not name.isidentifier():
            raise ConfigError(
                f"--transform {spec!r}: give MODULE:FUNCTION or path/to/file.py:FUNCTION"
            )
        is_file = where.endswith(".py") or "/" in where or os.sep in where
        try:
            module = _load_file(Path(where)) if is_file else _import(where)
        except ConfigError as exc:
            raise ConfigError(f"--transform {spec}: {exc}") from None
        except Exception as exc:  # the user's module failed to import: say how, no traceback
            raise ConfigError(
                f"--transform {spec}: cannot load {where}: {described(exc)}"
            ) from None
        function = getattr(module, name, None)
        if not callable(function):
            raise ConfigError(f"--transform {spec}: {where} has no function {name}")
        try:
            inspect.signature(function).bind({})
        except TypeError:
            raise ConfigError(
                f"--transform {spec}: {name} must take one argument (the message)"
            ) from None
        except ValueError:  # no signature to inspect (a builtin): find out when it is called
            pass
        return cls(spec, function)

    async def __call__(self, message: RoamMessage) -> Content | None:
        """The message's new (MsgBody, CloudCustomData), or ``None`` to leave it alone.

        Raises :class:`TransformError` when the function raises or returns no edit.
        """
        given = {
            "From_Account": message.from_account,
            "To_Account": message.to_account,
            "MsgKey": message.msg_key,
            "MsgTimeStamp": message.msg_timestamp,
            "MsgSeq": message.msg_seq,
            "MsgRandom": message.msg_random,
            "MsgBody": copy.deepcopy(message.body),
            "CloudCustomData": message.cloud_custom_data,
        }
        try:
            result = self.function(given)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # the user's code: any error is this message's problem
            raise TransformError(f"the transform raised {described(exc)}") from None
        return _content(result, message)


def _content(result: Any, message: RoamMessage) -> Content | None:
    if result is None:
        return None
    if not isinstance(result, dict):
        raise TransformError(
            f"the transform returned a {type(result).__name__}, not a dict or None"
        )
    for name in result:
        if name not in RESULT_FIELDS:
            raise TransformError(
                f"the transform returned the field {str(name)[:50]!r}; it may return MsgBody "
                "and CloudCustomData"
            )
    body = result.get("MsgBody", message.body)
    if not isinstance(body, list):
        raise TransformError("the transform's MsgBody: must be an array of elements")
    ccd = result.get("CloudCustomData", message.cloud_custom_data)
    if "CloudCustomData" in result and not isinstance(ccd, str):
        raise TransformError(
            'the transform\'s CloudCustomData: must be a string ("" empties it; the API '
            "cannot remove it)"
        )
    return body, ccd
