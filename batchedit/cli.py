"""The ``batchedit`` command: a thin click layer over the library."""

from __future__ import annotations

import asyncio
import functools
import gc
import sys
from pathlib import Path
from typing import IO, Any, TypedDict

import click
import orjson

from batchedit.backup import read_backup
from batchedit.cli_common import (
    EXIT_ABORTED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    ConfigProblem,
    Connection,
    F,
    connection_options,
    with_options,
    with_signals,
)
from batchedit.cli_output import Output, error_as_json, output_options
from batchedit.cli_plan import plan_command
from batchedit.cli_report import report_command
from batchedit.edits import Edits, LineKind
from batchedit.emulator.cli import emulator_command
from batchedit.im.errors import ConfigError, ImError
from batchedit.outcomes import Summary
from batchedit.progress import count_lines
from batchedit.runner import RunConfig, run_batch
from batchedit.verify import ReadBack

EXIT_STATUS_HELP = """\b
Exit status:
  0    every line ok (verify: every line match)
  1    some line failed or was invalid; undo: or conflict (changed since
       the run, not restored); verify: or mismatch or missing
  2    usage or configuration error (nothing sent)
  3    run aborted: fatal auth/permission/app/URL error, unreachable host,
       the circuit breaker, the shared budget (--budget) lost, or a log or
       input that failed (shown)
  130  interrupted by Ctrl-C, SIGTERM or SIGHUP (the first lets in-flight
       edits finish for --grace seconds, a second cancels them)
"""


class _Commands(click.Group):
    """A group that lists each command with its whole first sentence (click cuts it short)."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; with ``--log-format json``, show a usage or configuration error as
        one JSON line."""
        try:
            return super().invoke(ctx)
        except click.ClickException as error:
            if not error_as_json(ctx, error):
                raise
            raise click.exceptions.Exit(error.exit_code) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="batchedit")
def main() -> None:
    """Rewrite historical one-to-one Tencent Cloud IM messages in bulk, safely.

    Run `batchedit COMMAND --help` for each command's options.
    """


main.add_command(emulator_command)
main.add_command(plan_command)
main.add_command(report_command)


def exit_code_for(summary: Summary) -> int:
    """The exit status a script can trust (see ``batchedit run --help``)."""
    if summary.stopped == "interrupted":
        return EXIT_INTERRUPTED
    if summary.stopped is not None:
        return EXIT_ABORTED
    return EXIT_OK if summary.all_ok else EXIT_SOME_FAILED


_RUN_OPTIONS = [
    click.option(
        "--results",
        type=click.Path(dir_okay=False, path_type=Path),
        help="JSONL log, one line per final outcome, appended as it happens.",
    ),
    click.option(
        "--breaker",
        type=click.IntRange(min=0),
        default=50,
        show_default=True,
        help="Stop after this many consecutive failures with one ErrorCode (0: never).",
    ),
    click.option(
        "--grace",
        type=click.FloatRange(min=0),
        default=10.0,
        show_default=True,
        help="Seconds in-flight edits may take to finish after Ctrl-C or SIGTERM.",
    ),
    click.option(
        "--settle",
        type=click.FloatRange(min=0),
        help="After an attempt at a message timed out, hold that message's next edit back this "
        "many seconds, so the late request cannot land after it [default: --timeout].",
    ),
    click.option("--resume", is_flag=True, help="Skip lines RESULTS already has as done."),
    click.option(
        "--summary-json",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Also write the summary here as JSON.",
    ),
]


class RunFlags(TypedDict):
    """The options every sending command shares (fields of :class:`RunConfig`)."""

    results: Path | None
    breaker: int
    grace: float
    settle: float | None
    resume: bool
    summary_json: Path | None


_RUN_NAMES = tuple(RunFlags.__annotations__)


def _run_options(command: F) -> F:
    """Add the options every sending command shares; the command receives them as one ``flags``
    argument (:class:`RunFlags`)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name) for name in _RUN_NAMES}
        return command(*args, flags=flags, **kwargs)

    return with_options(_RUN_OPTIONS, wrapper)  # type: ignore[return-value]


def _execute(
    source: IO[bytes], config: RunConfig, out: Output, *, kind: LineKind | None = None
) -> None:
    """Run, show the summary, write ``--summary-json``, exit with the run's status."""
    total = count_lines(source) if out.wants_total else None
    # Everything alive now lives as long as the run: keep it out of the cyclic GC, whose full
    # passes would otherwise pause the loop for milliseconds and bunch requests together.
    gc.freeze()
    # The youngest generation is collected once 700 more objects live than at the last pass; a
    # run keeps thousands alive a moment (requests in flight, records waiting), each pass walks
    # them all again, and that cost 3 µs per edit. Ten times fewer passes, the same garbage freed.
    gc.set_threshold(10_000, 10, 10)
    # glibc serves blocks over its mmap threshold (128 KiB at first) with mmap, so each 256 KiB
    # buffer asyncio receives an answer into would cost an mmap, mremap and munmap. Freeing one
    # larger block raises that threshold (glibc sets it to the size of a mapped block freed),
    # and those buffers come from the heap. Elsewhere this is only a short-lived allocation.
    bytes(1024 * 1024)
    try:
        logged = config.results is not None and not config.dry_run
        with source, out.watch(total, logged=logged) as observer:
            summary = asyncio.run(
                with_signals(
                    lambda control: run_batch(
                        source, config, observer=observer, control=control, kind=kind
                    )
                )
            )
    except ImError as exc:
        raise ConfigProblem(str(exc)) from None
    lines = [summary.render()]
    results = config.results if not config.dry_run else None
    if results is not None:
        lines.append(f"  results: {results}")
    if config.backup is not None and not config.dry_run:
        lines.append(f"  backup: {config.backup} (undo: batchedit undo {config.backup})")
    fields = {"summary": summary.as_json(), "results": results, "backup": config.backup}
    out.say("summary", "\n".join(lines), **fields)
    if config.summary_json is not None:
        try:
            config.summary_json.write_bytes(
                orjson.dumps(summary.as_json(), option=orjson.OPT_INDENT_2)
            )
        except OSError as exc:
            out.say("warning", f"cannot write --summary-json {config.summary_json}: {exc.strerror}")
    sys.exit(exit_code_for(summary))


