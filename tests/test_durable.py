"""Logs that survive a crash and a second run: torn rows, fsync before the edit, one run per log."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from click.testing import CliRunner

from batchedit.cli import main
from batchedit.emulator import Store
from batchedit.jsonlog import JsonlAppender
from batchedit.results import ResumeIndex
from batchedit.runner import run_batch
from tests.conftest import EmulatorFactory, EmulatorProcess, ServerFactory, cli_env
from tests.helpers import (
    ADMIN,
    read_results,
    seed_messages,
    text_body,
    write_edits,
)
from tests.wrapped import Handler, run_config, serve_behind

StartEmulator = Callable[..., EmulatorProcess]


def _seeded(tmp_path: Path, count: int) -> tuple[Path, bytes, list[dict[str, Any]]]:
    """A saved emulator state of ``count`` messages, its bytes, and one text edit of each."""
    store = Store()
    store.import_account(ADMIN)
    targets = seed_messages(store, count)
    state = tmp_path / "seed.jsonl"
    store.save(state)
    edits = [{**t, "MsgBody": text_body(f"edit {i}")} for i, t in enumerate(targets)]
    return state, state.read_bytes(), edits


def _batchedit(*args: str | Path, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchedit", *map(str, args), "--quiet"],
        env=cli_env(url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _tear(path: Path, fragment: bytes) -> None:
    """Append what a writer killed mid-row leaves: part of a row, no newline."""
    with path.open("ab") as log:
        log.write(fragment)


def test_torn_results_and_backup_rows_resume_and_undo_exactly(
    tmp_path: Path, emulator_process: StartEmulator
) -> None:
    """A run killed mid-row leaves a torn last row in RESULTS and BACKUP: --resume cuts both
    (saying so), redoes exactly the undone lines, and undo over a torn backup restores the
    original state byte for byte."""
    state, original, edits = _seeded(tmp_path, 60)
    emulator = emulator_process(state=state)
    path = write_edits(tmp_path / "edits.jsonl", edits)
    first_half = write_edits(tmp_path / "half.jsonl", edits[:30])
    results, backup = tmp_path / "results.jsonl", tmp_path / "backup.jsonl"
    done = _batchedit("run", first_half, "--results", results, "--backup", backup, url=emulator.url)
    assert done.returncode == 0, done.stderr
    torn_result, torn_image = b'{"line":31,"MsgKey":"7_7_17', b'{"line":31,"From_Account":"u1'
    _tear(results, torn_result)
    _tear(backup, torn_image)

    resumed = _batchedit(
        "run", path, "--results", results, "--backup", backup, "--resume", url=emulator.url
    )
    assert resumed.returncode == 0, resumed.stderr
    for log, fragment in ((results, torn_result), (backup, torn_image)):
        cut = f"{log}: its last row was torn by a crash ({len(fragment)} bytes without a newline)"
        assert cut in resumed.stderr
    rows = [orjson.loads(raw) for raw in results.read_bytes().splitlines()]
    assert sorted(row["line"] for row in rows) == list(range(1, 61))
    assert {row["outcome"] for row in rows} == {"ok"}
    assert len(backup.read_bytes().splitlines()) == 60
    assert emulator.get("/__emulator/stats")["openim/modify_c2c_msg"]["arrivals"] == 60

    _tear(backup, torn_image)
    undone = _batchedit("undo", backup, "--results", tmp_path / "undo.jsonl", url=emulator.url)
    assert undone.returncode == 0, undone.stderr
    ignored = f"{backup}: its last row (line 61) was torn by a crash ({len(torn_image)} bytes"
    assert ignored in undone.stderr
    assert emulator.stop() == original


def test_a_log_without_a_torn_row_is_left_alone(tmp_path: Path) -> None:
    """Opening a whole log changes nothing; a torn row is cut back to the last newline, even
    when the fragment is longer than one read of the tail."""
    log = tmp_path / "log.jsonl"
    log.write_bytes(b'{"a":1}\n')
    with JsonlAppender(log) as appender:
        appender.append({"b": 2})
    assert log.read_bytes() == b'{"a":1}\n{"b":2}\n'
    _tear(log, b"x" * 200_000)
    with JsonlAppender(log) as appender:
        appender.append({"c": 3})
    assert log.read_bytes() == b'{"a":1}\n{"b":2}\n{"c":3}\n'
    log.write_bytes(b"no newline at all")
    with JsonlAppender(log):
        pass
    assert log.read_bytes() == b""


async def test_each_before_image_is_on_disk_before_its_edit_arrives(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """When an edit reaches the server, its message's before-image is already in BACKUP."""
    backup = tmp_path / "backup.jsonl"
    late: list[str] = []

    async def check_backup(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.endswith("modify_c2c_msg"):
            key = orjson.loads(await request.read())["MsgKey"]
            if f'"MsgKey":"{key}"'.encode() not in backup.read_bytes():
                late.append(key)
        return await handler(request)

    emulator, url = await serve_behind(aiohttp_server, check_backup)
    targets = seed_messages(emulator.store, 200)
    path = write_edits(tmp_path / "edits.jsonl", [{**t, "CloudCustomData": "x"} for t in targets])
    with path.open("rb") as source:
        summary = await run_batch(source, run_config(url, tmp_path, backup=backup, concurrency=32))
    assert summary.all_ok
    assert emulator.traffic.of("openim/modify_c2c_msg").arrivals == 200
    assert late == []


def _stalled_run(emulator: EmulatorProcess, edits: Path, *args: str | Path) -> Any:
    """A ``batchedit run`` holding its logs, stuck on an answer that takes a minute."""
    process = subprocess.Popen(
        [sys.executable, "-m", "batchedit", "run", str(edits), "--quiet", "--concurrency", "1"]
        + [str(a) for a in args],
        env=cli_env(emulator.url),
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not any(s.get("arrivals") for s in emulator.get("/__emulator/stats").values()):
        assert process.poll() is None, "the run ended before sending"
        assert time.monotonic() < deadline, "the run did not start sending"
        time.sleep(0.02)
    return process


def test_a_second_run_on_the_same_logs_exits_2_naming_the_first(
    tmp_path: Path, emulator_process: StartEmulator
) -> None:
    """While a run holds RESULTS and BACKUP, another run or an undo on either exits 2 naming
    the first run's pid, sends nothing, and leaves no RESULTS it made behind (one that was
    there stays)."""
    state, _, edits = _seeded(tmp_path, 5)
    emulator = emulator_process("--slow-rate", "1", "--slow-seconds", "60", state=state)
    path = write_edits(tmp_path / "edits.jsonl", edits)
    results, backup = tmp_path / "results.jsonl", tmp_path / "backup.jsonl"
    first = _stalled_run(emulator, path, "--results", results, "--backup", backup)
    try:
        held = f"is in use by another batchedit run (pid {first.pid})"
        again = _batchedit("run", path, "--results", results, url=emulator.url)
        assert again.returncode == 2
        assert again.stderr == (
            f"Error: {results} {held}: wait for it to end (two runs on one log would both "
            "send everything)\n"
        )
        other = tmp_path / "other.jsonl"
        same_backup = _batchedit(
            "run", path, "--results", other, "--backup", backup, url=emulator.url
        )
        assert (same_backup.returncode, held in same_backup.stderr) == (2, True)
        assert not other.exists()
        there = tmp_path / "there.jsonl"
        there.touch()
        kept = _batchedit("run", path, "--results", there, "--backup", backup, url=emulator.url)
        assert (kept.returncode, there.exists()) == (2, True)
        undo = _batchedit("undo", backup, "--results", other, url=emulator.url)
        assert (undo.returncode, f"{backup} {held}" in undo.stderr) == (2, True)
        assert not other.exists()
        stats = emulator.get("/__emulator/stats")
        assert sum(s.get("arrivals", 0) for s in stats.values()) == 1
    finally:
        first.kill()
        first.wait(timeout=20)


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (b'{"line":1,"outcome":"ok"}', "hash: must be 16 hex digits"),
        (b'{"line":-1,"outcome":"ok","hash":"0000000000000000"}', "line: must be a positive"),
        (b'{"line":true,"outcome":"ok","hash":"0000000000000000"}', "line: must be a positive"),
        (b'{"line":1,"outcome":"ok","hash":"-000000000000001"}', "hash: must be 16 hex digits"),
        (b'{"line":1,"outcome":"done","hash":"0000000000000000"}', "outcome: must be ok"),
        (b"[1, 2]", "not a JSON object"),
        (b"\xff\xfe garbage", "not JSON"),
        (b'{"line":1,"outcome":"ok","hash":"0000000000000000","at":1e11}', "at: must be UNIX"),
        (b'{"line":1,"outcome":"ok","hash":"0000000000000000","at":"x"}', "at: must be UNIX"),
        (
            b'{"line":1,"outcome":"ok","hash":"0000000000000000","latency_ms":1e308}',
            "latency_ms: must be a number",
        ),
        (b"", "not JSON"),
    ],
)
def test_a_damaged_results_row_stops_resume_naming_file_and_line(
    row: bytes, problem: str, tmp_path: Path, emulator_process: StartEmulator
) -> None:
    """Any damage but a torn last row makes --resume exit 2 naming the file and line; nothing
    is sent."""
    state, _, edits = _seeded(tmp_path, 3)
    emulator = emulator_process(state=state)
    path = write_edits(tmp_path / "edits.jsonl", edits)
    results = tmp_path / "results.jsonl"
    good = b'{"line":1,"outcome":"ok","hash":"0000000000000000"}\n'
    results.write_bytes(good + row + b"\n" + good)
    result = _batchedit("run", path, "--results", results, "--resume", url=emulator.url)
    assert result.returncode == 2
    assert result.stderr.startswith(f"Error: {results}: line 2: not a results row ({problem}")
    assert "fix or remove that line by hand" in result.stderr
    assert emulator.get("/__emulator/stats").get("openim/modify_c2c_msg", {}) == {}


