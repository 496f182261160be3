"""What long commands write to stderr off a terminal: progress lines under nohup, and with
--log-format json nothing but JSON objects, errors and library notes included."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner

from batchedit.cli import main
from batchedit.emulator import Store
from tests.conftest import EmulatorProcess, cli_env
from tests.helpers import seed_messages, write_edits

StartEmulator = Callable[..., EmulatorProcess]

PROGRESS = re.compile(
    r"progress: \d+/60 \| \d+/s \| (ETA \d+m\d\ds \| )?ok \d+ failed 0 invalid 0 retrying \d+ "
    r"\| limit 20/s"
)


def _runner() -> CliRunner:
    return CliRunner(
        env={"TIM_SECRET_KEY": None, "TIM_SDKAPPID": None, "TIM_BASE_URL": None, "TIM_REGION": None}
    )


def _rows(text: str) -> list[dict[str, Any]]:
    """Each line parsed as JSON (a line that is not fails the test)."""
    return [orjson.loads(line) for line in text.splitlines()]


def test_configuration_errors_are_json_too(tmp_path: Path) -> None:
    """With --log-format json a configuration or option error is one JSON line with the message
    and the exit status; without it, click's usual text."""
    edits = write_edits(tmp_path / "e.jsonl", [])
    result = _runner().invoke(main, ["run", str(edits), "--log-format", "json"])
    assert result.exit_code == 2
    (row,) = _rows(result.output)
    assert row["event"] == "error"
    assert row["message"] == "--results is required (unless --dry-run)"
    assert row["exit_code"] == 2
    result = _runner().invoke(main, ["run", str(edits), "--rate", "-1", "--log-format", "json"])
    assert result.exit_code == 2
    (row,) = _rows(result.output)
    assert row["message"].startswith("Invalid value for '--rate': -1.0 is not in the range")
    result = _runner().invoke(main, ["run", str(edits)])
    assert result.exit_code == 2
    assert result.output == "Error: --results is required (unless --dry-run)\n"


def test_a_torn_row_note_is_a_json_line(tmp_path: Path) -> None:
    """The note that a torn last row was ignored comes as its own JSON event, before the
    summary, whose fields are the --summary-json ones."""
    edits = write_edits(tmp_path / "e.jsonl", [{"From_Account": "a"}])
    results = tmp_path / "r.jsonl"
    results.write_bytes(b'{"line":2,"outcome":"ok","hash":"0000000000000000"}\n{"li')
    args = ["run", str(edits), "--dry-run", "--resume", "--results", str(results)]
    result = _runner().invoke(main, [*args, "--log-format", "json"])
    assert result.exit_code == 1, result.output
    rows = _rows(result.output)
    assert [row["event"] for row in rows] == ["repair", "invalid", "summary"]
    assert rows[0]["message"].startswith(f"{results}: its last row (line 2) was torn by a crash")
    assert rows[2]["summary"]["outcomes"] == {"ok": 0, "failed": 0, "invalid": 1}
    assert rows[2]["message"].startswith("batchedit summary (dry run: nothing sent)\n")


def _seeded(tmp_path: Path, count: int) -> tuple[Path, list[dict[str, str]]]:
    store = Store()
    store.import_account("administrator")
    targets = seed_messages(store, count)
    store.save(tmp_path / "seed.jsonl")
    return tmp_path / "seed.jsonl", targets


def test_progress_lines_reach_a_log_file(tmp_path: Path, emulator_process: StartEmulator) -> None:
    """stderr redirected to a file (nohup, CI): the start line, then plain progress lines while
    the run lasts longer than --progress-every (60 edits at 20/s take 2.9 s at least), then the
    summary."""
    state, targets = _seeded(tmp_path, 60)
    edits = write_edits(tmp_path / "edits.jsonl", [{**t, "CloudCustomData": "x"} for t in targets])
    emulator = emulator_process(state=state)
    log = tmp_path / "stderr.log"
    command = [sys.executable, "-m", "batchedit", "run", str(edits), "--results",
               str(tmp_path / "r.jsonl"), "--rate", "20", "--progress-every", "0.5"]  # fmt: skip
    with log.open("wb") as stderr:
        done = subprocess.run(
            command, env=cli_env(emulator.url), stderr=stderr, check=False, timeout=120
        )
    text = log.read_text()
    assert done.returncode == 0, text
    lines = text.splitlines()
    assert lines[0].startswith("start: endpoint 127.0.0.1:")
    progress = [line for line in lines if line.startswith("progress: ")]
    assert progress, text
    assert all(PROGRESS.fullmatch(line) for line in progress), progress
    assert lines[len(progress) + 1] == "batchedit summary"
    assert "\r" not in text
    assert "\x1b" not in text


def test_plan_speaks_json_too(tmp_path: Path, emulator_process: StartEmulator) -> None:
    """`plan --log-format json`: the start line, a skipped pair line and the summary are JSON."""
    state, targets = _seeded(tmp_path, 40)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"{targets[0]['From_Account']},{targets[0]['To_Account']}\nlonely\n")
    emulator = emulator_process(state=state)
    output = tmp_path / "plan.jsonl"
    args = ["plan", str(pairs), "--since", "2023-01-01", "--until", "2024-12-31", "--replace",
            "original", "edited", "--output", str(output), "--log-format", "json"]  # fmt: skip
    result = CliRunner(env=cli_env(emulator.url)).invoke(main, args)
    assert result.exit_code == 1, result.output
    rows = _rows(result.output)
    assert [row["event"] for row in rows] == ["skipped", "start", "summary", "wrote"]
    assert rows[2]["conversations"] == 1
    assert rows[2]["planned"] >= 1
    assert rows[3]["path"] == str(output)
