"""``batchedit report``: what results logs say, as text or as one self-contained HTML page.

:func:`build_report` reads the logs (no extra needed); :func:`write_html` draws the charts with
matplotlib, from the optional ``report`` extra.
"""

from batchedit.report.build import LISTED, Report, build_report
from batchedit.report.html import MISSING_EXTRA, render_html, write_html
from batchedit.report.logs import ReportError, ResultsLogs, outcome_of_row
from batchedit.report.timeline import PAUSE, Series, Timeline

__all__ = [
    "LISTED",
    "MISSING_EXTRA",
    "PAUSE",
    "Report",
    "ReportError",
    "ResultsLogs",
    "Series",
    "Timeline",
    "build_report",
    "outcome_of_row",
    "render_html",
    "write_html",
]
