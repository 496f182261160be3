"""What a person sees: the progress line, the invalid-line list, and the summary."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from batchedit.outcomes import LatencyHistogram, Outcome, Status, Summary
from batchedit.progress import SHOWN_INVALID, ConsoleObserver, Progress, count_lines
from batchedit.ratelimit import RateStats


def _invalid(line: int) -> Outcome:
    return Outcome(line, "0", Status.INVALID, None, None, None, info=f"line {line}: blank line")


def test_invalid_lines_are_listed_up_to_a_limit() -> None:
    """The first 20 invalid lines are printed with their reasons, then one 'more' line."""
    out = io.StringIO()
    observer = ConsoleObserver(out, None, live=False, quiet=False)
    for line in range(1, 30):
        observer.outcome(_invalid(line))
    lines = out.getvalue().splitlines()
    assert lines[0] == "invalid: line 1: blank line"
    assert len(lines) == SHOWN_INVALID + 1
    assert lines[-1] == "invalid: ... more invalid lines; see the results log"


def test_quiet_prints_nothing() -> None:
    """--quiet: no list, no progress."""
    out = io.StringIO()
    observer = ConsoleObserver(out, 10, live=True, quiet=True)
    observer.outcome(_invalid(1))
    observer.tick(Progress(0, {"ok": 0}, rate=200.0))
    assert out.getvalue() == ""


def test_progress_line_shows_done_rate_eta_and_counts() -> None:
    """On a terminal the line shows done/total, rate, ETA, the counts in order, the limit."""
    out = io.StringIO()
    observer = ConsoleObserver(out, 100, live=True, quiet=False)
    counts = {"ok": 1, "failed": 0, "invalid": 0, "retrying": 3}
    observer.tick(Progress(1, counts, rate=180.0))
    text = out.getvalue()
    assert text.startswith("\r\x1b[2K1/100 | ")
    assert "ETA " in text
    assert "ok 1 failed 0 invalid 0 retrying 3 | limit 180/s" in text
    observer.finish()
    assert out.getvalue().endswith("\n")


def test_one_progress_line_serves_a_plan_too() -> None:
    """Without a total the line counts the work's own unit (a plan's conversations) and shows
    whatever counts it is given; with --resume the skipped lines do not count as speed."""
    out = io.StringIO()
    observer = ConsoleObserver(out, None, live=True, quiet=False)
    counts = {"messages": 40, "planned": 3, "requests": 5}
    observer.tick(Progress(2, counts, unit="conversations"))
    text = out.getvalue()
    assert text.startswith("\r\x1b[2K2 conversations | ")
    assert text.endswith(" | messages 40 planned 3 requests 5")
    out = io.StringIO()
    ConsoleObserver(out, 10, live=True, quiet=False).tick(Progress(10, {"ok": 0}, skipped=10))
    assert out.getvalue() == "\r\x1b[2K10/10 | 0/s | ok 0"


def test_summary_reports_codes_latency_and_adaptation() -> None:
    """The summary folds outcomes: counts per outcome and code, retries, the rate's cuts."""
    summary = Summary()
    for i, (status, code) in enumerate([(Status.OK, 0), (Status.FAILED, 20026), (Status.OK, 0)]):
        summary.add(Outcome(i, "0", status, "a", "b", "k", code=code, attempts=2, latency=0.01))
    summary.rate = RateStats(200.0, 12, 3, 145.8)
    data = summary.as_json()
    assert data["outcomes"] == {"ok": 2, "failed": 1, "invalid": 0}
    assert data["error_codes"] == {"0": 2, "20026": 1}
    assert data["retries"] == 3
    assert data["latency_ms"]["p50"] == pytest.approx(10, rel=0.03)
    text = summary.render()
    assert "rate adapted: 12 throttled replies, 3 cuts, lowest 145.8 of 200 req/s" in text
    assert not summary.all_ok


def test_a_run_that_sent_nothing_shows_no_latency() -> None:
    """A run whose lines were all invalid says no request was sent and prints no latency."""
    summary = Summary()
    summary.add(Outcome(1, "0", Status.INVALID, None, None, None, info="line 1: blank line"))
    assert summary.render().splitlines()[1:] == [
        "  outcomes: ok 0, failed 0, invalid 1",
        "  requests: none sent",
    ]


def test_a_dry_run_counts_valid_lines_without_codes() -> None:
    """A dry run's validated lines are valid, not ok, and have no ErrorCode."""
    summary = Summary(dry_run=True)
    summary.add(Outcome(1, "0", Status.OK, "a", "b", "k", note="dry run: valid, not sent"))
    assert (
        summary.render()
        == "batchedit summary (dry run: nothing sent)\n  outcomes: valid 1, invalid 0"
    )
    assert summary.as_json()["error_codes"] == {}


def test_histogram_percentiles_within_two_percent() -> None:
    """Latency percentiles come from log buckets 2 % wide."""
    histogram = LatencyHistogram()
    for ms in range(1, 1001):
        histogram.add(ms / 1000)
    assert histogram.percentile(50) == pytest.approx(0.5, rel=0.02)
    assert histogram.percentile(99) == pytest.approx(0.99, rel=0.02)
    assert LatencyHistogram().percentile(50) == 0.0


def test_count_lines(tmp_path: Path) -> None:
    """A last line without a newline still counts."""
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"a\nb\nc")
    assert count_lines(str(path)) == 3
    path.write_bytes(b"a\nb\n")
    assert count_lines(str(path)) == 2
