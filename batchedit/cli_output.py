"""The output options every long command takes (``run``, ``undo``, ``plan``): what it writes to
stderr, how often, in which format, and the Prometheus metrics it serves meanwhile.

A command decorated with :func:`output_options` receives them as one ``out`` argument, an
:class:`Output`; everything the command writes to stderr goes through it (``out.say``), and
``with out.watch(total) as observer`` gives the observer to hand to the library.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click

from batchedit.cli_common import ConfigProblem, F, with_options
from batchedit.console import Console
from batchedit.emulator.server import is_loopback
from batchedit.progress import ConsoleObserver, Observer, Observers

LOG_FORMAT = "batchedit.log_format"
"""Where ``--log-format`` is kept in the click context's ``meta``, for errors shown as JSON."""

METRICS_MISSING = (
    "--metrics-port needs the prometheus-client package: pip install 'batchedit[metrics]'"
)


def _remember_format(ctx: click.Context, _: click.Parameter, value: str) -> str:
    ctx.meta[LOG_FORMAT] = value
    return value


_OUTPUT_OPTIONS = [
    click.option(
        "--quiet",
        "-q",
        is_flag=True,
        help="No progress and no list of invalid lines; the start line and the summary are "
        "still written (stderr).",
    ),
    click.option(
        "--progress-every",
        type=click.FloatRange(min=0),
        default=10.0,
        show_default=True,
        metavar="SECONDS",
        help="When stderr is not a terminal (a log file, nohup, CI) or with --log-format json: "
        "a progress line every SECONDS (0: none). A terminal gets a live line instead.",
    ),
    click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        is_eager=True,  # parsed first, so that errors in the other options are JSON too
        callback=_remember_format,
        help="json: every line written to stderr (start, progress, warnings, invalid lines, "
        "summary, errors) is one JSON object, for log pipelines.",
    ),
    click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        metavar="PORT",
        help="Serve Prometheus metrics at http://127.0.0.1:PORT/metrics while the command "
        "works (0: a free port, named at the start). Needs batchedit[metrics].",
    ),
    click.option(
        "--metrics-host",
        default="127.0.0.1",
        metavar="ADDRESS",
        show_default=True,
        help="Address --metrics-port binds; one that is not loopback needs --metrics-allow-remote.",
    ),
    click.option(
        "--metrics-allow-remote",
        is_flag=True,
        help="Allow a --metrics-host that is not a loopback address (anyone who reaches it "
        "can read the run's counts).",
    ),
]


@dataclass(frozen=True, slots=True)
class Output:
    """What a long command writes to stderr, and the metrics it serves, as its options say."""

    console: Console
    quiet: bool = False
    progress_every: float = 10.0
    """Seconds between two progress lines when stderr is not a terminal (0: none)."""
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    @property
    def wants_total(self) -> bool:
        """Whether anything shows the number of units to do (worth counting them first)."""
        return not self.quiet or self.metrics_port is not None

    def say(self, event: str, message: str, **fields: Any) -> None:
        """Write one line (``message``, or a JSON object with ``fields`` too)."""
        self.console.line(event, message, **fields)

    @contextlib.contextmanager
    def watch(self, total: int | None, *, logged: bool = True) -> Iterator[Observer]:
        """The observer of one run or plan of ``total`` units (if known): the console's, and,
        with ``--metrics-port``, the metrics', served inside the block; ``logged``: whether a
        results log lists every outcome. On the way out the live line is ended, so that what
        follows starts on a line of its own."""
        console = ConsoleObserver(
            self.console, total, quiet=self.quiet, every=self.progress_every, logged=logged
        )
        try:
            if self.metrics_port is None:
                yield console
                return
            from batchedit.metrics import MetricsObserver, serve_metrics  # noqa: PLC0415 - optional

            metrics = MetricsObserver(total)
            host = self.metrics_host
            with contextlib.ExitStack() as stack:
                try:
                    port = stack.enter_context(
                        serve_metrics(metrics.registry, host, self.metrics_port)
                    )
                except OSError as exc:
                    raise ConfigProblem(
                        f"cannot serve metrics on {host}:{self.metrics_port}: {exc.strerror or exc}"
                    ) from None
                url = f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"
                self.say("metrics", f"metrics: {url}", url=url)
                yield Observers(console, metrics)
        finally:
            console.finish()


def output_options(command: F) -> F:
    """Add the output options; the command receives them as one ``out`` argument. While the
    command runs, the library's notes (logged on the ``batchedit`` logger) go to its console."""
    names = [
        "quiet",
        "progress_every",
        "log_format",
        "metrics_port",
        "metrics_host",
        "metrics_allow_remote",
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        quiet, every, log_format, port, host, remote = (kwargs.pop(name) for name in names)
        if port is not None:
            _check_metrics(host, remote)
        console = Console(sys.stderr, json=log_format == "json")
        out = Output(console, quiet, every, port, host)
        with console.capture_logging():
            return command(*args, out=out, **kwargs)

    return with_options(_OUTPUT_OPTIONS, wrapper)  # type: ignore[return-value]


def _check_metrics(host: str, allow_remote: bool) -> None:
    if not allow_remote and not is_loopback(host):
        raise ConfigProblem(
            f"--metrics-host {host} is not a loopback address: pass --metrics-allow-remote to "
            "serve the metrics beyond this machine"
        )
    try:
        import batchedit.metrics  # noqa: F401, PLC0415 - checked before anything is sent
    except ImportError:
        raise ConfigProblem(METRICS_MISSING) from None


def error_as_json(ctx: click.Context, error: click.ClickException) -> bool:
    """Write ``error`` as one JSON line if the command was given ``--log-format json``;
    whether it did."""
    if ctx.meta.get(LOG_FORMAT) != "json":
        return False
    message = error.format_message()
    Console(sys.stderr, json=True).line("error", message, exit_code=error.exit_code)
    return True
