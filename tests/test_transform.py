"""--transform: loading the user's function, calling it, and what its answers become."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from batchedit.im.client import RoamMessage
from batchedit.im.errors import ConfigError
from batchedit.planner import Planner, Problem
from batchedit.rules import Rules
from batchedit.transform import MESSAGE_FIELDS, Transform, TransformError

BODY: list[Any] = [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "hello"}}]


def _message(ccd: str | None = '{"tag":"x"}') -> RoamMessage:
    return RoamMessage("a", "b", 7, 9, 1_790_000_000, "7_9_1790000000", 0, BODY, ccd, 0)


@pytest.fixture
def own_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """sys.path and sys.modules as they were after the test, whatever a transform import adds."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))


def _file(tmp_path: Path, source: str, name: str = "fix.py") -> Path:
    path = tmp_path / name
    path.write_text(source)
    return path


@pytest.mark.usefixtures("own_path")
def test_a_module_in_the_current_directory_is_imported_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MODULE:FUNCTION finds MODULE in the current directory, as `python -m` would."""
    _file(tmp_path, "def up(m):\n    return {'MsgBody': []}\n", "migrate_x1.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert Transform.load("migrate_x1:up").function({}) == {"MsgBody": []}


@pytest.mark.usefixtures("own_path")
@pytest.mark.parametrize(
    ("source", "spec", "message"),
    [
        ("", "fix.py", "give MODULE:FUNCTION or path/to/file.py:FUNCTION"),
        ("", "nowhere/nope.py:f", "--transform nowhere/nope.py:f: no file nowhere/nope.py"),
        (
            "def f(m):\n  return (\n",
            "{path}:f",
            "cannot load {path}: SyntaxError",
        ),
        (
            "import no_such_module_x\n",
            "{path}:f",
            "ModuleNotFoundError: No module named 'no_such_module_x' (at fix.py:1)",
        ),
        ("x = 1\n", "{path}:f", "{path} has no function f"),
        ("def f(a, b):\n  pass\n", "{path}:f", "f must take one argument (the message)"),
        ("", "no_such_module_y:f", "cannot load no_such_module_y: ModuleNotFoundError"),
    ],
)
def test_a_transform_that_cannot_be_loaded_is_a_configuration_error(
    tmp_path: Path, source: str, spec: str, message: str
) -> None:
    """A missing file or module, an import that fails, no such function or one that takes
    the wrong arguments: exit 2 material, saying which, without a traceback."""
    path = _file(tmp_path, source)
    with pytest.raises(ConfigError, match=re.escape(message.format(path=path))):
        Transform.load(spec.format(path=path))


async def test_sync_and_async_transforms_get_a_copy_of_the_message(tmp_path: Path) -> None:
    """The function gets every documented field (a copy: changing it changes nothing read);
    an async one is awaited."""
    seen: list[dict[str, Any]] = []

    def spy(message: dict[str, Any]) -> dict[str, Any]:
        seen.append(dict(message))
        message["MsgBody"][0]["MsgContent"]["Text"] = "changed in place"
        return {}

    async def later(message: dict[str, Any]) -> dict[str, Any]:
        return {"CloudCustomData": message["MsgKey"]}

    message = _message()
    assert await Transform("spy", spy)(message) == (BODY, '{"tag":"x"}')
    assert BODY[0]["MsgContent"]["Text"] == "hello"
    assert seen[0] == {
        "From_Account": "a",
        "To_Account": "b",
        "MsgKey": "7_9_1790000000",
        "MsgTimeStamp": 1_790_000_000,
        "MsgSeq": 7,
        "MsgRandom": 9,
        "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "changed in place"}}],
        "CloudCustomData": '{"tag":"x"}',
    }
    assert tuple(seen[0]) == MESSAGE_FIELDS
    assert await Transform("later", later)(message) == (BODY, "7_9_1790000000")
    assert await Transform("none", lambda m: None)(message) is None


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ([], "the transform returned a list, not a dict or None"),
        ({"MsgKey": "x"}, "the transform returned the field 'MsgKey'; it may return MsgBody"),
        ({"MsgBody": "text"}, "the transform's MsgBody: must be an array of elements"),
        ({"CloudCustomData": {"v": 2}}, "the transform's CloudCustomData: must be a string"),
    ],
)
async def test_an_answer_that_is_no_edit_is_refused(answer: Any, reason: str) -> None:
    """A transform that returns something other than a dict of MsgBody/CloudCustomData (or
    None) fails for that message, saying what it returned."""
    with pytest.raises(TransformError, match=re.escape(reason)):
        await Transform("t", lambda m: answer)(_message())


async def test_the_transform_runs_first_and_every_edit_passes_runs_check() -> None:
    """The rules apply to what the transform returned; a transform whose edit `run` would
    refuse, or that raises, gives a Problem naming the message; None skips the rules too."""

    def pick(message: dict[str, Any]) -> dict[str, Any] | None:
        if message["CloudCustomData"] is None:
            return None
        if message["CloudCustomData"] == "bad":
            return {"MsgBody": []}
        if message["CloudCustomData"] == "boom":
            return {"MsgBody": message["MsgBody"][5]}
        return {"MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "from transform"}}]}

    planner = Planner(Rules(((re.compile("transform"), "rules"),)), Transform("pick", pick))
    edit = await planner.edit(_message('{"a":1}'))
    assert isinstance(edit, dict)
    assert edit["MsgBody"][0]["MsgContent"]["Text"] == "from rules"
    assert await planner.edit(_message(None)) is None
    refused = await planner.edit(_message("bad"))
    assert refused == Problem(
        "a", "b", "7_9_1790000000", "the edit would be refused: MsgBody: must not be empty"
    )
    raised = await planner.edit(_message("boom"))
    assert isinstance(raised, Problem)
    assert raised.reason.startswith(
        "the transform raised IndexError: list index out of range (at test_transform.py:"
    )
    assert str(raised).startswith("a -> b 7_9_1790000000: the transform raised IndexError")
    assert planner.stats.left_alone == 1
    assert len(planner.stats.problems) == 2
