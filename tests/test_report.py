"""batchedit report: results logs of real runs read back into the same counts the runs printed."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchedit.emulator import Faults
from batchedit.outcomes import Outcome
from batchedit.report import ReportError, ResultsLogs, build_report, outcome_of_row
from batchedit.report.logs import _checked as checked_row  # the definition the fast path keeps to
from batchedit.sender import RunControl
from tests.conftest import EmulatorFactory
from tests.helpers import InterruptAfter, read_results
from tests.reporting import TORN, counts, faulty_edits, row, run_edits


async def test_report_of_a_faulty_run_has_the_runs_counts(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """Transient, 502 and throttle faults: the report has the run's own counts and throttles."""
    faults = Faults(transient_rate=0.2, throttle_rate=0.05, http_502_rate=0.02)
    running = await start_emulator(faults=faults, rate_limit=None, seed=5)
    edits, bad = faulty_edits(running, tmp_path, 600)
    results = tmp_path / "results.jsonl"
    before = time.time()
    summary = await run_edits(running, edits, results, concurrency=32)
    after = time.time()
    report = build_report([results])
    assert counts(report.summary) == counts(summary)
    assert report.summary.retries > 100
    assert summary.rate is not None
    assert report.throttled == summary.rate.throttled > 0
    assert (report.rows, report.lines, report.torn) == (600, 600, ())
    assert [o.line for o in report.failed] == bad
    assert len(report.stretches) == 1
    rows = [orjson.loads(raw) for raw in results.read_bytes().splitlines()]
    # ``at`` is rounded to the millisecond, so it may be up to half of one outside the run.
    assert all(before - 0.001 <= row["at"] <= after + 0.001 for row in rows)
    assert all(round(row["at"], 3) == row["at"] for row in rows)
    assert all(row["throttled"] > 0 for row in rows if "throttled" in row)
    assert sum(row.get("throttled", 0) for row in rows) == summary.rate.throttled
    text = report.render()
    assert text.startswith(f"{results}: 600 rows for 600 lines\nbatchedit summary\n")
    assert summary.render().splitlines()[1] in text.splitlines()
    assert f"  throttled replies: {summary.rate.throttled} (each may cut the rate)" in text
    assert "  line 11: invalid: line 11: To_Account: required" in text


async def test_killed_then_resumed_logs_give_each_runscounts(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """A killed run's log (torn tail) and its resume's: each reads as its run, both as one."""
    running = await start_emulator(faults=Faults(transient_rate=0.2), rate_limit=None, seed=2)
    edits, bad = faulty_edits(running, tmp_path, 400)
    results = tmp_path / "results.jsonl"
    control = RunControl()
    observer = InterruptAfter(150, control)
    first = await run_edits(
        running, edits, results, control=control, observer=observer, concurrency=4
    )
    assert first.stopped == "interrupted"
    killed_bytes = results.read_bytes()
    killed = tmp_path / "killed.jsonl"
    killed.write_bytes(killed_bytes + TORN)
    second = await run_edits(running, edits, results, resume=True)
    resumed = tmp_path / "resumed.jsonl"
    resumed.write_bytes(results.read_bytes()[len(killed_bytes) :])

    alone = build_report([killed])
    assert counts(alone.summary) == counts(first)
    assert alone.torn == (killed,)
    assert (
        alone.notes()[0]
        == f"{killed}: skipped its torn last row (a run was killed while writing it)"
    )

    both = build_report([killed, resumed])
    whole = build_report([results])
    assert counts(both.summary) == counts(whole.summary)
    statuses = both.summary.statuses
    assert statuses["ok"] + statuses["invalid"] == (
        second.statuses["ok"] + second.statuses["invalid"] + second.skipped
    )
    assert statuses["failed"] == second.statuses["failed"] == 3
    assert both.lines == 400
    assert both.rows == first.total + second.total
    final = read_results(results)
    assert statuses == Counter(row["outcome"] for row in final.values())
    assert [o.line for o in both.failed] == bad


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b"not json\n", "not JSON"),
        (b"\n", "not JSON"),
        (b"[1, 2]\n", "not a JSON object"),
        (row(2, outcome=...), "no 'outcome'"),
        (row(2, outcome="maybe"), "'outcome' is 'maybe', not ok, failed or invalid"),
        (row(2, attempts=True), "'attempts' is not a whole number"),
        (row(2, latency_ms=-1), "'attempts', 'latency_ms' and 'throttled' cannot be negative"),
        (row(0), "'line' is 0, not a positive number"),
        (row(2, line="2"), "'line' is not a whole number"),
        (row(2, at="noon"), "'at' is not a number"),
        (row(2, at=1e308), "'at' is 1e+308, not UNIX seconds from 2000 to 2100"),
        (row(2, at=-1e12), "'at' is -1000000000000.0, not UNIX seconds from 2000 to 2100"),
        (row(2, at=1e11), "'at' is 100000000000.0, not UNIX seconds from 2000 to 2100"),
        (row(2, at=0), "'at' is 0, not UNIX seconds from 2000 to 2100"),
        (row(2, latency_ms=1e308), "'latency_ms' is 1e+308, not under a day"),
        (row(2, MsgKey=5), "'MsgKey' is not a string or null"),
        (row(2, hash=...), "no 'hash'"),
    ],
)
def test_a_row_that_is_not_a_results_row_names_file_and_line(
    tmp_path: Path, bad: bytes, reason: str
) -> None:
    """Anywhere but a torn tail, a bad row stops the report with its file, line and fault."""
    log = tmp_path / "results.jsonl"
    log.write_bytes(row(1) + bad + row(3))
    with pytest.raises(ReportError) as caught:
        build_report([log])
    assert str(caught.value) == f"{log} line 2: not a results row: {reason}"


