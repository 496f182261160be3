"""The ``batchedit`` command: a thin click layer over the library."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
import time
from pathlib import Path
from typing import BinaryIO

import click
import orjson

from batchedit.auth import Secret, SigSource
from batchedit.client import resolve_endpoint
from batchedit.emulator import Emulator, EmulatorConfig, Faults, Store, seed_demo, serve
from batchedit.errors import BatchEditError, ConfigError
from batchedit.outcomes import Summary
from batchedit.progress import ConsoleObserver, count_lines
from batchedit.retry import RetryPolicy
from batchedit.runner import RunConfig, RunControl, run_batch

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_CONFIG = 2
EXIT_ABORTED = 3
EXIT_INTERRUPTED = 130


class ConfigProblem(click.ClickException):
    """A configuration error: exit 2, nothing was sent."""

    exit_code = EXIT_CONFIG


def read_secret_key(secret_key_file: Path | None) -> Secret | None:
    """The secret key from ``--secret-key-file`` or else ``TIM_SECRET_KEY``; ``None`` if neither."""
    if secret_key_file is not None:
        try:
            text = secret_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the secret key file: {exc.strerror}") from None
        if not text:
            raise ConfigError(f"the secret key file {secret_key_file} is empty")
        return Secret(text)
    value = os.environ.get("TIM_SECRET_KEY", "").strip()
    return Secret(value) if value else None


def _range_ms(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    try:
        pair = (float(low), float(high or low))
    except ValueError:
        raise click.BadParameter(f"expected MIN-MAX in milliseconds, got {text!r}") from None
    if pair[0] < 0 or pair[1] < pair[0]:
        raise click.BadParameter(f"expected 0 <= MIN <= MAX, got {text!r}")
    return pair


def _key_codes(pairs: tuple[str, ...]) -> dict[str, int]:
    codes = {}
    for pair in pairs:
        key, sep, code = pair.rpartition("=")
        if not sep or not key or not code.lstrip("-").isdigit():
            raise click.BadParameter(f"expected MSGKEY=CODE, got {pair!r}")
        codes[key] = int(code)
    return codes


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="batchedit")
def main() -> None:
    """Rewrite historical one-to-one Tencent Cloud IM messages in bulk, safely.

    Run `batchedit COMMAND --help` for each command's options.
    """


_RATE = click.FloatRange(0, 1)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=5080, show_default=True, help="Port to bind (0: any free one).")
@click.option("--sdkappid", default=1400000000, show_default=True, help="The emulated SDKAppID.")
@click.option(
    "--admin",
    "admins",
    multiple=True,
    default=("administrator",),
    show_default=True,
    help="An App admin identifier (repeatable).",
)
@click.option(
    "--secret-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the app's secret key (else TIM_SECRET_KEY).",
)
@click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSONL state: loaded at start if it exists, written on shutdown and on "
    "POST /__emulator/save.",
)
@click.option("--seed", default=0, show_default=True, help="Seed for faults and demo data.")
@click.option(
    "--rate-limit",
    default=200,
    show_default=True,
    help="Requests per sliding second per API before the rate code (0: no limit).",
)
@click.option("--rate-code", default=60007, show_default=True, help="Code for the excess.")
@click.option(
    "--unknown-msgkey-code",
    default=20026,
    show_default=True,
    help="Code for modifying a MsgKey that does not exist (unverified; 90054 is the other "
    "candidate).",
)
@click.option("--transient-rate", type=_RATE, default=0.0, help="Share answered 20004/20005/...")
@click.option("--throttle-rate", type=_RATE, default=0.0, help="Share answered the rate code.")
@click.option("--http-502-rate", type=_RATE, default=0.0, help="Share answered HTTP 502.")
@click.option("--latency-ms", default="0", help="Answer delay range MIN-MAX in milliseconds.")
@click.option("--slow-rate", type=_RATE, default=0.0, help="Share answered after --slow-seconds.")
@click.option("--slow-seconds", default=60.0, show_default=True, help="Delay of a slow answer.")
@click.option("--drop-rate", type=_RATE, default=0.0, help="Share of connections dropped.")
@click.option("--key-code", multiple=True, help="MSGKEY=CODE: always answer CODE for MSGKEY.")
@click.option("--fail-first", default=0, help="Answer the first N requests with 20005.")
@click.option("--demo-data", default=0, help="Seed N demo messages among a few hundred users.")
@click.option(
    "--demo-targets",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --demo-data: write the messages' edit targets here (JSONL).",
)
def emulator(
    host: str,
    port: int,
    sdkappid: int,
    admins: tuple[str, ...],
    secret_key_file: Path | None,
    state: Path | None,
    seed: int,
    rate_limit: int,
    rate_code: int,
    unknown_msgkey_code: int,
    transient_rate: float,
    throttle_rate: float,
    http_502_rate: float,
    latency_ms: str,
    slow_rate: float,
    slow_seconds: float,
    drop_rate: float,
    key_code: tuple[str, ...],
    fail_first: int,
    demo_data: int,
    demo_targets: Path | None,
) -> None:
    """Serve a local emulator of the IM REST API until Ctrl-C.

    Control endpoints: GET /__emulator/stats, POST /__emulator/stats/reset,
    GET|POST /__emulator/faults, GET /__emulator/state, POST /__emulator/save.
    """
    try:
        key = read_secret_key(secret_key_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if key is None:
        raise click.ClickException("no secret key: set TIM_SECRET_KEY or pass --secret-key-file")
    store = Store.load(state.read_bytes().splitlines()) if state and state.exists() else Store()
    config = EmulatorConfig(
        sdkappid=sdkappid,
        secret_key=key.reveal(),
        admins=frozenset(admins),
        rate_limit=rate_limit or None,
        rate_code=rate_code,
        unknown_msgkey_code=unknown_msgkey_code,
        seed=seed,
        state_path=state,
    )
    faults = Faults(
        transient_rate=transient_rate,
        throttle_rate=throttle_rate,
        http_502_rate=http_502_rate,
        latency_ms=_range_ms(latency_ms),
        slow_rate=slow_rate,
        slow_seconds=slow_seconds,
        drop_rate=drop_rate,
        key_codes=_key_codes(key_code),
        fail_first=fail_first,
    )
    emu = Emulator(config, store=store, faults=faults)
    if demo_data:
        targets = seed_demo(store, demo_data, seed, int(time.time()))
        if demo_targets is not None:
            demo_targets.write_bytes(b"".join(orjson.dumps(t) + b"\n" for t in targets))
    asyncio.run(serve(emu, host, port, lambda line: click.echo(line, err=True)))


def _sig_source(sdkappid: int | None, admin: str, secret_key_file: Path | None) -> SigSource:
    if sdkappid is None:
        raise ConfigError("no SDKAppID: set TIM_SDKAPPID or pass --sdkappid")
    key = read_secret_key(secret_key_file)
    usersig = os.environ.get("TIM_USERSIG", "").strip()
    if key is not None:
        return SigSource(sdkappid, admin, secret_key=key)
    if usersig:
        return SigSource(sdkappid, admin, fixed_usersig=Secret(usersig))
    raise ConfigError(
        "no credentials: set TIM_SECRET_KEY, pass --secret-key-file, or set TIM_USERSIG"
    )


def exit_code_for(summary: Summary) -> int:
    """The exit status a script can trust (see ``batchedit run --help``)."""
    if summary.stopped == "interrupted":
        return EXIT_INTERRUPTED
    if summary.stopped is not None:
        return EXIT_ABORTED
    return EXIT_OK if summary.all_ok else EXIT_SOME_FAILED


async def _run_with_signals(
    source: BinaryIO, config: RunConfig, observer: ConsoleObserver
) -> Summary:
    control = RunControl()
    loop = asyncio.get_running_loop()
    presses = 0

    def on_signal() -> None:
        nonlocal presses
        presses += 1
        if presses == 1:
            click.echo(
                "\nstopping: letting in-flight edits finish (Ctrl-C again to cancel them)", err=True
            )
            control.interrupt()
        else:
            control.cancel_now()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        return await run_batch(source, config, observer=observer, control=control)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@main.command()
@click.argument("edits", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--results",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSONL log, one line per final outcome, appended as it happens (required unless "
    "--dry-run).",
)
@click.option("--sdkappid", type=int, envvar="TIM_SDKAPPID", help="SDKAppID [env TIM_SDKAPPID].")
@click.option(
    "--admin",
    envvar="TIM_ADMIN",
    default="administrator",
    show_default=True,
    help="App admin identifier [env TIM_ADMIN].",
)
@click.option(
    "--secret-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the secret key (else env TIM_SECRET_KEY, else a ready-made TIM_USERSIG). "
    "No flag takes the key itself: it would show in ps.",
)
@click.option("--region", envvar="TIM_REGION", help="Region name, e.g. singapore [env TIM_REGION].")
@click.option("--base-url", envvar="TIM_BASE_URL", help="Explicit endpoint [env TIM_BASE_URL].")
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=200.0,
    show_default=True,
    help="Requests per second, retries included, never exceeded in any sliding second (0: no "
    "limit).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Requests in flight at most.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=6,
    show_default=True,
    help="Attempts per edit for transient errors.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds per HTTP attempt.",
)
@click.option(
    "--breaker",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Stop after this many consecutive failures with one ErrorCode (0: never).",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds in-flight edits may take to finish after Ctrl-C.",
)
@click.option("--resume", is_flag=True, help="Skip lines RESULTS already has as done.")
@click.option("--dry-run", is_flag=True, help="Validate every line, send nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress and no invalid-line list.")
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the summary here as JSON.",
)
def run(
    edits: Path,
    results: Path | None,
    sdkappid: int | None,
    admin: str,
    secret_key_file: Path | None,
    region: str | None,
    base_url: str | None,
    rate: float,
    concurrency: int,
    max_attempts: int,
    timeout: float,
    breaker: int,
    grace: float,
    resume: bool,
    dry_run: bool,
    quiet: bool,
    summary_json: Path | None,
) -> None:
    """Apply the edits in EDITS (JSONL, or - for stdin) with modify_c2c_msg.

    Each line is a modify_c2c_msg body: From_Account, To_Account, MsgKey, and MsgBody and/or
    CloudCustomData. Invalid lines are reported with their line number and never sent.

    \b
    Exit status:
      0    every line ok
      1    some line failed or was invalid
      2    usage or configuration error (nothing sent)
      3    run aborted: fatal auth/permission/app error, or the circuit breaker
      130  interrupted (after letting in-flight edits finish)
    """
    try:
        if results is None and not dry_run:
            raise ConfigError("--results is required (unless --dry-run)")
        if resume and results is None:
            raise ConfigError("--resume needs --results")
        endpoint, sig = "", None
        if not dry_run:
            endpoint = resolve_endpoint(region, base_url)
            sig = _sig_source(sdkappid, admin, secret_key_file)
        config = RunConfig(
            endpoint=endpoint,
            sig=sig,
            results=results,
            rate=rate or None,
            concurrency=concurrency,
            policy=RetryPolicy(max_attempts=max_attempts),
            timeout=timeout,
            resume=resume,
            dry_run=dry_run,
            breaker=breaker,
            grace=grace,
        )
        source = sys.stdin.buffer if str(edits) == "-" else _open(edits)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None
    live = sys.stderr.isatty()
    total = None
    if live and source is not sys.stdin.buffer and stat.S_ISREG(os.fstat(source.fileno()).st_mode):
        total = count_lines(str(edits))
    observer = ConsoleObserver(sys.stderr, total, live=live, quiet=quiet)
    try:
        with source:
            summary = asyncio.run(_run_with_signals(source, config, observer))
    except BatchEditError as exc:
        raise ConfigProblem(str(exc)) from None
    observer.finish()
    click.echo(summary.render(), err=True)
    if results is not None and not dry_run:
        click.echo(f"  results: {results}", err=True)
    if summary_json is not None:
        summary_json.write_bytes(orjson.dumps(summary.as_json(), option=orjson.OPT_INDENT_2))
    sys.exit(exit_code_for(summary))


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
