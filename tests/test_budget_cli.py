"""`--budget` end to end: real `batchedit run` processes, one emulator, one redis-server.

The rate is low and the margin wide (40 requests per 1.25 s window) so that only a stall of a
quarter second or more between grant and arrival could push the emulator's own 1-second count
over the limit: the assertions are the emulator's counts, which a busy machine cannot bend.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from batchedit.cli import main
from batchedit.emulator import Store
from tests.conftest import EmulatorProcess, RedisServer, cli_env, free_port
from tests.helpers import expected_state, read_results, seed_messages, text_body, write_edits

StartEmulator = Callable[..., EmulatorProcess]
StartRedis = Callable[[], RedisServer]
RATE = ["--rate", "40", "--rate-margin", "250"]


def _seeded(tmp_path: Path, processes: int, each: int) -> tuple[Path, list[list[dict[str, Any]]]]:
    """An emulator state with ``processes * each`` messages, and each process's edits."""
    store = Store()
    store.import_account("administrator")
    targets = seed_messages(store, processes * each)
    state = tmp_path / "seed.jsonl"
    store.save(state)
    edits = [{**t, "MsgBody": text_body(f"edit {i}")} for i, t in enumerate(targets)]
    return state, [edits[i * each : (i + 1) * each] for i in range(processes)]


def _start_runs(
    tmp_path: Path, parts: list[list[dict[str, Any]]], url: str, *extra: str
) -> list[subprocess.Popen[bytes]]:
    runs = []
    for i, edits in enumerate(parts):
        command = [sys.executable, "-m", "batchedit", "run", str(tmp_path / f"edits{i}.jsonl")]
        write_edits(tmp_path / f"edits{i}.jsonl", edits)
        command += ["--results", str(tmp_path / f"results{i}.jsonl"), "--quiet", *RATE, *extra]
        command += ["--summary-json", str(tmp_path / f"summary{i}.json")]
        runs.append(
            subprocess.Popen(
                command, env=cli_env(url), stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        )
    return runs


def _finish(runs: list[subprocess.Popen[bytes]]) -> list[tuple[int, str]]:
    """Each run's exit status and stderr, once it ended."""
    stderrs = [run.communicate(timeout=120)[1].decode() for run in runs]
    return [(run.returncode, stderr) for run, stderr in zip(runs, stderrs, strict=True)]


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_sharing_a_budget_keep_the_server_within_it(
    processes: int, tmp_path: Path, emulator_process: StartEmulator, redis_server: StartRedis
) -> None:
    """Runs sharing --budget: every edit ok, and the emulator never saw more than the rate in
    any sliding second, so never refused one; no run was starved of its turns."""
    state, parts = _seeded(tmp_path, processes, 100 // processes)
    emulator = emulator_process("--rate-limit", "40", state=state)
    budget = redis_server()
    runs = _start_runs(tmp_path, parts, emulator.url, "--budget", budget.url)
    for status, stderr in _finish(runs):
        assert status == 0, stderr
    seen = emulator.get("/__emulator/stats")["openim/modify_c2c_msg"]
    assert seen["max_window_arrivals"] <= 40
    assert seen["codes"] == {"0": 100}
    for i in range(processes):
        summary = orjson.loads((tmp_path / f"summary{i}.json").read_bytes())
        assert summary["achieved_rate"] >= 32 / processes / 3


def test_losing_redis_midway_stops_every_run_with_every_line_accounted_for(
    tmp_path: Path, emulator_process: StartEmulator, redis_server: StartRedis
) -> None:
    """Redis killed mid-run: each run exits 3 naming the lost budget, having let in-flight edits
    finish; every request the server saw has its outcome logged; --resume completes the rest."""
    state, parts = _seeded(tmp_path, 2, 200)
    expected = expected_state(Store.load(state.read_bytes().splitlines()), parts[0] + parts[1])
    emulator = emulator_process("--latency-ms", "2-15", state=state)
    budget = redis_server()
    runs = _start_runs(tmp_path, parts, emulator.url, "--budget", budget.url)
    deadline = time.monotonic() + 60
    while min(_logged(tmp_path, i) for i in range(2)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    budget.kill()
    for status, stderr in _finish(runs):
        assert status == 3, stderr
        assert f"STOPPED (budget): lost the shared request budget at {budget.url}" in stderr
    first = [read_results(tmp_path / f"results{i}.jsonl") for i in range(2)]
    assert all(len(done) < 200 for done in first)
    attempts = sum(row["attempts"] for done in first for row in done.values())
    assert emulator.get("/__emulator/stats")["openim/modify_c2c_msg"]["arrivals"] == attempts
    resumed = _start_runs(tmp_path, parts, emulator.url, "--resume", "--rate", "400")
    for status, stderr in _finish(resumed):
        assert status == 0, stderr
    for i in range(2):
        final = read_results(tmp_path / f"results{i}.jsonl")
        assert sorted(final) == list(range(1, 201))
        assert {row["outcome"] for row in final.values()} == {"ok"}
    assert emulator.stop() == expected


def _logged(tmp_path: Path, run: int) -> int:
    path = tmp_path / f"results{run}.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.parametrize("command", ["run", "undo", "plan"])
def test_unreachable_budget_exits_2_before_anything_is_written(
    command: str, tmp_path: Path
) -> None:
    """No Redis where --budget (or TIM_BUDGET) points: exit 2 with the reason, no results."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    edits = write_edits(tmp_path / "edits.jsonl", [])
    results = tmp_path / "results.jsonl"
    args = {
        "run": ["run", str(edits), "--results", str(results)],
        "undo": ["undo", str(edits), "--results", str(results)],
        "plan": ["plan", str(edits), "--since", "0", "--until", "1", "--replace", "a", "b"],
    }[command]
    env = {
        "TIM_SDKAPPID": "1400000000",
        "TIM_SECRET_KEY": "k",
        "TIM_BASE_URL": "http://127.0.0.1:1",
    }
    if command == "plan":
        args += ["--preview", "1"]
    result = CliRunner(env={**env, "TIM_BUDGET": url}).invoke(main, args)
    assert result.exit_code == 2, result.output
    assert f"Error: cannot reach the shared request budget at {url}" in result.output
    assert not results.exists()
