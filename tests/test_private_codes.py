"""Every private code of modify_c2c_msg's error table (spec section 2), end to end: run_batch
against the emulator, which answers the code for one line (--key-code) or for the first requests
(--fail-first), and the pipeline's reaction read back from the results log and the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchedit import Secret, SigSource
from batchedit.cli import exit_code_for
from batchedit.cli_common import EXIT_ABORTED, EXIT_OK, EXIT_SOME_FAILED
from batchedit.emulator import Faults
from batchedit.im.errors import FATAL_HINTS
from batchedit.outcomes import Summary
from batchedit.retry import RetryPolicy
from batchedit.runner import RunConfig, run_batch
from tests.conftest import EmulatorFactory, Running
from tests.helpers import ADMIN, SDKAPPID, SECRET, read_results, seed_messages, write_edits

TRANSIENT = (20004, 20005, 91000, 90992)
PERMANENT = (20001, 20003, 90001, 90002, 90003, 90007, 90010, 90012)
FATAL = (20002, 90009)
MAX_ATTEMPTS = 4


def test_the_three_lists_cover_the_table() -> None:
    """Together the lists below are exactly the private codes of spec section 2's table."""
    table = {20001, 20002, 20003, 20004, 20005, 90001, 90002, 90003, 90007, 90009, 90010}
    table |= {90012, 91000, 90992}
    assert sorted((*TRANSIENT, *PERMANENT, *FATAL)) == sorted(table)


async def _three_lines(
    start_emulator: EmulatorFactory, tmp_path: Path, faults: Faults
) -> tuple[Running, Path, list[dict[str, Any]]]:
    """An emulator holding three messages, and a batch editing each once, in that order."""
    running = await start_emulator(faults=faults, rate_limit=None)
    targets = seed_messages(running.emulator.store, 3)
    edits = [{**t, "CloudCustomData": f"edited {i}"} for i, t in enumerate(targets)]
    return running, write_edits(tmp_path / "edits.jsonl", edits), edits


async def _run(running: Running, edits: Path, results: Path, resume: bool = False) -> Summary:
    """One line at a time, no rate limit, zero-wait retries: the order of requests is fixed."""
    config = RunConfig(
        results=results,
        endpoint=running.url,
        sig=SigSource(SDKAPPID, ADMIN, secret_key=Secret(SECRET)),
        rate=None,
        concurrency=1,
        policy=RetryPolicy.zero_wait(max_attempts=MAX_ATTEMPTS),
        resume=resume,
    )
    with edits.open("rb") as source:
        return await run_batch(source, config)


def _edited(running: Running, edit: dict[str, Any]) -> bool:
    message = running.emulator.store.find(edit["From_Account"], edit["To_Account"], edit["MsgKey"])
    assert message is not None
    return bool(message.cloud_custom_data == edit["CloudCustomData"])


def _attempts(results: Path) -> dict[int, tuple[str, int | None, int]]:
    return {
        n: (r["outcome"], r["ErrorCode"], r["attempts"]) for n, r in read_results(results).items()
    }


@pytest.mark.parametrize("code", TRANSIENT)
async def test_transient_code_is_retried_then_ok(
    start_emulator: EmulatorFactory, tmp_path: Path, code: int
) -> None:
    """The first two answers are the transient code: line 1 is retried and ends ok on its third
    attempt, every line ends ok, and the server saw exactly the two failures."""
    faults = Faults(fail_first=2, fail_first_code=code)
    running, edits, lines = await _three_lines(start_emulator, tmp_path, faults)
    results = tmp_path / "results.jsonl"
    summary = await _run(running, edits, results)
    assert _attempts(results) == {1: ("ok", 0, 3), 2: ("ok", 0, 1), 3: ("ok", 0, 1)}
    assert (summary.stopped, exit_code_for(summary)) == (None, EXIT_OK)
    assert running.emulator.traffic.of("openim/modify_c2c_msg").codes == {code: 2, 0: 3}
    assert all(_edited(running, edit) for edit in lines)


@pytest.mark.parametrize("code", TRANSIENT)
async def test_transient_code_that_persists_fails_the_line_after_max_attempts(
    start_emulator: EmulatorFactory, tmp_path: Path, code: int
) -> None:
    """Line 2's message always answers the transient code: it fails after the retry budget with
    that code, and the run goes on to line 3."""
    running, edits, lines = await _three_lines(start_emulator, tmp_path, Faults())
    running.emulator.faults.update({"key_codes": {lines[1]["MsgKey"]: code}})
    results = tmp_path / "results.jsonl"
    summary = await _run(running, edits, results)
    assert _attempts(results) == {
        1: ("ok", 0, 1),
        2: ("failed", code, MAX_ATTEMPTS),
        3: ("ok", 0, 1),
    }
    assert (summary.stopped, exit_code_for(summary)) == (None, EXIT_SOME_FAILED)
    assert [_edited(running, edit) for edit in lines] == [True, False, True]


@pytest.mark.parametrize("code", PERMANENT)
async def test_permanent_code_fails_the_line_once_and_the_run_goes_on(
    start_emulator: EmulatorFactory, tmp_path: Path, code: int
) -> None:
    """Line 2 is answered a per-record code: it fails at once (one attempt, no retry) with that
    code, lines 1 and 3 are edited, and the run ends normally with exit status 1."""
    running, edits, lines = await _three_lines(start_emulator, tmp_path, Faults())
    running.emulator.faults.update({"key_codes": {lines[1]["MsgKey"]: code}})
    results = tmp_path / "results.jsonl"
    summary = await _run(running, edits, results)
    assert _attempts(results) == {1: ("ok", 0, 1), 2: ("failed", code, 1), 3: ("ok", 0, 1)}
    assert (summary.stopped, exit_code_for(summary)) == (None, EXIT_SOME_FAILED)
    assert running.emulator.traffic.of("openim/modify_c2c_msg").arrivals == 3
    assert [_edited(running, edit) for edit in lines] == [True, False, True]


@pytest.mark.parametrize("code", FATAL)
async def test_fatal_code_stops_the_run_with_the_hint(
    start_emulator: EmulatorFactory, tmp_path: Path, code: int
) -> None:
    """Line 2 is answered a credentials or permission code: the run stops (exit status 3) with
    the code and what to fix, line 3 is never sent, and --resume then finishes the batch."""
    running, edits, lines = await _three_lines(start_emulator, tmp_path, Faults())
    running.emulator.faults.update({"key_codes": {lines[1]["MsgKey"]: code}})
    results = tmp_path / "results.jsonl"
    summary = await _run(running, edits, results)
    assert (summary.stopped, exit_code_for(summary)) == ("fatal", EXIT_ABORTED)
    assert f"ErrorCode {code}" in summary.reason
    assert FATAL_HINTS[code] in summary.reason
    assert _attempts(results) == {1: ("ok", 0, 1), 2: ("failed", code, 1)}
    assert running.emulator.traffic.of("openim/modify_c2c_msg").arrivals == 2
    running.emulator.faults.update({"key_codes": {}})
    resumed = await _run(running, edits, results, resume=True)
    assert (resumed.stopped, resumed.skipped) == (None, 1)
    assert {row["outcome"] for row in read_results(results).values()} == {"ok"}
    assert all(_edited(running, edit) for edit in lines)
