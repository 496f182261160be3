"""batchedit report on the command line, and its --html page: self-contained, every chart inline."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchedit.cli import main
from batchedit.emulator import Faults
from batchedit.report import MISSING_EXTRA, ReportError, build_report, render_html, write_html
from tests.conftest import EmulatorFactory
from tests.reporting import TORN, faulty_edits, row, run_edits

START = 1_800_000_000.0


def _references(page: str) -> list[str]:
    """Every src/href target and url(...) in the page."""
    attributes = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page, re.IGNORECASE)
    return attributes + re.findall(r"url\(\s*([^)]*)\)", page)


async def test_html_of_a_faulty_run_is_self_contained(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """Four inline SVG charts, the limit drawn in, the failed lines listed, nothing fetched."""
    faults = Faults(transient_rate=0.2, throttle_rate=0.05, http_502_rate=0.02)
    running = await start_emulator(faults=faults, rate_limit=None, seed=5)
    edits, bad = faulty_edits(running, tmp_path, 400)
    results = tmp_path / "results.jsonl"
    await run_edits(running, edits, results, concurrency=16)
    page_path = tmp_path / "report.html"
    write_html(build_report([results]), page_path, rate=5000)
    page = page_path.read_text(encoding="utf-8")
    assert page.count("<svg") == 4
    references = _references(page)
    assert all(target.startswith("#") for target in references), references
    ids = re.findall(r'id="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    assert {target.lstrip("#") for target in references} <= set(ids)
    for tag in ("<script", "<img", "<link", "<iframe", "@import"):
        assert tag not in page
    for text in ("rate limit 5000/s", "throttled replies", "p99", "20026 permanent"):
        assert text in page
    assert "<h2>Failed and invalid lines (5)</h2>" in page
    listed = [int(n) for n in re.findall(r"<tr><td>(\d+)</td>", page)]
    assert listed == bad


def test_html_without_times_draws_only_the_outcomes(tmp_path: Path) -> None:
    """Rows without `at`: one chart (outcomes), and the page says the times are unknown."""
    log = tmp_path / "old.jsonl"
    log.write_bytes(row(1, at=...) + row(2, "failed", at=...))
    page = render_html(build_report([log]))
    assert page.count("<svg") == 1
    assert "Times are unknown, so nothing is drawn over time." in page
    assert "no row has a time" in page


def test_html_marks_the_pause_between_runs_and_may_leave_out_the_limit(tmp_path: Path) -> None:
    """A pause is drawn as a dashed line with its length; rate None draws no limit."""
    log = tmp_path / "results.jsonl"
    log.write_bytes(row(1, at=START) + row(2, at=START + 1) + row(3, at=START + 601))
    page = render_html(build_report([log]), rate=None)
    assert "paused 10 min" in page
    assert "pauses over 60 s cut out" in page
    assert "rate limit" not in page


def test_cli_report_prints_the_summary_notes_and_writes_the_page(tmp_path: Path) -> None:
    """Summary on stdout, the torn-row note on stderr, exit 0, the page where --html said."""
    log = tmp_path / "results.jsonl"
    log.write_bytes(row(1, at=START) + row(2, "failed", at=START + 1) + TORN)
    page = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["report", str(log), "--html", str(page), "--rate", "150"])
    assert result.exit_code == 0, result.output
    expected = build_report([log]).render()
    assert result.stdout == f"{expected}\n  html: {page}\n"
    assert result.stderr == (
        f"note: {log}: skipped its torn last row (a run was killed while writing it)\n"
    )
    assert "rate limit 150/s" in page.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("bad", "fault"),
    [
        (b"{oops\n", "not JSON"),
        (row(2, at=1e308), "'at' is 1e+308, not UNIX seconds from 2000 to 2100"),
        (row(2, at=-1e12), "'at' is -1000000000000.0, not UNIX seconds from 2000 to 2100"),
        (row(2, latency_ms=1e308), "'latency_ms' is 1e+308, not under a day"),
    ],
)
def test_cli_report_of_a_bad_row_exits_2_naming_file_and_line(
    tmp_path: Path, bad: bytes, fault: str
) -> None:
    """A bad row mid-log (out-of-range times too): exit 2 and the file, line and fault; no
    traceback."""
    log = tmp_path / "results.jsonl"
    log.write_bytes(row(1) + bad + row(3))
    result = CliRunner().invoke(main, ["report", str(log)])
    assert result.exit_code == 2
    assert result.stderr == f"Error: {log} line 2: not a results row: {fault}\n"
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_report_that_cannot_write_its_page_exits_2(tmp_path: Path) -> None:
    """An --html path in a missing folder: exit 2 with the reason, nothing printed on stdout."""
    log = tmp_path / "results.jsonl"
    log.write_bytes(row(1))
    page = tmp_path / "missing" / "report.html"
    result = CliRunner().invoke(main, ["report", str(log), "--html", str(page)])
    assert result.exit_code == 2
    assert result.stderr == f"Error: cannot write --html {page}: no directory {page.parent}\n"
    assert result.stdout == ""


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link"])
def test_cli_report_refuses_an_html_page_that_is_one_of_its_logs(tmp_path: Path, how: str) -> None:
    """--html naming a RESULTS log (itself, a symlink or a hard link to it): exit 2, the log
    untouched, nothing on stdout."""
    first, log = tmp_path / "first.jsonl", tmp_path / "results.jsonl"
    first.write_bytes(row(1))
    written = row(1, at=START) + row(2, at=START)
    log.write_bytes(written)
    page = {"same path": log, "symlink": tmp_path / "page.html", "hard link": tmp_path / "p.html"}[
        how
    ]
    if how == "symlink":
        page.symlink_to(log)
    elif how == "hard link":
        page.hardlink_to(log)
    result = CliRunner().invoke(main, ["report", str(first), str(log), "--html", str(page)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: RESULTS and --html are the same file ({page}); give each a file of its own\n"
    )
    assert result.stdout == ""
    assert log.read_bytes() == written


def test_write_html_error_is_a_report_error(tmp_path: Path) -> None:
    """The library raises ReportError (a BatchEditError) for an unwritable page."""
    log = tmp_path / "results.jsonl"
    log.write_bytes(row(1))
    with pytest.raises(ReportError, match=f"^cannot write {re.escape(str(tmp_path))}: "):
        write_html(build_report([log]), tmp_path)


def test_without_matplotlib_the_text_report_works_and_html_names_the_extra(
    tmp_path: Path,
) -> None:
    """With matplotlib unimportable: `report` prints as usual; `--html` exits 2 naming the extra."""
    log = tmp_path / "results.jsonl"
    log.write_bytes(row(1, at=START))
    blocked = (
        "import sys; sys.modules['matplotlib'] = None; "
        "from batchedit.cli import main; main(prog_name='batchedit')"
    )

    def report(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", blocked, "report", str(log), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    plain = report()
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.startswith(f"{log}: 1 rows for 1 lines\n")
    page = tmp_path / "report.html"
    drawn = report("--html", str(page))
    assert drawn.returncode == 2
    assert drawn.stderr == f"Error: {MISSING_EXTRA}\n"
    assert not page.exists()