async def test_huge_line_numbers_in_results_cost_no_memory(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """A results row for line 10**12 (or 2**63 - 1) neither exhausts memory nor hides a line:
    --resume sends every line not done."""
    running = await start_emulator()
    edits = [{**t, "CloudCustomData": "y"} for t in seed_messages(running.emulator.store, 20)]
    path = write_edits(tmp_path / "edits.jsonl", edits)
    results = tmp_path / "results.jsonl"
    far = [10**12, 2**63 - 1, 5_000_000]
    results.write_bytes(
        b"".join(
            orjson.dumps({"line": n, "outcome": "ok", "hash": "0123456789abcdef"}) + b"\n"
            for n in far
        )
    )
    index = ResumeIndex.load(results)
    assert len(index) == 3
    assert index.is_done(10**12, "0123456789abcdef")
    config = run_config(running.url, tmp_path, results=results, resume=True)
    with path.open("rb") as source:
        summary = await run_batch(source, config)
    assert summary.all_ok
    assert running.emulator.traffic.of("openim/modify_c2c_msg").arrivals == 20
    assert sorted(read_results(results))[:20] == list(range(1, 21))


def test_resume_index_keeps_the_last_row_of_a_line_wherever_it_is_stored() -> None:
    """A row far beyond the dense range is kept apart; once a million rows bring the dense
    arrays up to its line, a later row for that line still wins."""
    index = ResumeIndex()
    index._set(3_000_000, 7, 1)
    assert index.is_done(3_000_000, "0000000000000007")
    for line in range(1, 1_000_001):
        index._set(line, 1, 1)
    index._set(3_000_000, 7, 0)  # a failed retry, stored in the dense arrays this time
    assert not index.is_done(3_000_000, "0000000000000007")
    assert len(index) == 1_000_000


def test_dry_run_resume_reads_a_torn_log_without_changing_it(tmp_path: Path) -> None:
    """A dry run holds no lock and writes nothing: it ignores the torn row and says so."""
    edits = write_edits(tmp_path / "e.jsonl", [])
    results = tmp_path / "r.jsonl"
    results.write_bytes(b'{"line":1,"outcome":"ok","hash":"0000000000000000"}\n{"li')
    result = CliRunner().invoke(
        main, ["run", str(edits), "--dry-run", "--resume", "--results", str(results)]
    )
    assert result.exit_code == 0, result.output
    assert f"{results}: its last row (line 2) was torn by a crash (4 bytes" in result.output
    assert results.read_bytes().endswith(b'{"li')