def _config(
    conn: Connection, flags: RunFlags, *, reads_on_dry_run: bool = False, **options: Any
) -> RunConfig:
    dry_run = bool(options.get("dry_run"))
    if flags["results"] is None and not dry_run:
        raise ConfigError("--results is required (unless --dry-run)")
    if flags["resume"] and flags["results"] is None:
        raise ConfigError("--resume needs --results")
    offline = dry_run and not reads_on_dry_run
    return RunConfig(
        **flags,
        endpoint="" if offline else conn.endpoint(),
        sig=None if offline else conn.sig(),
        rate=conn.rate or None,
        concurrency=conn.concurrency,
        policy=conn.policy(),
        timeout=conn.timeout,
        window=conn.window,
        ca_file=conn.ca_file,
        budget=None if offline else conn.budget,
        **options,
    )


@main.command(epilog=EXIT_STATUS_HELP)
@click.argument("edits", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@connection_options
@_run_options
@output_options
@click.option("--dry-run", is_flag=True, help="Validate every line, send nothing.")
@click.option(
    "--backup",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Fetch each message before editing it and append its before-image here; an edit "
    "whose message cannot be found is not sent. Undo with `batchedit undo BACKUP`.",
)
@click.option("--force", is_flag=True, help="With --backup: also send edits that change nothing.")
def run(
    edits: Path,
    conn: Connection,
    flags: RunFlags,
    out: Output,
    dry_run: bool,
    backup: Path | None,
    force: bool,
) -> None:
    """Apply the edits in EDITS (JSONL, or - for stdin) with modify_c2c_msg.

    Each line is a modify_c2c_msg body: From_Account, To_Account, MsgKey, and MsgBody and/or
    CloudCustomData. Invalid lines are reported with their line number and never sent.
    --results is required unless --dry-run.
    """
    try:
        config = _config(
            conn,
            flags,
            dry_run=dry_run,
            backup=backup,
            force=force,
        )
        source = sys.stdin.buffer if str(edits) == "-" else _open(edits)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None
    _execute(source, config, out)


@main.command(epilog=EXIT_STATUS_HELP)
@click.argument("backup", type=click.Path(dir_okay=False, path_type=Path))
@connection_options
@_run_options
@output_options
@click.option(
    "--dry-run",
    is_flag=True,
    help="Look each message up and report what would be restored and what conflicts; send no "
    "edit, write no RESULTS.",
)
@click.option(
    "--backup",
    "backup_to",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append each message's state before the undo here first, as run --backup does, so "
    "the undo can be undone: `batchedit undo BACKUP2`.",
)
@click.option("--force", is_flag=True, help="Restore messages that changed since the run, too.")
def undo(
    backup: Path,
    conn: Connection,
    flags: RunFlags,
    out: Output,
    dry_run: bool,
    backup_to: Path | None,
    force: bool,
) -> None:
    """Restore every message a backed-up run touched to its state before that run.

    BACKUP is the file a `batchedit run --backup BACKUP` wrote. A message edited several times
    returns to its state before the first edit. Each message is read first: one that no longer
    reads as the run left it (someone changed it since) is not restored, its line ends
    `conflict` naming the field, and the undo goes on (exit 1); --force restores it anyway.
    Rows an older batchedit wrote have no record of what the run left: those messages are
    restored without that check. A message that had no CloudCustomData gets an empty one (the
    API cannot delete the field). Rate, retries, --resume and the results log work as for
    `run`; the results' line numbers count messages in order of first appearance in BACKUP.
    --results is required unless --dry-run.
    """
    try:
        config = _config(
            conn,
            flags,
            reads_on_dry_run=True,
            dry_run=dry_run,
            backup=backup_to,
            force=force,
            read_from=backup,
        )
        plan = read_backup(backup)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None
    kind = Edits(undo=plan)
    _execute(plan.source, config, out, kind=kind)


@main.command(epilog=EXIT_STATUS_HELP)
@click.argument("edits", type=click.Path(dir_okay=False, path_type=Path))
@connection_options
@_run_options
@output_options
def verify(
    edits: Path,
    conn: Connection,
    flags: RunFlags,
    out: Output,
) -> None:
    """Read back every message EDITS targets and check that it reads as EDITS says.

    EDITS is an edit file as `run` takes it (a file, not stdin). Each line's message is read
    with admin_getroammsg, and the line ends `match`, `mismatch` (naming the fields that
    differ: MsgBody, CloudCustomData), `missing` (no such message), `failed` (could not be
    read) or `invalid` (a bad line). Only the fields a line sets are compared; several lines
    for one message are all judged against the last one. Rate, retries, --resume and the
    results log work as for `run` (--resume checks again the lines that did not match).
    --results is required.
    """
    try:
        config = _config(
            conn,
            flags,
        )
        if str(edits) == "-":
            raise ConfigError("verify reads EDITS twice, so it must be a file, not stdin")
        source = _open(edits)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None
    _execute(source, config, out, kind=ReadBack())


def _open(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
