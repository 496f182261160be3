"""``batchedit plan``: write an edit file (or preview it) from history or a callback archive."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import IO, Any

import click
import orjson

from batchedit.cli_common import (
    EXIT_ABORTED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    ConfigProblem,
    Connection,
    connection_options,
    with_signals,
)
from batchedit.cli_output import Output, output_options
from batchedit.im.client import RoamMessage
from batchedit.im.errors import ConfigError
from batchedit.pairs import BadPair, parse_when, read_pairs
from batchedit.plan import run_callbacks_plan, run_plan
from batchedit.planner import PlanStats, explain_nothing, require_rules
from batchedit.progress import Observer
from batchedit.rules import CcdEdit, Rules, compile_replacement, parse_template
from batchedit.sender import RunControl
from batchedit.transform import Transform

STDIO = Path("-")


def _leaves(prefix: str, value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for name, inner in value.items():
            yield from _leaves(f"{prefix}.{name}", inner)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _leaves(f"{prefix}[{index}]", inner)
    else:
        shown = value if isinstance(value, str) else orjson.dumps(value).decode()
        yield f"{prefix}: {shown}"


def _fields(body: list[Any]) -> list[str]:
    lines: list[str] = []
    for element in body:
        if isinstance(element, dict):
            lines += _leaves(str(element.get("MsgType")), element.get("MsgContent"))
    return lines


def render_change(edit: dict[str, Any], before: RoamMessage) -> str:
    """A readable before/after of one planned edit: the fields it changes."""
    when = dt.datetime.fromtimestamp(before.msg_timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"{before.from_account} -> {before.to_account}  {before.msg_key}  {when} UTC"]
    if "MsgBody" in edit:
        old, new = _fields(before.body), _fields(edit["MsgBody"])
        lines += [f"  - {text}" for text in old if text not in new]
        lines += [f"  + {text}" for text in new if text not in old]
    if "CloudCustomData" in edit:
        lines.append(f"  - CloudCustomData: {before.cloud_custom_data or ''}")
        lines.append(f"  + CloudCustomData: {edit['CloudCustomData']}")
    return "\n".join(lines)


class _Preview:
    """Prints the first ``limit`` planned changes, then asks planning to stop."""

    def __init__(self, limit: int) -> None:
        self._left = limit

    def __call__(self, edit: dict[str, Any], before: RoamMessage) -> bool:
        if self._left <= 0:  # another conversation's reader got here first
            return False
        click.echo(render_change(edit, before) + "\n")
        self._left -= 1
        return self._left > 0


def _rules(
    replacements: tuple[tuple[str, str], ...],
    custom_desc: bool,
    custom_data: bool,
    ccd_template: str | None,
    rewrite_urls: tuple[tuple[str, str], ...],
    ccd_renames: tuple[tuple[str, str], ...],
    ccd_sets: tuple[tuple[str, str], ...],
    ccd_deletes: tuple[str, ...],
) -> Rules:
    edits = [CcdEdit.rename(*rule) for rule in ccd_renames]
    edits += [CcdEdit.set(*rule) for rule in ccd_sets]
    edits += [CcdEdit.delete(path) for path in ccd_deletes]
    return Rules(
        replacements=tuple(compile_replacement(*rule) for rule in replacements),
        custom_desc=custom_desc,
        custom_data=custom_data,
        cloud_custom_data=parse_template(ccd_template) if ccd_template is not None else None,
        url_rewrites=rewrite_urls,
        ccd_edits=tuple(edits),
    )


def _pairs(path: Path, out: Output) -> tuple[list[tuple[str, str]], int]:
    """The conversations of PAIRS, and how many lines were bad (each printed)."""
    conversations: list[tuple[str, str]] = []
    bad = 0
    for pair in read_pairs(path):
        if isinstance(pair, BadPair):
            bad += 1
            out.say("skipped", f"skipped: {pair.reason}")
        else:
            conversations.append(pair)
    return conversations, bad


def _when(since: str | None, until: str | None) -> tuple[int | None, int | None]:
    start = parse_when(since) if since is not None else None
    end = parse_when(until, end=True) if until is not None else None
    if start is not None and end is not None and start > end:
        raise ConfigError(f"--since ({since}) is after --until ({until})")
    return start, end


def _report(stats: PlanStats, planned_from_history: bool, out: Output) -> bool:
    """Print the summary and every problem; whether anything was left out (exit 1)."""
    if planned_from_history:
        head = (
            f"plan: {stats.conversations} conversations read, {stats.messages} messages "
            f"({stats.recalled} recalled, skipped)"
        )
        tail = f"{stats.requests} admin_getroammsg requests"
    else:
        head = f"plan: {stats.archive_lines} archive lines, {stats.messages} messages"
        tail = "no API requests"
    out.say(
        "summary",
        f"{head}, {stats.planned} edits planned, {tail}",
        conversations=stats.conversations,
        archive_lines=stats.archive_lines,
        messages=stats.messages,
        recalled=stats.recalled,
        planned=stats.planned,
        requests=stats.requests,
        elapsed_s=round(stats.elapsed, 3),
    )
    for kind, count in sorted(stats.skipped.items()):
        out.say("skipped", f"skipped: {count} {kind}", kind=kind, count=count)
    for line in stats.bad_lines:
        out.say("skipped", f"skipped: {line.reason}")
    for failure in stats.failed_conversations:
        out.say("not_read", f"not read: {failure}")
    for problem in stats.problems:
        out.say("not_planned", f"not planned: {problem}")
    return bool(stats.bad_lines or stats.failed_conversations or stats.problems)


@click.command("plan")
@click.argument(
    "pairs", required=False, type=click.Path(dir_okay=False, exists=True, path_type=Path)
)
@click.option(
    "--from-callbacks",
    "archive",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Plan from this archive of C2C.CallbackAfterSendMsg payloads (JSONL, - for stdin) "
    "instead of reading history: no API requests. Give no PAIRS.",
)
@click.option("--since", help="Start of the range: UNIX seconds or a date (UTC).")
@click.option("--until", help="End of the range (a bare date: its whole day).")
@click.option(
    "--replace",
    "replacements",
    type=(str, str),
    multiple=True,
    metavar="REGEX REPLACEMENT",
    help="Replace matches in each TIMTextElem Text (repeatable; Python re syntax, \\1 works).",
)
@click.option("--custom-desc", is_flag=True, help="Apply --replace to TIMCustomElem Desc too.")
@click.option(
    "--custom-data", is_flag=True, help="Apply --replace to TIMCustomElem Data and Ext too."
)
@click.option(
    "--rewrite-url",
    "rewrite_urls",
    type=(str, str),
    multiple=True,
    metavar="OLD_PREFIX NEW_PREFIX",
    help="In every URL of every image, sound, file and video element: a URL starting with "
    "OLD_PREFIX starts with NEW_PREFIX instead (repeatable; the first that matches applies).",
)
@click.option(
    "--set-cloud-custom-data",
    "ccd_template",
    metavar="TEMPLATE",
    help="New CloudCustomData; may use $MsgKey $From_Account $To_Account $MsgTimeStamp "
    "$CloudCustomData (the current value).",
)
@click.option(
    "--ccd-rename",
    "ccd_renames",
    type=(str, str),
    multiple=True,
    metavar="PATH NEW_KEY",
    help="In a JSON-object CloudCustomData, rename the key at PATH (dotted: meta.tag) in place.",
)
@click.option(
    "--ccd-set",
    "ccd_sets",
    type=(str, str),
    multiple=True,
    metavar="PATH VALUE",
    help="In a JSON-object CloudCustomData, set PATH to VALUE (JSON: 2, true, '\"text\"').",
)
@click.option(
    "--ccd-delete",
    "ccd_deletes",
    multiple=True,
    metavar="PATH",
    help="In a JSON-object CloudCustomData, delete the key at PATH.",
)
@click.option(
    "--transform",
    "transform_spec",
    metavar="MODULE:FUNCTION",
    help="Call this Python function (or path/to/file.py:FUNCTION) with each message first; it "
    "returns the new MsgBody and/or CloudCustomData as a dict, or None to leave it alone.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Write the edit file here (JSONL), ready for `batchedit run`; - writes each edit to "
    "stdout as it is planned.",
)
@click.option(
    "--preview",
    type=click.IntRange(min=1),
    help="Print a before/after of the first N changes instead of writing.",
)
@connection_options
@output_options
def plan_command(
    pairs: Path | None,
    archive: Path | None,
    since: str | None,
    until: str | None,
    replacements: tuple[tuple[str, str], ...],
    custom_desc: bool,
    custom_data: bool,
    rewrite_urls: tuple[tuple[str, str], ...],
    ccd_template: str | None,
    ccd_renames: tuple[tuple[str, str], ...],
    ccd_sets: tuple[tuple[str, str], ...],
    ccd_deletes: tuple[str, ...],
    transform_spec: str | None,
    output: Path | None,
    preview: int | None,
    conn: Connection,
    out: Output,
) -> None:
    """Write an edit file from history or a callback archive: one edit per message changed.

    Reads the conversations in PAIRS over the time range (or the messages of a callback
    archive) and writes an edit record for every message that --transform and the rules
    change. The transform runs first; the rules then apply to what it returned.

    PAIRS is a CSV of two UserIDs per row (no header) or JSONL: ["a", "b"], {"a": .., "b": ..},
    or any object with From_Account and To_Account (an edit file, --demo-targets output).
    Each conversation is read once; recalled messages are skipped; each edit names its message's
    own sender and recipient.

    \b
    Exit status: 0 planned, 1 some pair line, archive line, conversation or
    message could not be read or planned (each is named), 2 usage or
    configuration error, 3 stopped by a fatal answer (credentials,
    permissions, URL, unreachable host), by losing the shared budget
    (--budget), by the output's reader going away or by an error (shown),
    130 interrupted (Ctrl-C, SIGTERM, SIGHUP).
    """
    try:
        if (output is None) == (preview is None):
            raise ConfigError("give exactly one of --output FILE and --preview N")
        if (pairs is None) == (archive is None):
            raise ConfigError("give PAIRS (to read history) or --from-callbacks FILE, not both")
        rules = _rules(
            replacements,
            custom_desc,
            custom_data,
            ccd_template,
            rewrite_urls,
            ccd_renames,
            ccd_sets,
            ccd_deletes,
        )
        transform = Transform.load(transform_spec) if transform_spec is not None else None
        require_rules(rules, transform)
        start, end = _when(since, until)
        if pairs is not None and (start is None or end is None):
            raise ConfigError("reading history needs --since and --until")
        conversations, bad = _pairs(pairs, out) if pairs is not None else ([], 0)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None
    shown = _Preview(preview) if preview is not None else None

    def plan(
        control: RunControl, target: Target, source: IO[bytes] | None, observer: Observer
    ) -> Awaitable[PlanStats]:
        if source is not None:
            return run_callbacks_plan(
                source,
                rules,
                since=start,
                until=end,
                output=target,
                archive_file=archive if archive != STDIO else None,
                preview=shown,
                observer=observer,
                control=control,
                transform=transform,
            )
        return run_plan(
            conversations,
            start or 0,
            end or 0,
            rules,
            conn.api(),
            output=target,
            pairs_file=pairs,
            preview=shown,
            observer=observer,
            control=control,
            transform=transform,
        )

    try:
        with (
            _opened(output, archive) as (target, source),
            out.watch(len(conversations) or None) as observer,
        ):
            stats = asyncio.run(
                with_signals(lambda control: plan(control, target, source, observer))
            )
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None
    _finish(
        stats, bad, output, out, from_history=pairs is not None, rules=rules, transform=transform
    )


Target = Path | IO[bytes] | None


@contextlib.contextmanager
def _opened(output: Path | None, archive: Path | None) -> Iterator[tuple[Target, IO[bytes] | None]]:
    """The output (a path, or stdout for -) and the archive opened for reading (stdin for -)."""
    with contextlib.ExitStack() as stack:
        target: Target = output
        if output == STDIO:
            try:
                # Unbuffered, on stdout's descriptor: nothing is left to flush into a closed pipe.
                target = stack.enter_context(open(sys.stdout.fileno(), "wb", 0, closefd=False))
            except (OSError, ValueError):  # stdout is no file (a test harness): write to it
                target = sys.stdout.buffer
        source: IO[bytes] | None = None
        if archive == STDIO:
            # Never closed: a reading thread may still wait in it, and closing would wait too.
            source = open(sys.stdin.fileno(), "rb", closefd=False)  # noqa: SIM115 - see above
        elif archive is not None:
            try:
                source = stack.enter_context(archive.open("rb"))
            except OSError as exc:
                raise ConfigError(f"cannot read {archive}: {exc.strerror}") from None
        yield target, source


def _finish(
    stats: PlanStats,
    bad: int,
    output: Path | None,
    out: Output,
    *,
    from_history: bool,
    rules: Rules,
    transform: Transform | None,
) -> None:
    left_out = _report(stats, from_history, out)
    if stats.planned == 0 and stats.messages > stats.recalled and stats.stopped is None:
        out.say("nothing_planned", f"nothing planned: {explain_nothing(stats, rules, transform)}")
    if stats.stopped is not None:
        written = "; nothing written" if output is not None and output != STDIO else ""
        message = f"STOPPED ({stats.stopped}): {stats.reason}{written}"
        out.say("stopped", message, stopped=stats.stopped, reason=stats.reason)
        sys.exit(EXIT_INTERRUPTED if stats.stopped == "interrupted" else EXIT_ABORTED)
    if output == STDIO:
        out.say("wrote", f"wrote {stats.planned} edits to stdout in {stats.elapsed:.1f} s")
    elif output is not None:
        out.say("wrote", f"wrote {output} in {stats.elapsed:.1f} s", path=output)
    sys.exit(EXIT_SOME_FAILED if bad or left_out else EXIT_OK)
