"""The command line: exit codes, exact messages, and runs in subprocesses that get killed."""

from __future__ import annotations

import re
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
from batchedit.im import usersig
from tests.conftest import EmulatorProcess, cli_env
from tests.helpers import (
    SECRET,
    expected_state,
    read_results,
    seed_messages,
    text_body,
    write_edits,
)

CORPUS = Path(__file__).parent / "data" / "bad_input.jsonl"
StartEmulator = Callable[..., EmulatorProcess]


def _runner() -> CliRunner:
    return CliRunner(
        env={
            "TIM_SECRET_KEY": None,
            "TIM_SDKAPPID": None,
            "TIM_USERSIG": None,
            "TIM_BASE_URL": None,
            "TIM_REGION": None,
        }
    )


def test_help_explains_the_exit_codes() -> None:
    """`run --help` documents every exit status a script may see."""
    result = _runner().invoke(main, ["run", "--help"])
    assert result.exit_code == 0
    expected = (
        "0    every line ok",
        "1    some line failed or was invalid",
        "2    usage or configuration error",
        "3    run aborted",
        "130  interrupted",
    )
    for line in expected:
        assert line in result.output


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], {}, "Error: --results is required (unless --dry-run)\n"),
        (
            ["--results", "r.jsonl"],
            {},
            "Error: no endpoint: set TIM_REGION (or --region) or TIM_BASE_URL (or --base-url)\n",
        ),
        (
            ["--results", "r.jsonl", "--region", "mars"],
            {},
            "Error: unknown region 'mars'; known: china, singapore, seoul, tokyo, frankfurt, "
            "mumbai, silicon-valley, jakarta\n",
        ),
        (
            ["--results", "r.jsonl", "--base-url", "http://127.0.0.1:9"],
            {},
            "Error: no SDKAppID: set TIM_SDKAPPID or pass --sdkappid\n",
        ),
        (
            ["--results", "r.jsonl", "--base-url", "http://127.0.0.1:9"],
            {"TIM_SDKAPPID": "1"},
            "Error: no credentials: set TIM_SECRET_KEY, pass --secret-key-file, or set "
            "TIM_USERSIG\n",
        ),
        (
            [
                "--results",
                "r.jsonl",
                "--base-url",
                "http://127.0.0.1:9",
                "--secret-key-file",
                "missing.key",
            ],
            {"TIM_SDKAPPID": "1"},
            "Error: cannot read the secret key file: No such file or directory\n",
        ),
    ],
)
def test_configuration_errors_exit_2_with_a_hint(
    args: list[str], env: dict[str, str], message: str, tmp_path: Path
) -> None:
    """A missing or wrong setting exits 2 and says what to set; nothing is sent."""
    edits = write_edits(tmp_path / "e.jsonl", [])
    result = _runner().invoke(main, ["run", str(edits), *args], env=env)
    assert (result.exit_code, result.output) == (2, message)


def test_dry_run_reports_invalid_lines_and_exits_1(tmp_path: Path) -> None:
    """--dry-run lists each invalid line, counts the rest as valid (not ok, no ErrorCode),
    writes no results, exits 1."""
    result = _runner().invoke(main, ["run", str(CORPUS), "--dry-run"])
    assert result.exit_code == 1
    assert "invalid: line 3: Msgbody: unknown field (did you mean 'MsgBody'?)" in result.output
    assert "invalid: line 18: longer than 65536 bytes, not read" in result.output
    assert "dry run: nothing sent" in result.output
    assert "outcomes: valid 5, invalid 17\n" in result.output
    assert "by ErrorCode" not in result.output


def _seed_state(tmp_path: Path, count: int) -> tuple[Path, list[dict[str, str]]]:
    store = Store()
    store.import_account("administrator")
    targets = seed_messages(store, count)
    path = tmp_path / "seed.jsonl"
    store.save(path)
    return path, targets


