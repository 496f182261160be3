"""What a person sees: the progress line, the invalid-line list, and the summary."""

from __future__ import annotations

import io
import os
from pathlib import Path

import orjson
import pytest

from batchedit.console import Console
from batchedit.jsonlog import JsonlAppender
from batchedit.outcomes import LatencyHistogram, Outcome, Status, Summary
from batchedit.progress import (
    SHOWN_INVALID,
    TICK,
    ConsoleObserver,
    Observers,
    Progress,
    count_lines,
)
from batchedit.ratelimit import RateStats

CLEAR = "\r\x1b[2K"


def _invalid(line: int) -> Outcome:
    return Outcome(line, "0", Status.INVALID, None, None, None, info=f"line {line}: blank line")


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        """A terminal, as far as the console can tell."""
        return True


@pytest.mark.parametrize(
    ("logged", "more"),
    [
        (True, "invalid: ... more invalid lines; see the results log"),
        (False, "invalid: ... more invalid lines"),
    ],
)
def test_invalid_lines_are_listed_up_to_a_limit(logged: bool, more: str) -> None:
    """The first 20 invalid lines are printed with their reasons, then one 'more' line, which
    points at the results log only when there is one (a dry run writes none)."""
    out = io.StringIO()
    observer = ConsoleObserver(Console(out), None, logged=logged)
    for line in range(1, 30):
        observer.outcome(_invalid(line))
    lines = out.getvalue().splitlines()
    assert lines[0] == "invalid: line 1: blank line"
    assert len(lines) == SHOWN_INVALID + 1
    assert lines[-1] == more


@pytest.mark.parametrize("terminal", [True, False])
def test_quiet_prints_nothing(terminal: bool) -> None:
    """--quiet: no list, no progress, on a terminal or not."""
    out = Terminal() if terminal else io.StringIO()
    now = [0.0]
    observer = ConsoleObserver(Console(out), 10, quiet=True, every=1, clock=lambda: now[0])
    observer.outcome(_invalid(1))
    for tick in range(5):
        now[0] = float(tick)
        observer.tick(Progress(0, {"ok": 0}, rate=200.0))
    assert out.getvalue() == ""


def test_progress_line_shows_done_rate_eta_and_counts() -> None:
    """On a terminal the line shows done/total, rate, ETA, the counts in order, the limit."""
    out = Terminal()
    clock = iter([0.0, 1.0])
    observer = ConsoleObserver(Console(out), 100, clock=lambda: next(clock))
    counts = {"ok": 1, "failed": 0, "invalid": 0, "retrying": 3}
    observer.tick(Progress(0, counts, rate=180.0))
    observer.tick(Progress(1, counts, rate=180.0))
    text = out.getvalue().rpartition(CLEAR)[2]
    assert text == "1/100 | 1/s | ETA 1m39s | ok 1 failed 0 invalid 0 retrying 3 | limit 180/s"
    observer.finish()
    assert out.getvalue().endswith("\n")


def test_one_progress_line_serves_a_plan_too() -> None:
    """Without a total the line counts the work's own unit (a plan's conversations) and shows
    whatever counts it is given; with --resume the skipped lines do not count as speed."""
    out = Terminal()
    clock = iter([0.0, 2.0])
    observer = ConsoleObserver(Console(out), None, clock=lambda: next(clock))
    counts = {"messages": 40, "planned": 3, "requests": 5}
    observer.tick(Progress(0, counts, unit="conversations"))
    observer.tick(Progress(2, counts, unit="conversations"))
    assert out.getvalue().rpartition(CLEAR)[2] == (
        "2 conversations | 1/s | messages 40 planned 3 requests 5"
    )
    out = Terminal()
    ConsoleObserver(Console(out), 10).tick(Progress(10, {"ok": 0}, skipped=10))
    assert out.getvalue() == f"{CLEAR}10/10 | 0/s | ok 0"


