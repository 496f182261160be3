"""``batchedit plan``: write an edit file (or preview it) from conversations' history."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import click

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
from batchedit.plan import (
    BadPair,
    Rules,
    compile_replacement,
    parse_template,
    parse_when,
    read_pairs,
    run_plan,
)


def _texts(body: list[Any]) -> list[str]:
    lines = []
    for element in body:
        content = element.get("MsgContent", {}) if isinstance(element, dict) else {}
        for name in ("Text", "Desc"):
            if isinstance(content.get(name), str):
                lines.append(f"{element.get('MsgType')}.{name}: {content[name]}")
    return lines


def render_change(edit: dict[str, Any], before: RoamMessage) -> str:
    """A readable before/after of one planned edit."""
    when = dt.datetime.fromtimestamp(before.msg_timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"{before.from_account} -> {before.to_account}  {before.msg_key}  {when} UTC"]
    if "MsgBody" in edit:
        old, new = _texts(before.body), _texts(edit["MsgBody"])
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


@click.command("plan")
@click.argument("pairs", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--since", required=True, help="Start of the range: UNIX seconds or a date (UTC).")
@click.option("--until", required=True, help="End of the range (a bare date: its whole day).")
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
    "--set-cloud-custom-data",
    "ccd_template",
    metavar="TEMPLATE",
    help="New CloudCustomData; may use $MsgKey $From_Account $To_Account $MsgTimeStamp "
    "$CloudCustomData (the current value).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the edit file here (JSONL), ready for `batchedit run`.",
)
@click.option(
    "--preview",
    type=click.IntRange(min=1),
    help="Print a before/after of the first N changes instead of writing.",
)
@connection_options
@output_options
def plan_command(
    pairs: Path,
    since: str,
    until: str,
    replacements: tuple[tuple[str, str], ...],
    custom_desc: bool,
    ccd_template: str | None,
    output: Path | None,
    preview: int | None,
    conn: Connection,
    out: Output,
) -> None:
    """Write an edit file from history: one edit per message the rules change.

    Reads the conversations in PAIRS over the time range and writes an edit record for every
    message that --replace or --set-cloud-custom-data would change.

    PAIRS is a CSV of two UserIDs per row (no header) or JSONL: ["a", "b"], {"a": .., "b": ..},
    or any object with From_Account and To_Account (an edit file, --demo-targets output).
    Each conversation is read once; recalled messages are skipped; each edit names its message's
    own sender and recipient.

    \b
    Exit status: 0 planned, 1 some pair line or conversation could not be
    read, 2 usage or configuration error, 3 stopped by a fatal answer
    (credentials, permissions, URL, unreachable host), by losing the shared
    budget (--budget) or by an error (shown), 130 interrupted (Ctrl-C,
    SIGTERM, SIGHUP).
    """
    try:
        if (output is None) == (preview is None):
            raise ConfigError("give exactly one of --output FILE and --preview N")
        compiled = [compile_replacement(*rule) for rule in replacements]
        template = parse_template(ccd_template) if ccd_template is not None else None
        rules = Rules(tuple(compiled), custom_desc, template)
        start, end = parse_when(since), parse_when(until, end=True)
        if start > end:
            raise ConfigError(f"--since ({since}) is after --until ({until})")
        conversations: list[tuple[str, str]] = []
        bad = 0
        for pair in read_pairs(pairs):
            if isinstance(pair, BadPair):
                bad += 1
                out.say("skipped", f"skipped: {pair.reason}")
            else:
                conversations.append(pair)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None
    try:
        config = conn.api()
        with out.watch(len(conversations)) as observer:
            stats = asyncio.run(
                with_signals(
                    lambda control: run_plan(
                        conversations,
                        start,
                        end,
                        rules,
                        config,
                        output=output,
                        pairs_file=pairs,
                        preview=_Preview(preview) if preview is not None else None,
                        observer=observer,
                        control=control,
                    )
                )
            )
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None
    out.say(
        "summary",
        f"plan: {stats.conversations} conversations read, {stats.messages} messages "
        f"({stats.recalled} recalled, skipped), {stats.planned} edits planned, "
        f"{stats.requests} admin_getroammsg requests",
        conversations=stats.conversations,
        messages=stats.messages,
        recalled=stats.recalled,
        planned=stats.planned,
        requests=stats.requests,
        elapsed_s=round(stats.elapsed, 3),
    )
    for failure in stats.failed_conversations:
        out.say("not_read", f"not read: {failure}")
    if stats.stopped is not None:
        message = f"STOPPED ({stats.stopped}): {stats.reason}; nothing written"
        out.say("stopped", message, stopped=stats.stopped, reason=stats.reason)
        sys.exit(EXIT_INTERRUPTED if stats.stopped == "interrupted" else EXIT_ABORTED)
    if output is not None:
        out.say("wrote", f"wrote {output} in {stats.elapsed:.1f} s", path=output)
    sys.exit(EXIT_SOME_FAILED if bad or stats.failed_conversations else EXIT_OK)
