"""``batchedit report``: the summary of results logs, and optionally a page of charts."""

from __future__ import annotations

from pathlib import Path

import click

from batchedit.cli_common import ConfigProblem
from batchedit.im.errors import ConfigError
from batchedit.preflight import check_distinct, check_writable
from batchedit.report import ReportError, build_report, write_html


@click.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write one self-contained HTML page of charts here "
    "(needs the extra: pip install 'batchedit[report]').",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=200.0,
    show_default=True,
    help="The run's --rate, drawn as the limit on the edits-per-second chart (0: not drawn).",
)
def report_command(results: tuple[Path, ...], html_path: Path | None, rate: float) -> None:
    """Summarise results logs: counts, latency, retries, throttling and the failed lines.

    RESULTS are results logs in the order they were written (a killed run's, then its resumed
    runs'; or one log they all appended to). Each line's final outcome is its last row, and
    the counts are the summary a run prints, folded over those final rows. A torn last row (a
    crash mid-write) is skipped with a note.

    \b
    Exit status: 0 report made; 2 a log cannot be read, holds a row that is
    not a results row (named by file and line), or the page cannot be written
    (or is one of the RESULTS).
    """
    try:
        if html_path is not None:
            # Checked before reading: writing the page over a log would destroy it.
            for path in results:
                check_distinct([("RESULTS", path), ("--html", html_path)])
            check_writable("--html", html_path)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None
    try:
        made = build_report(results)
        if html_path is not None:
            write_html(made, html_path, rate=rate or None)
    except ReportError as exc:
        raise ConfigProblem(str(exc)) from None
    for note in made.notes():
        click.echo(f"note: {note}", err=True)
    click.echo(made.render())
    if html_path is not None:
        click.echo(f"  html: {html_path}")
