"""The command line under signals and broken logs: every way of stopping ends the run, with its
summary and the right exit status. Each run is a subprocess against an emulator subprocess."""

from __future__ import annotations

import signal
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
from tests.conftest import EmulatorProcess, cli_env
from tests.helpers import read_results, seed_messages, write_edits

StartEmulator = Callable[..., EmulatorProcess]
DEADLINE = 60.0
"""Seconds any subprocess or wait loop gets; never reached when the run behaves."""


def _seed(tmp_path: Path, count: int) -> tuple[Path, list[dict[str, Any]]]:
    store = Store()
    store.import_account("administrator")
    edits = [{**t, "CloudCustomData": f"v{i}"} for i, t in enumerate(seed_messages(store, count))]
    state = tmp_path / "seed.jsonl"
    store.save(state)
    return state, edits


def _run(
    url: str, results: Path, edits: str, *extra: str, stdin: int | None = None
) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "batchedit", "run", edits, "--results", str(results), *extra]
    return subprocess.Popen(
        command, env=cli_env(url), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _wait_until(check: Callable[[], bool], process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline and process.poll() is None:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.parametrize(
    ("how", "said"),
    [
        (signal.SIGINT, "Ctrl-C: stopping, letting in-flight requests finish (Ctrl-C again "),
        (signal.SIGTERM, "SIGTERM: stopping, letting in-flight requests finish (SIGTERM again "),
        (signal.SIGHUP, "SIGHUP: stopping, letting in-flight requests finish (SIGHUP again "),
    ],
)
def test_a_signal_ends_a_run_waiting_on_a_quiet_stdin_pipe(
    how: signal.Signals, said: str, tmp_path: Path, emulator_process: StartEmulator
) -> None:
    """Ctrl-C, SIGTERM and SIGHUP each end a run that waits on an open, quiet pipe: summary,
    exit 130, and the message names the signal that came."""
    state, edits = _seed(tmp_path, 3)
    emulator = emulator_process(state=state)
    results = tmp_path / "r.jsonl"
    process = _run(emulator.url, results, "-", stdin=subprocess.PIPE)
    assert process.stdin is not None
    process.stdin.write(b"".join(orjson.dumps(e) + b"\n" for e in edits))
    process.stdin.flush()
    _wait_until(lambda: _lines(results) == 3, process, "three outcomes")
    process.send_signal(how)
    _, stderr = process.communicate(timeout=DEADLINE)
    text = stderr.decode()
    assert process.returncode == 130, text
    assert said in text
    assert "outcomes: ok 3, failed 0, invalid 0" in text
    assert "STOPPED (interrupted)" in text
    if how is not signal.SIGINT:
        assert "Ctrl-C" not in text


def test_a_second_signal_cancels_the_edits_in_flight(
    tmp_path: Path, emulator_process: StartEmulator
) -> None:
    """The first SIGTERM lets in-flight edits finish (here: answers 60 s away); the second
    cancels them, records each as interrupted in flight, and the run exits 130."""
    state, edits = _seed(tmp_path, 40)
    emulator = emulator_process("--slow-rate", "1", "--slow-seconds", "60", state=state)
    path = write_edits(tmp_path / "e.jsonl", edits)
    results = tmp_path / "r.jsonl"
    process = _run(
        emulator.url, results, str(path), "--concurrency", "4", "--timeout", "120", "--grace", "120"
    )

    def in_flight() -> bool:
        stats = emulator.get("/__emulator/stats").get("openim/modify_c2c_msg", {})
        return int(stats.get("arrivals", 0)) >= 4

    _wait_until(in_flight, process, "four edits in flight")
    process.send_signal(signal.SIGTERM)
    time.sleep(0.2)  # signals do not queue: let the first be taken before the second comes
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=DEADLINE)
    text = stderr.decode()
    assert process.returncode == 130, text
    assert "SIGTERM again: cancelling in-flight requests" in text
    assert "stopped by SIGTERM, then again: in-flight requests were cancelled" in text
    final = read_results(results)
    assert sorted(final) == [1, 2, 3, 4]
    assert {row["ErrorInfo"] for row in final.values()} == {
        "interrupted in flight: the edit may or may not have been applied"
    }


def test_results_over_the_file_size_limit_stop_the_run(
    tmp_path: Path, emulator_process: StartEmulator
) -> None:
    """The reproduction: results under `ulimit -f 20`. The run stops as fatal (exit 3) with
    the error shown and the outcomes it could not write counted, instead of hanging."""
    state, edits = _seed(tmp_path, 400)
    emulator = emulator_process(state=state)
    path = write_edits(tmp_path / "e.jsonl", edits)
    results = tmp_path / "r.jsonl"
    command = ["/bin/sh", "-c", 'ulimit -f 20 && exec "$0" "$@"', sys.executable, "-m"]
    command += ["batchedit", "run", str(path), "--results", str(results), "--rate", "0"]
    process = subprocess.run(
        command, env=cli_env(emulator.url), capture_output=True, timeout=DEADLINE, check=False
    )
    text = process.stderr.decode()
    assert process.returncode == 3, text
    assert f"STOPPED (fatal): cannot write the results log {results} (File too large)" in text
    assert "NOT IN THE RESULTS LOG: " in text
    assert 0 < _lines(results) < 400


def test_a_usersig_with_a_control_character_is_a_configuration_error(tmp_path: Path) -> None:
    """A TIM_USERSIG holding a control character is refused before anything is sent (exit 2)."""
    path = tmp_path / "e.jsonl"
    path.write_bytes(
        b'{"From_Account":"a","To_Account":"b","MsgKey":"1_1_1","CloudCustomData":""}\n'
    )
    env = {
        "TIM_SDKAPPID": "1400000000",
        "TIM_BASE_URL": "http://127.0.0.1:9",
        "TIM_SECRET_KEY": None,
        "TIM_USERSIG": "eJyrVgrxCdYrSy1SslIy0jNQ\x01",
        "TIM_REGION": None,
    }
    outcome = CliRunner(env=env).invoke(
        main, ["run", str(path), "--results", str(tmp_path / "r.jsonl")]
    )
    assert outcome.exit_code == 2
    assert outcome.output == (
        "Error: the ready-made UserSig (TIM_USERSIG) holds characters no UserSig has (only "
        "A-Z a-z 0-9 * - _): check how it was copied\n"
    )
    assert not (tmp_path / "r.jsonl").exists()


def test_an_interrupted_plan_writes_nothing(
    tmp_path: Path, emulator_process: StartEmulator
) -> None:
    """SIGTERM during `plan --output` stops it with exit 130 and leaves neither the output nor
    its .partial file."""
    state, edits = _seed(tmp_path, 200)
    emulator = emulator_process("--latency-ms", "20-40", state=state)
    pairs = write_edits(tmp_path / "pairs.jsonl", edits)
    out = tmp_path / "plan.jsonl"
    command = [sys.executable, "-m", "batchedit", "plan", str(pairs), "--since", "1600000000"]
    command += ["--until", "1800000000", "--replace", "original", "changed", "-o", str(out)]
    command += ["--concurrency", "1", "--rate", "20"]
    process = subprocess.Popen(
        command, env=cli_env(emulator.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )

    def reading() -> bool:
        stats = emulator.get("/__emulator/stats").get("openim/admin_getroammsg", {})
        return int(stats.get("arrivals", 0)) >= 2

    _wait_until(reading, process, "plan reading history")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=DEADLINE)
    text = stderr.decode()
    assert process.returncode == 130, text
    assert "STOPPED (interrupted): stopped by SIGTERM" in text
    assert not out.exists()
    assert not out.with_name("plan.jsonl.partial").exists()
