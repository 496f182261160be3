"""A run's lifecycle against the real emulator: errors inside workers, broken logs and inputs,
bad lines, cancellation, the second Ctrl-C and the grace period. None of these may hang."""

from __future__ import annotations

import asyncio
import io
import os
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchedit import Secret, SigSource
from batchedit.emulator import Faults
from batchedit.im.client import RoamMessage
from batchedit.outcomes import Outcome, Summary
from batchedit.plan import run_plan
from batchedit.retry import RetryPolicy
from batchedit.rules import Rules
from batchedit.runner import RunConfig, run_batch
from batchedit.sender import RunControl
from batchedit.wiring import ApiConfig
from tests.conftest import EmulatorFactory, Running
from tests.helpers import (
    ADMIN,
    SDKAPPID,
    SECRET,
    InterruptAfter,
    read_results,
    seed_messages,
    write_edits,
)

HANG_GUARD = 60.0
"""Seconds after which a run counts as hung; never reached when it behaves."""
FULL_DISK = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not FULL_DISK.exists(), reason="needs Linux's /dev/full")


def _config(running: Running, results: Path | None, **options: Any) -> RunConfig:
    settings: dict[str, Any] = {
        "results": results,
        "endpoint": running.url,
        "sig": SigSource(SDKAPPID, ADMIN, secret_key=Secret(SECRET)),
        "rate": None,
        "policy": RetryPolicy.zero_wait(),
        **options,
    }
    return RunConfig(**settings)


async def _run(
    source: Any, config: RunConfig, control: RunControl | None = None, observer: Any = None
) -> Summary:
    return await asyncio.wait_for(
        run_batch(source, config, control=control, observer=observer), HANG_GUARD
    )


def _edits(targets: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [{**t, "CloudCustomData": f"edited {i}"} for i, t in enumerate(targets)]


async def _until_arrivals(running: Running, count: int) -> None:
    traffic = running.emulator.traffic

    async def poll() -> None:
        # The emulator's counters have no event to wait on: poll them.
        while traffic.of("openim/modify_c2c_msg").arrivals < count:  # noqa: ASYNC110
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), HANG_GUARD)


