"""``batchedit report --html``: one self-contained page, its charts drawn by matplotlib as SVG.

matplotlib comes with the optional ``report`` extra and is imported only here. Each chart is
inlined as SVG with its text kept as text: the page has no script, loads nothing, and reads the
same offline.
"""

from __future__ import annotations

import html
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING

from batchedit.im.errors import ErrorClass, classify
from batchedit.report.build import Report, utc
from batchedit.report.logs import ReportError
from batchedit.report.timeline import PAUSE, Series

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MISSING_EXTRA = (
    "--html draws its charts with matplotlib, which is not installed: "
    "pip install 'batchedit[report]'"
)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)
_ID = re.compile(r'id="([^"]+)"')
_REFERENCE = re.compile(r'(href="#|url\(#)')
_COLOURS = {
    "ok": "#2e7d32",
    "match": "#2e7d32",
    "failed": "#c62828",
    "invalid": "#ef6c00",
    "conflict": "#6a1b9a",
    "mismatch": "#ad1457",
    "missing": "#4e342e",
}
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
pre { background: #f5f5f5; padding: 1em; overflow-x: auto; }
figure { margin: 1.5em 0; }
figure svg { width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
.notes li { color: #8a4b00; }
"""


def write_html(report: Report, path: Path, *, rate: float | None = 200.0) -> None:
    """Write the report page to ``path``; ``rate`` (requests per second) is drawn as the limit.

    Raises :class:`ReportError` when matplotlib is missing or ``path`` cannot be written.
    """
    page = render_html(report, rate=rate)
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc.strerror}") from None


def render_html(report: Report, *, rate: float | None = 200.0) -> str:
    """The report page as one HTML string (charts inline, nothing fetched when opened)."""
    try:
        import matplotlib  # noqa: F401, PLC0415 - the optional extra: imported only when drawing
    except ImportError:
        raise ReportError(MISSING_EXTRA) from None
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>batchedit report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>batchedit report</h1>",
        f"<pre>{html.escape(report.render(listed=0))}</pre>",
    ]
    notes = report.notes()
    if notes:
        items = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
        parts.append(f'<ul class="notes">{items}</ul>')
    series = report.timeline.series()
    if series is None:
        parts.append("<p>Times are unknown, so nothing is drawn over time.</p>")
    else:
        parts += _time_charts(series, rate)
    parts.append(
        _figure_html(
            "Outcomes and ErrorCodes",
            _outcome_chart(report),
            "The final outcome of each line, and the last ErrorCode each line got "
            "(none: no server answer; invalid lines are never sent).",
        )
    )
    parts.append(_failed_table(report))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _figure_html(title: str, svg: str, caption: str) -> str:
    return (
        f"<h2>{html.escape(title)}</h2><figure>{svg}"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _svg(figure: Figure, name: str) -> str:
    """``figure`` as inline SVG whose element ids all start with ``name`` (unique in the page)."""
    import matplotlib  # noqa: PLC0415 - the optional extra

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue().decode("utf-8")
    # Inline SVG needs no XML prologue or doctype; the metadata only names RDF vocabularies.
    text = _METADATA.sub("", text[text.index("<svg") :])
    text = _ID.sub(rf'id="{name}-\1"', text)
    return _REFERENCE.sub(rf"\1{name}-", text)


def _new_figure(height: float, columns: int = 1) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure  # noqa: PLC0415 - the optional extra

    figure = Figure(figsize=(10, height), layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0]
    return figure, list(axes)


def _over_time(ax: Axes, series: Series, ylabel: str) -> None:
    label = f"seconds since {utc(series.start)} UTC, in {series.width:g}-second buckets"
    if series.pauses:
        label += f" (pauses over {PAUSE:g} s cut out: dashed lines)"
    ax.set_xlabel(label)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, series.edges[-1])
    # Headroom above the data for the legend and the pause labels.
    ax.set_ylim(0, max(ax.get_ylim()[1], 1) * 1.2)
    ax.grid(alpha=0.3)
    for pause in series.pauses:
        ax.axvline(pause.x, color="0.4", linestyle="--", linewidth=1)
        ax.annotate(
            f" paused {_duration(pause.seconds)}",
            (pause.x, 0.97),
            xycoords=("data", "axes fraction"),
            va="top",
            fontsize=8,
            color="0.3",
        )
    ax.legend(loc="upper right", fontsize=8)


def _time_charts(series: Series, rate: float | None) -> list[str]:
    mids = [edge + series.width / 2 for edge in series.edges[:-1]]
    figure, (ax,) = _new_figure(3.2)
    ax.stairs(series.requests, series.edges, label="requests (attempts)", color="C0")
    ax.stairs(series.sent, series.edges, label="edits sent (lines)", color="C2")
    if rate:
        ax.axhline(rate, color="C3", linestyle="--", label=f"rate limit {rate:g}/s")
    _over_time(ax, series, "per second")
    charts = [
        _figure_html(
            "Edits per second",
            _svg(figure, "rate"),
            "Requests (every attempt, retries included) and lines sent, each counted when its "
            "line's outcome was recorded; the dashed line is the run's --rate.",
        )
    ]
    figure, (ax,) = _new_figure(3.2)
    for values, name, colour in (
        (series.p50, "p50", "C0"),
        (series.p95, "p95", "C1"),
        (series.p99, "p99", "C3"),
    ):
        ax.plot(mids, values, label=name, color=colour, linewidth=1.2)
    _over_time(ax, series, "latency, ms")
    charts.append(
        _figure_html(
            "Latency percentiles over time",
            _svg(figure, "latency"),
            "Round trip of each line's last attempt, in milliseconds.",
        )
    )
    figure, (ax,) = _new_figure(3.2)
    ax.stairs(series.retries, series.edges, label="retries", color="C0")
    ax.stairs(series.throttled, series.edges, label="throttled replies", color="C3")
    ax.stairs(series.failed, series.edges, label="failed lines", color="C1")
    _over_time(ax, series, f"per {series.width:g} s")
    charts.append(
        _figure_html(
            "Retries and throttling over time",
            _svg(figure, "retries"),
            "Attempts beyond each line's first; replies refusing a request for the rate "
            "(60007, 60011, 60018, 60019, HTTP 429), after which the run cuts its rate by 10 % "
            "and recovers; lines that ended failed.",
        )
    )
    return charts


def _outcome_chart(report: Report) -> str:
    summary = report.summary
    codes = sorted(summary.codes.items(), key=lambda item: -item[1])
    figure, (left, right) = _new_figure(max(2.2, 0.32 * len(codes) + 1.2), columns=2)
    names = [status.value for status in summary.shown]
    bars = left.barh(
        names, [summary.statuses[n] for n in names], color=[_COLOURS[n] for n in names]
    )
    left.bar_label(bars, padding=3)
    left.set_title("outcomes", fontsize=10)
    bars = right.barh([_code_label(code) for code, _ in codes], [n for _, n in codes], color="C0")
    right.bar_label(bars, padding=3)
    right.set_title("ErrorCodes", fontsize=10)
    for ax in (left, right):
        ax.invert_yaxis()
        ax.margins(x=0.15)
        ax.grid(axis="x", alpha=0.3)
    return _svg(figure, "outcomes")


def _code_label(code: str) -> str:
    if code == "none":
        return "none (no answer)"
    kind = classify(int(code))
    return code if kind is ErrorClass.OK else f"{code} {kind.value.replace('_', ' ')}"


def _failed_table(report: Report) -> str:
    total = len(report.failed) + report.unlisted
    if not total:
        return "<h2>Failed lines</h2><p>None: every line ended ok.</p>"
    columns = ("line", "outcome", "ErrorCode", "attempts", "ErrorInfo", "note", "message")
    head = "".join(f"<th>{name}</th>" for name in columns)
    rows = []
    for o in report.failed:
        message = "" if o.msg_key is None else f"{o.from_account} -> {o.to_account} {o.msg_key}"
        cells = (o.line, o.status.value, o.code, o.attempts, o.info, o.note, message)
        rows.append(
            "<tr>"
            + "".join(f"<td>{html.escape('' if c is None else str(c))}</td>" for c in cells)
            + "</tr>"
        )
    more = (
        f"<p>... and {report.unlisted} more (see the results log).</p>" if report.unlisted else ""
    )
    return (
        f"<h2>{report.listing.capitalize()} ({total})</h2>"
        f"<table><tr>{head}</tr>{''.join(rows)}</table>{more}"
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