def _edits_with_repeats(targets: list[dict[str, str]]) -> list[dict[str, Any]]:
    edits: list[dict[str, Any]] = []
    for i, target in enumerate(targets):
        edits.append({**target, "MsgBody": text_body(f"edit {i}")})
        if i % 10 == 0:
            edits.append({**targets[i // 2], "CloudCustomData": f"later {i}"})
    return edits


def _run_cli(edits: Path, results: Path, url: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchedit",
            "run",
            str(edits),
            "--results",
            str(results),
            "--quiet",
            *extra,
        ],
        env=cli_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for_lines(results: Path, count: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if results.exists() and results.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.02)
    raise AssertionError("the run did not get far enough before the deadline")


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_killed_then_resumed_every_line_once_and_state_exact(
    how: signal.Signals, tmp_path: Path, emulator_process: StartEmulator
) -> None:
    """Killed (SIGKILL) or interrupted (SIGINT) midway, then --resume: every line has one final
    outcome, and the server's state equals the edits applied in file order."""
    state, targets = _seed_state(tmp_path, 1200)
    edits = _edits_with_repeats(targets)
    expected = expected_state(Store.load(state.read_bytes().splitlines()), edits)
    emulator = emulator_process("--latency-ms", "2-15", "--transient-rate", "0.05", state=state)
    path = write_edits(tmp_path / "edits.jsonl", edits)
    results = tmp_path / "results.jsonl"
    first = _run_cli(path, results, emulator.url, "--rate", "400")
    _wait_for_lines(results, 300, first)
    first.send_signal(how)
    _, stderr = first.communicate(timeout=60)
    if how is signal.SIGINT:
        assert first.returncode == 130
        assert b"STOPPED (interrupted)" in stderr
    else:
        assert first.returncode == -signal.SIGKILL
    done_before = len(read_results(results))
    assert done_before < len(edits)
    second = _run_cli(path, results, emulator.url, "--rate", "400", "--resume")
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 0, stderr.decode()
    final = read_results(results)
    assert sorted(final) == list(range(1, len(edits) + 1))
    assert {row["outcome"] for row in final.values()} == {"ok"}
    assert emulator.stop() == expected


def test_secrets_never_reach_results_or_output(
    tmp_path: Path, emulator_process: StartEmulator
) -> None:
    """Neither the secret key nor the UserSig appears in results, stdout, stderr or summary."""
    state, targets = _seed_state(tmp_path, 30)
    emulator = emulator_process("--drop-rate", "0.3", "--http-502-rate", "0.2", state=state)
    path = write_edits(tmp_path / "edits.jsonl", [{**t, "CloudCustomData": "s"} for t in targets])
    sig = usersig.generate(1400000000, SECRET, "administrator")
    env = cli_env(emulator.url)
    del env["TIM_SECRET_KEY"]
    env["TIM_USERSIG"] = sig
    summary = tmp_path / "s.json"
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "batchedit",
            "run",
            str(path),
            "--results",
            str(tmp_path / "r.jsonl"),
            "--summary-json",
            str(summary),
            "--max-attempts",
            "2",
        ],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    everything = (
        process.stdout + process.stderr + (tmp_path / "r.jsonl").read_bytes() + summary.read_bytes()
    )
    assert sig.encode() not in everything
    assert SECRET.encode() not in everything
    assert b"usersig=" not in everything.replace(b"usersig=<redacted>", b"")


def test_emulator_needs_a_secret() -> None:
    """The emulator refuses to start without a secret key, and says how to give one."""
    result = _runner().invoke(main, ["emulator", "--port", "0"])
    assert result.exit_code == 1
    assert result.output == "Error: no secret key: set TIM_SECRET_KEY or pass --secret-key-file\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replace", "a", "b"], "Error: give exactly one of --output FILE and --preview N\n"),
        (
            ["--replace", "(", "b", "--preview", "1"],
            "Error: bad --replace regex '(': missing ), unterminated subpattern at position 0\n",
        ),
        (
            ["--preview", "1"],
            "Error: no rules: give --replace, --rewrite-url, --set-cloud-custom-data, --ccd-set, "
            "--ccd-rename, --ccd-delete or --transform\n",
        ),
        (
            ["--set-cloud-custom-data", "$Nope", "--preview", "1"],
            "Error: bad template '$Nope' ('Nope'); it may use $MsgKey, $From_Account, $To_Account, "
            "$MsgTimeStamp, $CloudCustomData\n",
        ),
    ],
)
def test_plan_configuration_errors(args: list[str], message: str, tmp_path: Path) -> None:
    """plan refuses unclear requests with exit 2 and a hint, before reading anything."""
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a,b\n")
    result = _runner().invoke(
        main, ["plan", str(pairs), "--since", "2026-01-01", "--until", "2026-01-02", *args]
    )
    assert (result.exit_code, result.output) == (2, message)


def test_plan_times_must_be_in_order(tmp_path: Path) -> None:
    """--since after --until is a configuration error."""
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a,b\n")
    result = _runner().invoke(
        main,
        [
            "plan",
            str(pairs),
            "--since",
            "2026-02-01",
            "--until",
            "2026-01-01",
            "--preview",
            "1",
            "--replace",
            "a",
            "b",
        ],
    )
    assert (result.exit_code, result.output) == (
        2,
        "Error: --since (2026-02-01) is after --until (2026-01-01)\n",
    )


def test_undo_needs_a_readable_backup(tmp_path: Path) -> None:
    """undo with a missing backup file exits 2 and names it."""
    result = _runner().invoke(
        main,
        [
            "undo",
            str(tmp_path / "nope.jsonl"),
            "--results",
            str(tmp_path / "r.jsonl"),
            "--base-url",
            "http://127.0.0.1:9",
            "--sdkappid",
            "1",
        ],
        env={"TIM_SECRET_KEY": "x"},
    )
    assert result.exit_code == 2
    assert (
        result.output
        == f"Error: cannot read backup {tmp_path / 'nope.jsonl'}: No such file or directory\n"
    )


def test_plan_preview_and_output(tmp_path: Path, emulator_process: StartEmulator) -> None:
    """--preview prints before/after without writing; --output writes edits for `run`."""
    state, targets = _seed_state(tmp_path, 40)
    emulator = emulator_process(state=state)
    pairs = write_edits(tmp_path / "pairs.jsonl", targets)
    base = [
        sys.executable,
        "-m",
        "batchedit",
        "plan",
        str(pairs),
        "--since",
        "2023-01-01",
        "--until",
        "2024-01-01",
        "--replace",
        r"original (\d)$",
        r"edited \1",
    ]
    preview = subprocess.run(
        [*base, "--preview", "2"],
        env=cli_env(emulator.url),
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert preview.returncode == 0, preview.stderr.decode()
    shown = preview.stdout.decode()
    assert shown.count("  - TIMTextElem.Text: original ") == 2
    assert re.search(r"plan: [1-9]\d* conversations read", preview.stderr.decode())
    assert shown.count("  + TIMTextElem.Text: edited ") == 2
    out = tmp_path / "plan.jsonl"
    written = subprocess.run(
        [*base, "--output", str(out)],
        env=cli_env(emulator.url),
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert written.returncode == 0, written.stderr.decode()
    edits = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(edits) == 10  # "original 0" .. "original 9": one digit, then the end
    assert all(e["MsgBody"][0]["MsgContent"]["Text"].startswith("edited ") for e in edits)
    assert b"40 messages" in written.stderr
