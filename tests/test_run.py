"""run_batch end to end: the real client and pipeline against the real emulator on loopback."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from batchedit import Secret, SigSource
from batchedit.emulator import Faults, Message
from batchedit.im import usersig
from batchedit.outcomes import Summary
from batchedit.progress import Observer
from batchedit.retry import RetryPolicy
from batchedit.runner import RunConfig, run_batch
from batchedit.sender import RunControl
from tests.conftest import EmulatorFactory, Running
from tests.helpers import (
    ADMIN,
    SDKAPPID,
    SECRET,
    InterruptAfter,
    read_results,
    seed_messages,
    text_body,
    write_edits,
)

CORPUS = Path(__file__).parent / "data" / "bad_input.jsonl"


async def _run(
    running: Running,
    edits: Path,
    results: Path,
    *,
    key: str = SECRET,
    control: RunControl | None = None,
    observer: Observer | None = None,
    **options: Any,
) -> Summary:
    settings: dict[str, Any] = {"rate": None, "policy": RetryPolicy.zero_wait(), **options}
    config = RunConfig(
        results=results,
        endpoint=running.url,
        sig=SigSource(SDKAPPID, ADMIN, secret_key=Secret(key)),
        **settings,
    )
    with edits.open("rb") as source:
        return await run_batch(source, config, control=control, observer=observer)


def _ccd_edits(targets: list[dict[str, str]], tag: str = "edited") -> list[dict[str, Any]]:
    return [{**t, "CloudCustomData": f"{tag} {i}"} for i, t in enumerate(targets)]


async def test_3000_edits_through_transient_faults_all_ok(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """20 % transient codes and 2 % HTTP 502: every record ends ok, retries show in attempts."""
    faults = Faults(transient_rate=0.2, http_502_rate=0.02)
    running = await start_emulator(faults=faults, rate_limit=None, seed=3)
    edits = _ccd_edits(seed_messages(running.emulator.store, 3000))
    path = write_edits(tmp_path / "edits.jsonl", edits)
    summary = await _run(running, path, tmp_path / "results.jsonl", concurrency=64)
    final = read_results(tmp_path / "results.jsonl")
    assert len(final) == 3000
    assert {row["outcome"] for row in final.values()} == {"ok"}
    assert sum(row["attempts"] > 1 for row in final.values()) > 300
    assert summary.retries == sum(row["attempts"] - 1 for row in final.values())
    stats = running.emulator.traffic.of("openim/modify_c2c_msg")
    assert stats.http_statuses[502] > 0
    assert summary.all_ok


async def test_bad_input_corpus(start_emulator: EmulatorFactory, tmp_path: Path) -> None:
    """Each bad line is invalid with its reason and never sent; the good lines are all edited."""
    running = await start_emulator()
    store = running.emulator.store
    for name in ("alice", "bob"):
        store.import_account(name)
    for n in range(1, 9):
        store.add(Message("alice", "bob", n, n, 1_700_000_000, text_body("before")))
    results = tmp_path / "results.jsonl"
    summary = await _run(running, CORPUS, results)
    final = read_results(results)
    assert sorted(final) == list(range(1, 23))
    ok = sorted(line for line, row in final.items() if row["outcome"] == "ok")
    assert ok == [1, 2, 19, 20, 22]
    invalid = {line: row["ErrorInfo"] for line, row in final.items() if row["outcome"] == "invalid"}
    assert invalid[3].startswith("line 3: Msgbody: unknown field")
    assert all(row["ErrorCode"] is None for row in final.values() if row["outcome"] == "invalid")
    assert running.emulator.traffic.of("openim/modify_c2c_msg").arrivals == 5
    assert summary.statuses["invalid"] == 17
    assert not summary.all_ok
    first = store.find("alice", "bob", "1_1_1700000000")
    assert first is not None
    assert first.body == text_body("bom ok")


async def test_duplicate_keys_apply_in_file_order(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """Several edits of one message are never in flight together; the last line wins."""
    running = await start_emulator(faults=Faults(latency_ms=(1, 5), transient_rate=0.2))
    targets = seed_messages(running.emulator.store, 30)
    edits = []
    for round_ in range(5):
        edits += [{**t, "MsgBody": text_body(f"round {round_}")} for t in targets]
    path = write_edits(tmp_path / "edits.jsonl", edits)
    summary = await _run(running, path, tmp_path / "results.jsonl", concurrency=16)
    assert summary.all_ok
    store = running.emulator.store
    for t in targets:
        message = store.find(t["From_Account"], t["To_Account"], t["MsgKey"])
        assert message is not None
        assert message.body == text_body("round 4")
    assert running.emulator.traffic.of("openim/modify_c2c_msg").max_inflight_same_key == 1


async def test_wrong_secret_key_aborts_quickly(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """A wrong key stops the run (exit 3): no request is sent after the first answer, so at most
    the requests already in flight (the concurrency) arrive; the rest stays untouched."""
    running = await start_emulator()
    edits = _ccd_edits(seed_messages(running.emulator.store, 500))
    path = write_edits(tmp_path / "edits.jsonl", edits)
    summary = await _run(
        running, path, tmp_path / "results.jsonl", key="wrong", rate=200.0, concurrency=8
    )
    assert summary.stopped == "fatal"
    assert "70009" in summary.reason
    assert "secret key belongs to another app" in summary.reason
    arrivals = running.emulator.traffic.of("openim/modify_c2c_msg").arrivals
    assert 1 <= arrivals <= 8
    assert len(read_results(tmp_path / "results.jsonl")) == arrivals
    assert all(m.cloud_custom_data is None for m in running.emulator.store.messages())


async def test_circuit_breaker(start_emulator: EmulatorFactory, tmp_path: Path) -> None:
    """50 failures in a row with one code stop the run."""
    running = await start_emulator()
    seed_messages(running.emulator.store, 1)
    edits = [
        {"From_Account": "u00", "To_Account": "u01", "MsgKey": f"9_9_{i}", "CloudCustomData": ""}
        for i in range(300)
    ]
    path = write_edits(tmp_path / "edits.jsonl", edits)
    summary = await _run(running, path, tmp_path / "results.jsonl", concurrency=4)
    assert summary.stopped == "breaker"
    assert "ErrorCode 20026" in summary.reason
    assert 50 <= summary.statuses["failed"] < 60


async def test_expired_sig_is_regenerated_once(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """A 70001 makes a fresh UserSig and the edit is retried; it does not count as a failure."""
    running = await start_emulator()
    edits = _ccd_edits(seed_messages(running.emulator.store, 5))
    path = write_edits(tmp_path / "edits.jsonl", edits)
    times = iter([1_000_000_000.0] * 2)  # the sig is made, then sent, in the year 2001
    sig = SigSource(
        SDKAPPID, ADMIN, secret_key=Secret(SECRET), clock=lambda: next(times, time.time())
    )
    config = RunConfig(
        results=tmp_path / "r.jsonl", endpoint=running.url, sig=sig, rate=None, concurrency=1
    )
    with path.open("rb") as source:
        summary = await run_batch(source, config)
    assert summary.all_ok
    assert running.emulator.traffic.of("openim/modify_c2c_msg").codes[70001] == 1


async def test_fixed_expired_usersig_is_fatal(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """A ready-made UserSig that expired cannot be renewed: the run stops with a hint."""
    running = await start_emulator()
    path = write_edits(tmp_path / "e.jsonl", _ccd_edits(seed_messages(running.emulator.store, 5)))
    old = usersig.generate(SDKAPPID, SECRET, ADMIN, 10, now=1_000_000_000)
    sig = SigSource(SDKAPPID, ADMIN, fixed_usersig=Secret(old))
    config = RunConfig(results=tmp_path / "r.jsonl", endpoint=running.url, sig=sig, rate=None)
    with path.open("rb") as source:
        summary = await run_batch(source, config)
    assert summary.stopped == "fatal"
    assert "70001" in summary.reason


async def test_resume_skips_done_lines_and_redoes_changed_ones(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """--resume skips lines done with the same content; an edited line is sent again."""
    running = await start_emulator()
    edits = _ccd_edits(seed_messages(running.emulator.store, 40))
    path = write_edits(tmp_path / "edits.jsonl", edits)
    results = tmp_path / "results.jsonl"
    assert (await _run(running, path, results)).all_ok
    edits[10]["CloudCustomData"] = "changed"
    write_edits(path, edits)
    again = await _run(running, path, results, resume=True)
    assert (again.skipped, again.statuses["ok"]) == (39, 1)
    assert read_results(results)[11]["outcome"] == "ok"
    assert running.emulator.traffic.of("openim/modify_c2c_msg").arrivals == 41


async def _first_failed_second_done(
    running: Running, tmp_path: Path
) -> tuple[dict[str, str], Path, Path]:
    """Two edits of one message, the first failed and the second done in the results log (as
    if the message's later edit had been taken for done); the message's faults cleared."""
    target = seed_messages(running.emulator.store, 1)[0]
    edits = [{**target, "CloudCustomData": "first"}, {**target, "CloudCustomData": "second"}]
    path = write_edits(tmp_path / "edits.jsonl", edits)
    results = tmp_path / "results.jsonl"
    running.emulator.faults.update({"key_codes": {target["MsgKey"]: 20005}, "fail_first": 0})
    await _run(running, path, results, policy=RetryPolicy.zero_wait(max_attempts=1))
    lines = results.read_bytes().splitlines()
    second_ok = lines[1].replace(b'"outcome":"failed"', b'"outcome":"ok"')
    results.write_bytes(lines[0] + b"\n" + second_ok + b"\n")
    running.emulator.faults.update({"key_codes": {}})
    return target, path, results


async def test_resume_keeps_file_order_for_a_message(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """If an earlier edit of a message is redone, later done edits of it are redone after it."""
    running = await start_emulator()
    target, path, results = await _first_failed_second_done(running, tmp_path)
    summary = await _run(running, path, results, resume=True)
    assert (summary.skipped, summary.statuses["ok"]) == (0, 2)
    message = running.emulator.store.find(
        target["From_Account"], target["To_Account"], target["MsgKey"]
    )
    assert message is not None
    assert message.cloud_custom_data == "second"


async def test_a_resumed_dry_run_previews_the_lines_a_resume_redoes(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """A dry run with --resume counts a done line of a message whose earlier line is redone
    as valid, not skipped, as the resume itself then sends it."""
    running = await start_emulator()
    _, path, results = await _first_failed_second_done(running, tmp_path)
    with path.open("rb") as source:
        preview = await run_batch(source, RunConfig(results=results, dry_run=True, resume=True))
    assert (preview.skipped, preview.statuses["ok"]) == (0, 2)
    summary = await _run(running, path, results, resume=True)
    assert (summary.skipped, summary.statuses["ok"]) == (0, 2)


async def test_dry_run_sends_nothing(start_emulator: EmulatorFactory, tmp_path: Path) -> None:
    """A dry run validates every line, writes no results and sends no request."""
    running = await start_emulator()
    config = RunConfig(results=None, dry_run=True)
    with CORPUS.open("rb") as source:
        summary = await run_batch(source, config)
    assert (summary.statuses["ok"], summary.statuses["invalid"]) == (5, 17)
    assert summary.attempts == 0
    assert running.emulator.traffic.apis == {}


async def test_interrupt_then_resume_gives_every_line_one_outcome(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """Interrupted midway, then resumed: every line has exactly one final outcome, all ok."""
    running = await start_emulator(faults=Faults(latency_ms=(5, 20)), rate_limit=None)
    store = running.emulator.store
    edits = _ccd_edits(seed_messages(store, 400))
    path = write_edits(tmp_path / "edits.jsonl", edits)
    results = tmp_path / "results.jsonl"
    control = RunControl()
    first = await _run(
        running,
        path,
        results,
        control=control,
        observer=InterruptAfter(100, control),
        concurrency=8,
        grace=5.0,
    )
    assert first.stopped == "interrupted"
    assert 0 < first.total < 400
    second = await _run(running, path, results, resume=True)
    assert second.stopped is None
    final = read_results(results)
    assert sorted(final) == list(range(1, 401))
    assert {row["outcome"] for row in final.values()} == {"ok"}
    assert second.skipped == first.statuses["ok"]


async def test_throttle_answers_cut_the_rate(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """The server answers 60007 to the first 5 requests while the run asks 100/s: each is
    retried, the rate is cut, and every edit still ends ok (counts, not speed: the emulator's
    fail-first knob throttles a fixed number of requests whatever the machine's load)."""
    faults = Faults(fail_first=5, fail_first_code=60007)
    running = await start_emulator(faults=faults, rate_limit=None)
    path = write_edits(tmp_path / "e.jsonl", _ccd_edits(seed_messages(running.emulator.store, 30)))
    summary = await _run(running, path, tmp_path / "r.jsonl", rate=100.0, concurrency=1)
    assert summary.all_ok
    assert summary.rate is not None
    assert summary.rate.throttled == 5
    assert summary.rate.cuts >= 1
    assert summary.rate.lowest < summary.rate.target
    assert running.emulator.traffic.of("openim/modify_c2c_msg").codes == {60007: 5, 0: 30}