def test_only_a_last_row_without_its_newline_counts_as_torn(tmp_path: Path) -> None:
    """A complete last row without newline counts; a bad last row with one is an error."""
    whole = tmp_path / "whole.jsonl"
    whole.write_bytes(row(1) + row(2).rstrip(b"\n"))
    report = build_report([whole])
    assert (report.rows, report.torn) == (2, ())
    ended = tmp_path / "ended.jsonl"
    ended.write_bytes(row(1) + TORN + b"\n")
    with pytest.raises(ReportError, match="line 2: not a results row: not JSON"):
        build_report([ended])


def test_unreadable_log_is_a_report_error(tmp_path: Path) -> None:
    """A missing log is named with the system's reason."""
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(ReportError) as caught:
        build_report([missing])
    assert str(caught.value) == f"cannot read {missing}: No such file or directory"


def test_rows_written_before_at_are_summarised_with_times_unknown(tmp_path: Path) -> None:
    """Old rows have no time: counts as usual, no stretch, and the report says times are unknown."""
    log = tmp_path / "old.jsonl"
    log.write_bytes(row(1, at=...) + row(2, "failed", at=...) + row(1, at=...))
    report = build_report([log])
    assert report.summary.statuses == Counter({"ok": 1, "failed": 1})
    assert (report.rows, report.lines, report.stretches) == (3, 2, ())
    assert report.timeline.series() is None
    assert report.notes() == [
        "no row has a time (written before batchedit recorded `at`): times are unknown"
    ]
    text = report.render()
    assert "  recorded: times unknown" in text
    assert "  requests: 2 (0 retries)\n" in text


def test_pauses_between_runs_are_cut_out_of_the_time(tmp_path: Path) -> None:
    """Rows 200 s apart make two stretches; the working time and the charts leave the pause out."""
    log = tmp_path / "results.jsonl"
    start = 1_800_000_000.0
    log.write_bytes(
        row(1, at=start) + row(2, at=start + 4) + row(3, at=start + 204) + row(4, at=start + 205)
    )
    report = build_report([log])
    assert report.stretches == ((start, start + 4), (start + 204, start + 205))
    assert report.summary.elapsed == 5.0
    recorded = "  recorded: 2027-01-15 08:00:00 to 08:03:25 UTC in 2 stretches"
    assert f"{recorded} (pauses over 60 s not timed)" in report.render()
    series = report.timeline.series()
    assert series is not None
    assert [(p.x, p.seconds) for p in series.pauses] == [(4.0, 200.0)]
    assert series.edges[-1] >= 5.0 > series.edges[-2]
    assert sum(series.sent) * series.width == 4


def test_last_row_wins_even_for_huge_line_numbers(tmp_path: Path) -> None:
    """A stray huge line number is kept apart (no huge array) and still superseded correctly."""
    huge = 10**12
    log = tmp_path / "results.jsonl"
    log.write_bytes(row(1, "failed") + row(huge, "failed") + row(huge) + row(1))
    report = build_report([log])
    assert (report.rows, report.lines) == (4, 2)
    assert report.summary.statuses == Counter({"ok": 2})


def test_a_log_still_being_appended_reads_the_same_twice(tmp_path: Path) -> None:
    """The second reading stops where the first did, even if a run appended meanwhile."""
    log = tmp_path / "results.jsonl"
    log.write_bytes(row(1) + TORN)
    logs = ResultsLogs([log])
    assert [o.line for o in logs.rows()] == [1]
    with log.open("ab") as stream:
        stream.write(b'Account":"a"}\n' + row(2))
    assert [o.line for o in logs.rows()] == [1]
    assert logs.torn == [log]


_FIELDS = (
    "line",
    "MsgKey",
    "From_Account",
    "To_Account",
    "outcome",
    "ErrorCode",
    "ErrorInfo",
    "attempts",
    "latency_ms",
    "hash",
    "at",
    "throttled",
    "note",
)
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(-2, 2, allow_nan=False),
    st.sampled_from(["ok", "failed", "invalid", "", "x"]),
    st.lists(st.integers(), max_size=1),
)


@given(st.dictionaries(st.sampled_from(_FIELDS), st.one_of(st.just(...), _VALUES)))
def test_the_fast_row_check_agrees_with_the_field_by_field_one(changes: dict[str, Any]) -> None:
    """Whatever a row holds, the fast path accepts exactly what the full check accepts."""
    base = orjson.loads(row(7, "failed", at=1_800_000_000.5, throttled=2, note="n"))
    mixed = {k: v for k, v in {**base, **changes}.items() if v is not ...}
    try:
        expected: Outcome | str = checked_row(mixed)
    except ValueError as exc:
        expected = str(exc)
    try:
        got: Outcome | str = outcome_of_row(mixed)
    except ValueError as exc:
        got = str(exc)
    assert got == expected