@pytest.mark.parametrize("columns", [20, 40, 60, 80, 120])
def test_the_live_line_never_wraps(columns: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """However long the numbers, the live line fits the terminal's width: counts are shortened
    first, then the limit and the speed left out, then the line is cut."""
    monkeypatch.setenv("COLUMNS", str(columns))
    out = Terminal()
    clock = iter([0.0, 4321.0])
    observer = ConsoleObserver(Console(out), 1_000_000, clock=lambda: next(clock))
    counts = {"ok": 864_000, "failed": 123, "invalid": 45, "retrying": 100}
    observer.tick(Progress(0, counts, rate=200.0))
    observer.tick(Progress(864_268, counts, rate=123.4))
    drawn = out.getvalue().split(CLEAR)[1:]
    assert all(len(line) < columns and "\n" not in line for line in drawn)
    assert drawn[-1].startswith("864268/1000000"[: columns - 1])
    if columns == 80:
        assert (
            drawn[-1]
            == "864268/1000000 | 200/s | ETA 11m19s | o 864000 f 123 i 45 r 100 | limit 123/s"
        )
    if columns == 60:
        assert drawn[-1] == "864268/1000000 | ETA 11m19s | o 864000 f 123 i 45 r 100"


def test_the_live_line_leaves_out_zero_counts_before_abbreviating(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On 80 columns a run with nothing failed shows ``ok N`` in full, not ``o N f 0 i 0``."""
    monkeypatch.setenv("COLUMNS", "80")
    out = Terminal()
    clock = iter([0.0, 5.0])
    observer = ConsoleObserver(Console(out), 3000, clock=lambda: next(clock))
    counts = {"ok": 1095, "failed": 0, "invalid": 0, "retrying": 0}
    observer.tick(Progress(0, counts, rate=200.0))
    observer.tick(Progress(1095, counts, rate=200.0))
    assert out.getvalue().rpartition(CLEAR)[2] == (
        "1095/3000 | 219/s | ETA 0m09s | ok 1095 | limit 200/s"
    )


def test_off_a_terminal_a_progress_line_comes_every_interval() -> None:
    """Under nohup (stderr a file) the observer writes a plain line every --progress-every
    seconds on its clock, not at every tick, and a stalled loop does not bring a burst."""
    out = io.StringIO()
    now = [0.0]
    observer = ConsoleObserver(Console(out), 3000, every=2.0, clock=lambda: now[0])
    for tick in range(31):  # 15 s of ticks, twice a second
        now[0] = tick * TICK
        observer.tick(Progress(tick * 100, {"ok": tick * 100, "failed": 0}, rate=200.0))
    lines = out.getvalue().splitlines()
    assert len(lines) == 7  # at 2, 4, ... 14 s
    assert lines[0] == "progress: 400/3000 | 200/s | ETA 0m13s | ok 400 failed 0 | limit 200/s"
    now[0] = 30.0  # the loop stalled for 15 s: one line, then the rhythm again
    observer.tick(Progress(3000, {"ok": 3000, "failed": 0}))
    now[0] = 31.0
    observer.tick(Progress(3000, {"ok": 3000, "failed": 0}))
    assert len(out.getvalue().splitlines()) == 8


def test_progress_every_zero_writes_no_progress_line() -> None:
    """--progress-every 0: the start line and invalid lines only."""
    out = io.StringIO()
    now = [0.0]
    observer = ConsoleObserver(Console(out), None, every=0, clock=lambda: now[0])
    for tick in range(100):
        now[0] = tick * TICK
        observer.tick(Progress(tick, {"ok": tick}))
    assert out.getvalue() == ""


def test_json_lines_carry_the_event_and_its_fields() -> None:
    """--log-format json: the start line, warnings, invalid lines and progress are each one JSON
    object with the time, the event, the text and the event's own fields; never a live line,
    even on a terminal."""
    out = Terminal()
    now = [0.0]
    console = Console(out, json=True, now=lambda: 1_700_000_000.25)
    observer = ConsoleObserver(console, 300, every=1.0, clock=lambda: now[0])
    observer.notice("warning: --rate 500 is above the documented limit")
    observer.notice("start: endpoint 127.0.0.1:5080, SDKAppID 1400000000")
    observer.outcome(_invalid(7))
    for tick in range(5):
        now[0] = tick * TICK
        observer.tick(Progress(tick * 50, {"ok": tick * 50, "failed": 0}, rate=100.0))
    rows = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [row["event"] for row in rows] == ["warning", "start", "invalid", "progress", "progress"]
    assert rows[0]["time"] == "2023-11-14T22:13:20.250Z"
    assert rows[1]["message"] == "start: endpoint 127.0.0.1:5080, SDKAppID 1400000000"
    assert rows[2] == {**rows[2], "line": 7, "message": "invalid: line 7: blank line"}
    assert {k: v for k, v in rows[3].items() if k != "time"} == {
        "event": "progress",
        "message": "progress: 100/300 | 100/s | ETA 0m02s | ok 100 failed 0 | limit 100/s",
        "done": 100,
        "total": 300,
        "unit": "lines",
        "counts": {"ok": 100, "failed": 0},
        "speed": 100.0,
        "rate": 100.0,
        "eta_s": 2.0,
        "elapsed_s": 1.0,
    }
    assert CLEAR not in out.getvalue()


def test_observers_tell_each_observer_everything() -> None:
    """Observers fans every outcome, notice and tick out to each observer, in order."""
    first, second = io.StringIO(), io.StringIO()
    both = Observers(ConsoleObserver(Console(first), None), ConsoleObserver(Console(second), None))
    both.notice("start: here")
    both.outcome(_invalid(3))
    both.tick(Progress(1, {"ok": 1}))
    assert first.getvalue() == second.getvalue() == "start: here\ninvalid: line 3: blank line\n"


def test_library_notes_become_console_lines(tmp_path: Path) -> None:
    """A torn log row cut off on reopen is told through the console while it captures the
    batchedit logger: a JSON line of its own in JSON mode, and not a stray text line."""
    log = tmp_path / "r.jsonl"
    log.write_bytes(b'{"line":1}\n{"li')
    out = io.StringIO()
    console = Console(out, json=True)
    with console.capture_logging(), JsonlAppender(log):
        pass
    (row,) = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert row["event"] == "repair"
    assert row["message"].startswith(f"{log}: its last row was torn by a crash (4 bytes")


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


def test_a_run_of_one_request_claims_no_rate() -> None:
    """One request has no rate between requests: the summary gives its time, not "0.0 req/s"."""
    summary = Summary()
    summary.add(Outcome(1, "0", Status.OK, "a", "b", "k", code=0, attempts=1, latency=0.01))
    summary.sent_at(5.0)
    summary.elapsed = 0.5
    assert "  requests: 1 (0 retries) in 0.5 s" in summary.render().splitlines()


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
    """A last line without a newline still counts; the stream is left where it was."""
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"a\nb\nc")
    with path.open("rb") as stream:
        assert count_lines(stream) == 3
        assert stream.read() == b"a\nb\nc"
    path.write_bytes(b"a\nb\n")
    with path.open("rb") as stream:
        assert stream.readline() == b"a\n"
        assert count_lines(stream) == 1
        assert stream.read() == b"b\n"


def test_count_lines_leaves_pipes_and_devices_alone() -> None:
    """A pipe cannot be counted without reading it away, a device may never end: no total."""
    read, write = os.pipe()
    with open(read, "rb") as pipe, open(write, "wb"):
        assert count_lines(pipe) is None
    with open(os.devnull, "rb") as device:
        assert count_lines(device) is None


class Vanished(io.StringIO):
    """A stderr whose reader went away (a closed pipe, a terminal gone after SIGHUP)."""

    def write(self, text: str) -> int:
        """Fail as a closed pipe does."""
        raise BrokenPipeError(32, "Broken pipe")


def test_a_vanished_stderr_does_not_stop_the_run() -> None:
    """Progress, invalid lines and notes to a stderr that fails are dropped without an error:
    the run goes on and its results log keeps the record."""
    now = [0.0]
    observer = ConsoleObserver(Console(Vanished()), 10, every=1, clock=lambda: now[0])
    observer.notice("start: here")
    observer.outcome(_invalid(1))
    for tick in range(4):
        now[0] = float(tick)
        observer.tick(Progress(tick, {"ok": tick}))
    observer.finish()