@needs_dev_full
async def test_results_log_on_a_full_disk_stops_the_run(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """A results log that cannot be written stops the run as fatal, saying so; every outcome
    the log could not take is counted, and every edit sent has one."""
    running = await start_emulator(rate_limit=None)
    path = write_edits(tmp_path / "e.jsonl", _edits(seed_messages(running.emulator.store, 600)))
    with path.open("rb") as source:
        summary = await _run(source, _config(running, FULL_DISK, concurrency=8))
    assert summary.stopped == "fatal"
    assert summary.reason.startswith("cannot write the results log /dev/full (")
    assert "No space left on device" in summary.reason
    assert 0 < summary.total < 600
    assert summary.unrecorded == summary.total
    assert summary.sent_records == running.emulator.traffic.of("openim/modify_c2c_msg").arrivals
    assert "NOT IN THE RESULTS LOG" in summary.render()


class _BrokenObserver(InterruptAfter):
    """An observer with a bug: its ``count``-th outcome raises, once."""

    def outcome(self, outcome: Outcome) -> None:
        self._left -= 1
        if self._left == 0:
            raise RuntimeError("observer bug")


async def test_an_error_inside_a_worker_stops_the_run_as_fatal(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """An exception inside a worker's handler (here a library caller's observer with a bug)
    stops the run as fatal with the error and the line; every line is either in the results
    log, once, or counted as never sent."""
    running = await start_emulator(rate_limit=None)
    path = write_edits(tmp_path / "e.jsonl", _edits(seed_messages(running.emulator.store, 900)))
    results = tmp_path / "r.jsonl"
    config = _config(running, results, concurrency=4)
    with path.open("rb") as source:
        summary = await _run(source, config, observer=_BrokenObserver(5, RunControl()))
    assert summary.stopped == "fatal"
    assert summary.reason.endswith(": RuntimeError: observer bug; run again with --resume")
    final = read_results(results)
    assert summary.total == len(final) == len(results.read_text().splitlines())
    assert len(final) + summary.unsent == 900


def _deep_line(target: dict[str, str], depth: int) -> bytes:
    nested = b"[" * depth + b"]" * depth
    head = orjson.dumps({**target, "MsgBody": [{"MsgType": "TIMCustomElem"}]})[:-3]
    return head + b',"MsgContent":{"Data":"x","Extra":' + nested + b"}}]}"


@pytest.mark.parametrize("depth", [255, 1000])
async def test_a_deeply_nested_line_is_one_invalid_line(
    depth: int, start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """JSON nested hundreds of levels inside a pass-through field is one invalid line, in a
    real run, a dry run and a resumed run that has to parse it again."""
    running = await start_emulator()
    targets = seed_messages(running.emulator.store, 3)
    lines = [orjson.dumps(e) for e in _edits(targets)]
    lines.insert(1, _deep_line(targets[0], depth))
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    results = tmp_path / "r.jsonl"
    with path.open("rb") as source:
        dry = await _run(source, RunConfig(dry_run=True))
    assert (dry.statuses["ok"], dry.statuses["invalid"]) == (3, 1)
    running.emulator.faults.update({"key_codes": {targets[0]["MsgKey"]: 20005}})
    with path.open("rb") as source:
        first = await _run(source, _config(running, results))
    assert read_results(results)[2]["ErrorInfo"] == (
        "line 2: cannot be encoded as a request body (Recursion limit reached); nothing is sent"
    )
    assert (first.statuses["ok"], first.statuses["failed"], first.statuses["invalid"]) == (2, 1, 1)
    running.emulator.faults.update({"key_codes": {}})
    with path.open("rb") as source:
        resumed = await _run(source, _config(running, results, resume=True))
    # Line 1 is redone, so line 2 (its message) is parsed again, and found done as invalid.
    assert (resumed.statuses["ok"], resumed.statuses["invalid"], resumed.skipped) == (1, 0, 3)


class _Broken(io.RawIOBase):
    """An input whose device fails after the first line."""

    def __init__(self, first: bytes) -> None:
        self._first: bytes | None = first

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._first is None:
            raise OSError(5, "Input/output error")
        size = len(self._first)
        buffer[:size] = self._first
        self._first = None
        return size


async def test_an_input_that_fails_to_read_stops_the_run(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """An I/O error on the input stops the run as fatal with the error, like any fatal answer."""
    running = await start_emulator()
    target = seed_messages(running.emulator.store, 1)[0]
    source = io.BufferedReader(_Broken(orjson.dumps({**target, "CloudCustomData": "x"}) + b"\n"))
    summary = await _run(source, _config(running, tmp_path / "r.jsonl"))
    assert summary.stopped == "fatal"
    assert summary.reason == "cannot read the input: OSError: [Errno 5] Input/output error"


async def test_a_stop_ends_a_run_waiting_on_a_quiet_pipe(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """A run reading a pipe that stays open and quiet still ends when it is stopped."""
    running = await start_emulator()
    edits = _edits(seed_messages(running.emulator.store, 3))
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"".join(orjson.dumps(e) + b"\n" for e in edits))
        control = RunControl()
        with io.BufferedReader(io.FileIO(read_end, "rb", closefd=False)) as source:
            summary = await _run(
                source, _config(running, tmp_path / "r.jsonl"), control, InterruptAfter(3, control)
            )
    finally:
        os.close(read_end)
        os.close(write_end)
    assert summary.stopped == "interrupted"
    assert summary.statuses["ok"] == 3


async def _slow_run(
    start_emulator: EmulatorFactory, tmp_path: Path, control: RunControl | None, **options: Any
) -> tuple[Running, asyncio.Task[Summary], Path]:
    """A run of 40 edits that the emulator applies at once but answers only after 60 s."""
    running = await start_emulator(faults=Faults(slow_rate=1.0, slow_seconds=60))
    path = write_edits(tmp_path / "e.jsonl", _edits(seed_messages(running.emulator.store, 40)))
    results = tmp_path / "r.jsonl"
    config = _config(running, results, concurrency=4, timeout=120.0, **options)
    source = path.open("rb")
    task = asyncio.create_task(run_batch(source, config, control=control))
    task.add_done_callback(lambda _: source.close())
    await _until_arrivals(running, 4)
    return running, task, results


def _interrupted_in_flight(results: Path) -> list[int]:
    final = read_results(results)
    info = "interrupted in flight: the edit may or may not have been applied"
    assert all(row["ErrorInfo"] == info for row in final.values())
    return sorted(final)


async def test_cancelling_run_batch_records_the_edits_in_flight(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """A library caller that cancels run_batch (a timeout, Ctrl-C under asyncio.run) gets
    CancelledError after the workers ended and each in-flight line was recorded."""
    _, task, results = await _slow_run(start_emulator, tmp_path, None)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, HANG_GUARD)
    assert _interrupted_in_flight(results) == [1, 2, 3, 4]


async def test_second_ctrl_c_cancels_the_edits_in_flight(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """The first Ctrl-C waits for in-flight edits (here up to 60 s); the second cancels them at
    once, and each is recorded as interrupted in flight."""
    control = RunControl()
    _, task, results = await _slow_run(start_emulator, tmp_path, control, grace=HANG_GUARD * 2)
    control.interrupt()
    await asyncio.sleep(0.05)
    assert not task.done()
    control.cancel_now()
    summary = await asyncio.wait_for(task, HANG_GUARD)
    assert summary.stopped == "interrupted"
    assert summary.reason == "interrupted, then again: in-flight requests were cancelled"
    assert _interrupted_in_flight(results) == [1, 2, 3, 4]


async def test_in_flight_edits_are_cancelled_when_the_grace_period_expires(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """After one Ctrl-C, edits still in flight when --grace runs out are cancelled and recorded."""
    control = RunControl()
    _, task, results = await _slow_run(start_emulator, tmp_path, control, grace=0.05)
    control.interrupt()
    summary = await asyncio.wait_for(task, HANG_GUARD)
    assert summary.stopped == "interrupted"
    assert summary.reason == "interrupted: in-flight requests were let finish"
    assert _interrupted_in_flight(results) == [1, 2, 3, 4]


def _api(running: Running, key: str = SECRET) -> ApiConfig:
    sig = SigSource(SDKAPPID, ADMIN, secret_key=Secret(key))
    return ApiConfig(endpoint=running.url, sig=sig, rate=None, policy=RetryPolicy.zero_wait())


def _pairs(targets: list[dict[str, str]]) -> list[tuple[str, str]]:
    return sorted({(t["From_Account"], t["To_Account"]) for t in targets})


async def test_run_plan_writes_its_file_only_when_complete(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """run_plan writes OUTPUT.partial and renames it once every conversation was read; a fatal
    answer (a wrong key) stops it and leaves neither file."""
    running = await start_emulator()
    targets = seed_messages(running.emulator.store, 60)
    rules = Rules(((re.compile("original"), "changed"),))
    out = tmp_path / "plan.jsonl"
    stats = await run_plan(_pairs(targets), 0, 2**32 - 1, rules, _api(running), output=out)
    assert stats.stopped is None
    assert {orjson.loads(line)["MsgKey"] for line in out.read_bytes().splitlines()} == {
        t["MsgKey"] for t in targets
    }
    assert stats.requests == running.emulator.traffic.of("openim/admin_getroammsg").arrivals
    out.unlink()
    wrong = await run_plan(_pairs(targets), 0, 2**32 - 1, rules, _api(running, "bad"), output=out)
    assert wrong.stopped == "fatal"
    assert "70009" in wrong.reason
    assert not out.exists()
    assert not out.with_name("plan.jsonl.partial").exists()


async def test_an_error_inside_a_plan_worker_stops_planning(
    start_emulator: EmulatorFactory,
) -> None:
    """An exception while planning (here from the preview) stops the plan as fatal with the
    conversation and the error, instead of hanging or escaping as a traceback."""
    running = await start_emulator()
    targets = seed_messages(running.emulator.store, 60)
    rules = Rules(((re.compile("original"), "changed"),))

    def preview(edit: dict[str, Any], before: RoamMessage) -> bool:
        raise RuntimeError("the terminal went away")

    stats = await asyncio.wait_for(
        run_plan(_pairs(targets), 0, 2**32 - 1, rules, _api(running), preview=preview),
        HANG_GUARD,
    )
    assert stats.stopped == "fatal"
    assert stats.reason.endswith(": RuntimeError: the terminal went away")


async def test_a_stop_ends_a_rate_bound_run_without_waiting_out_the_queue(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """At 1 request per second with 100 workers queued for a grant, Ctrl-C after the first
    outcome ends the run at once (the queue would take 100 s; the grace is longer still): every
    edit that went out has its outcome, no line that never went out has one."""
    running = await start_emulator()
    path = write_edits(tmp_path / "e.jsonl", _edits(seed_messages(running.emulator.store, 300)))
    results = tmp_path / "r.jsonl"
    control = RunControl()
    config = _config(running, results, rate=1.0, concurrency=100, grace=HANG_GUARD * 2)
    with path.open("rb") as source:
        summary = await _run(source, config, control, InterruptAfter(1, control))
    assert summary.stopped == "interrupted"
    final = read_results(results)
    arrivals = running.emulator.traffic.of("openim/modify_c2c_msg").arrivals
    assert len(final) == arrivals
    assert {row["outcome"] for row in final.values()} == {"ok"}
