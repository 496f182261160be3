"""The README and docs/ agree with the code: options, error codes, regions, the walkthrough."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from batchedit.cli import main
from batchedit.im.client import REGIONS
from batchedit.im.elements import ELEMENT_FORMATS
from batchedit.im.errors import CODE_CLASSES, ErrorClass

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ERROR_CODES = (ROOT / "docs" / "error-codes.md").read_text(encoding="utf-8")
IM_API = (ROOT / "docs" / "tencent-im.md").read_text(encoding="utf-8")
REHEARSAL = ROOT / "samples" / "rehearse.sh"

OTHER_TOOLS_FLAGS = {"--strict"}
"""Long flags the README gives to tools other than batchedit (mypy)."""


def _table_rows(text: str) -> Iterator[list[str]]:
    """The cells of every Markdown table row, without the surrounding backquotes."""
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            yield [cell.strip().strip("`") for cell in line.strip("|").split("|")]


def _long_options(command: click.Command) -> set[str]:
    return {o for p in command.params for o in p.opts if o.startswith("--")} - {"--help"}


def _command_lines(text: str) -> Iterator[str]:
    """Each command line of the code blocks (continuations joined) and each inline code span."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.DOTALL)
    for block in blocks:
        yield from block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    yield from re.findall(r"`([^`\n]+)`", prose)


def test_every_error_code_is_documented_with_its_class() -> None:
    """docs/error-codes.md lists exactly the codes of CODE_CLASSES, each with its class."""
    documented = {int(row[0]): row[1] for row in _table_rows(ERROR_CODES) if row[0].isdigit()}
    assert documented == {code: kind.value for code, kind in CODE_CLASSES.items()}


def test_every_error_class_is_explained() -> None:
    """docs/error-codes.md says what batchedit does for each class."""
    explained = {row[0] for row in _table_rows(ERROR_CODES)}
    assert {kind.value for kind in ErrorClass} <= explained


def test_every_region_is_documented_and_in_help() -> None:
    """docs/tencent-im.md maps each --region name to its host, and `run --help` lists them."""
    documented = {row[0]: row[1] for row in _table_rows(IM_API)}
    assert {name: documented.get(name) for name in REGIONS} == dict(REGIONS)
    help_text = " ".join(CliRunner().invoke(main, ["run", "--help"]).output.split())
    assert ", ".join(REGIONS) in help_text


def test_every_element_format_is_documented() -> None:
    """docs/tencent-im.md names each MsgType batchedit accepts with its required fields."""
    rows = {line.split("`")[1]: line for line in IM_API.splitlines() if line.startswith("| `TIM")}
    assert set(rows) == set(ELEMENT_FORMATS)
    for msg_type, fmt in ELEMENT_FORMATS.items():
        assert all(f"`{name}`" in rows[msg_type].split("|")[2] for name in fmt.required)


def test_every_option_is_in_the_readme() -> None:
    """Each long option of each batchedit command is mentioned in the README."""
    missing = [
        f"{name} {option}"
        for name, command in main.commands.items()
        for option in sorted(_long_options(command))
        if not re.search(re.escape(option) + r"(?![\w-])", README)
    ]
    assert missing == []


def test_every_flag_the_docs_name_exists() -> None:
    """Every --flag in the README and docs/ is an option of some batchedit command."""
    known = set().union(*(_long_options(c) for c in main.commands.values())) | OTHER_TOOLS_FLAGS
    for text in (README, ERROR_CODES, IM_API):
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))
        assert named - known == set()


def test_every_command_line_uses_its_own_options() -> None:
    """A `batchedit COMMAND ...` line in the README uses only options of that command."""
    checked = 0
    for line in _command_lines(README):
        for match in re.finditer(r"batchedit\"?\s+([a-z]+)\b([^|;&]*)", line):
            command = main.commands.get(match[1])
            if command is None:
                continue
            checked += 1
            flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", match[2]))
            assert flags <= _long_options(command), line
    assert checked >= 10


def test_docs_point_at_nothing_outside_the_repository() -> None:
    """The README and docs/ cite no spec file and no path outside the repository."""
    for text in (README, ERROR_CODES, IM_API):
        assert "../" not in text
        assert "spec section" not in text
        assert "tim-rest.md" not in text


def test_help_shows_each_command_description_whole() -> None:
    """`batchedit --help` gives each command's first sentence without cutting it short."""
    output = CliRunner().invoke(main, ["--help"], terminal_width=80).output
    listing = " ".join(output.split("Commands:")[1].split())
    assert "..." not in listing
    for name, command in main.commands.items():
        first = command.get_short_help_str(limit=1000)
        assert f"{name} {first}" in listing


@pytest.mark.parametrize("name", sorted(main.commands))
def test_each_commands_help_fits_80_columns(name: str) -> None:
    """`batchedit COMMAND --help` on an 80-column terminal has no longer line (the literal
    Exit status paragraphs included)."""
    output = CliRunner().invoke(main, [name, "--help"], terminal_width=80).output
    assert [line for line in output.splitlines() if len(line) > 80] == []


def test_the_readme_names_the_commands_that_take_budget() -> None:
    """The README's list of commands that take --budget is exactly those that have it."""
    listed = re.search(r"\* ((?:`[a-z]+`(?:, | and )?)+) take `--budget", README)
    assert listed is not None
    having = {
        name for name, command in main.commands.items() if "--budget" in _long_options(command)
    }
    assert set(re.findall(r"`([a-z]+)`", listed[1])) == having


def test_the_readme_walkthrough_is_the_rehearsal_script() -> None:
    """The README shows samples/rehearse.sh word for word."""
    script = REHEARSAL.read_text(encoding="utf-8")
    assert f"```sh\n{script}```\n" in README


@pytest.mark.skipif(shutil.which("curl") is None, reason="the walkthrough uses curl")
def test_the_rehearsal_script_runs(tmp_path: Path) -> None:
    """samples/rehearse.sh plans, runs with a backup and undoes against the emulator, ending
    with every message as it was; settings left in the caller's shell do not leak in."""
    bash = shutil.which("bash")
    if bash is None or not (ROOT / ".venv" / "bin" / "batchedit").exists():
        pytest.skip("the walkthrough needs bash and the .venv that make demo creates")
    env = {
        "PATH": os.environ["PATH"],
        "TMPDIR": str(tmp_path),
        "TIM_REGION": "singapore",
        "TIM_ADMIN": "someone-else",
        "TIM_USERSIG": "not-a-usersig",
    }
    done = subprocess.run(
        [bash, str(REHEARSAL)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"rehearsal files in {tmp_path}")
    assert lines[-1] == "every message is back as it was"
    assert "0 edits planned" in done.stderr
