"""``batchedit emulator``: serve the emulator from the command line."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Literal

import click
import orjson

from batchedit.emulator.app import Emulator, EmulatorConfig
from batchedit.emulator.demo import seed_demo
from batchedit.emulator.faults import Faults
from batchedit.emulator.server import is_loopback, serve
from batchedit.emulator.store import Store
from batchedit.emulator.tls import ServerTls, load_certificate, make_certificate
from batchedit.im.auth import read_secret_key
from batchedit.im.errors import ConfigError


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


def _check_host(host: str, allow_remote: bool) -> None:
    if not allow_remote and not is_loopback(host):
        raise click.UsageError(
            f"--host {host} is not a loopback address, and the control endpoints hand out every "
            "stored message: pass --allow-remote to serve it anyway"
        )


_RATE = click.FloatRange(0, 1)


class _Refused(click.ClickException):
    """A request the emulator will not serve: exit 2, nothing written."""

    exit_code = 2


def _read_state(state: Path) -> bytes:
    """What ``--state`` holds (nothing if it is new), refused at start if it cannot be written on
    shutdown: the state would otherwise be lost then."""
    folder = state.absolute().parent
    if not folder.is_dir():
        raise _Refused(f"cannot write --state {state}: no directory {folder}")
    if not os.access(folder, os.W_OK):
        raise _Refused(f"cannot write --state {state}: permission denied on {folder}")
    try:
        return state.read_bytes() if state.exists() else b""
    except OSError as exc:
        raise _Refused(f"cannot read --state {state}: {exc.strerror}") from None


def _server_tls(
    host: str, tls: bool, cert: Path | None, key: Path | None, ca_out: Path | None
) -> ServerTls | None:
    """The HTTPS setup the --tls options ask for (``None``: plain HTTP)."""
    if key is not None and cert is None:
        raise _Refused("--tls-key needs --tls-cert")
    if cert is not None:
        if ca_out is not None:
            raise _Refused("--tls-ca-out writes the CA that --tls makes; --tls-cert brings its own")
        return load_certificate(cert, key)
    if not tls:
        if ca_out is not None:
            raise _Refused("--tls-ca-out needs --tls")
        return None
    if ca_out is None:
        raise _Refused(
            "--tls makes a new CA at each start: give --tls-ca-out FILE to write it for the "
            "client's --ca-file (or serve your own certificate with --tls-cert)"
        )
    return make_certificate(host)


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a --host that is not a loopback address (anyone who reaches it can read and "
    "change every message through the control endpoints).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=5080,
    show_default=True,
    help="Port to bind (0: any free one).",
)
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
@click.option(
    "--retention-days",
    type=click.FloatRange(min=0),
    default=7.0,
    show_default=True,
    help="Roaming window: older messages cannot be read, recalled or modified (0: no window).",
)
@click.option(
    "--edit-recalled",
    type=click.Choice(["allow", "refuse"]),
    default="allow",
    show_default=True,
    help="Whether a recalled message may be modified (unverified; refused with 20023).",
)
@click.option("--transient-rate", type=_RATE, default=0.0, help="Share answered 20004/20005/...")
@click.option("--throttle-rate", type=_RATE, default=0.0, help="Share answered the rate code.")
@click.option("--http-502-rate", type=_RATE, default=0.0, help="Share answered HTTP 502.")
@click.option("--latency-ms", default="0", help="Answer delay range MIN-MAX in milliseconds.")
@click.option("--slow-rate", type=_RATE, default=0.0, help="Share answered after --slow-seconds.")
@click.option("--slow-seconds", default=60.0, show_default=True, help="Delay of a slow answer.")
@click.option("--drop-rate", type=_RATE, default=0.0, help="Share of connections dropped.")
@click.option("--key-code", multiple=True, help="MSGKEY=CODE: always answer CODE for MSGKEY.")
@click.option("--fail-first", default=0, help="Answer the first N requests with --fail-first-code.")
@click.option("--fail-first-code", default=20005, show_default=True, help="Code for --fail-first.")
@click.option(
    "--demo-data",
    type=click.IntRange(min=0),
    default=0,
    help="Seed N demo messages among a few hundred users.",
)
@click.option(
    "--demo-targets",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --demo-data: write the messages' edit targets here (JSONL).",
)
@click.option(
    "--tls",
    is_flag=True,
    help="Serve HTTPS with a certificate for 127.0.0.1, ::1, localhost and --host, signed by a "
    "CA made at start (needs batchedit[tls]); see --tls-ca-out.",
)
@click.option(
    "--tls-ca-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --tls: write the made CA's certificate here (PEM), for the client's --ca-file.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Serve HTTPS with this PEM certificate chain instead of a made one.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The unencrypted PEM private key of --tls-cert (default: read from --tls-cert).",
)
def emulator_command(
    host: str,
    allow_remote: bool,
    port: int,
    sdkappid: int,
    admins: tuple[str, ...],
    secret_key_file: Path | None,
    state: Path | None,
    seed: int,
    rate_limit: int,
    rate_code: int,
    unknown_msgkey_code: int,
    retention_days: float,
    edit_recalled: Literal["allow", "refuse"],
    transient_rate: float,
    throttle_rate: float,
    http_502_rate: float,
    latency_ms: str,
    slow_rate: float,
    slow_seconds: float,
    drop_rate: float,
    key_code: tuple[str, ...],
    fail_first: int,
    fail_first_code: int,
    demo_data: int,
    demo_targets: Path | None,
    tls: bool,
    tls_ca_out: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> None:
    """Serve a local emulator of the IM REST API until Ctrl-C.

    Control endpoints: GET /__emulator/stats, POST /__emulator/stats/reset,
    GET|POST /__emulator/faults, GET /__emulator/state, POST /__emulator/save.
    """
    _check_host(host, allow_remote)
    try:
        key = read_secret_key(secret_key_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if key is None:
        raise click.ClickException("no secret key: set TIM_SECRET_KEY or pass --secret-key-file")
    if demo_targets is not None and not demo_data:
        raise _Refused("--demo-targets needs --demo-data (the messages whose targets it writes)")
    saved = _read_state(state) if state is not None else b""
    if demo_data and saved.strip():
        raise _Refused(
            f"--state {state} already holds data, and --demo-data would add {demo_data} more "
            "messages to it; give a new --state file, or leave out --demo-data to serve it as it is"
        )
    try:
        server_tls = _server_tls(host, tls, tls_cert, tls_key, tls_ca_out)
    except ConfigError as exc:
        raise _Refused(str(exc)) from None
    except OSError as exc:  # the state saved on shutdown: its folder went away, or the disk is full
        raise click.ClickException(f"cannot save --state {state}: {exc.strerror}") from None
    try:
        store = Store.load(saved.splitlines())
    except ValueError as exc:
        raise _Refused(f"--state {state}: {exc}") from None
    config = EmulatorConfig(
        sdkappid=sdkappid,
        secret_key=key.reveal(),
        admins=frozenset(admins),
        rate_limit=rate_limit or None,
        rate_code=rate_code,
        unknown_msgkey_code=unknown_msgkey_code,
        seed=seed,
        state_path=state,
        retention_days=retention_days or None,
        edit_recalled=edit_recalled,
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
        fail_first_code=fail_first_code,
    )
    emu = Emulator(config, store=store, faults=faults)
    targets = seed_demo(store, demo_data, seed, int(time.time())) if demo_data else []

    def listening(line: str) -> None:
        # Only once the port is bound: an emulator that cannot start leaves no files behind.
        if tls_ca_out is not None and server_tls is not None and server_tls.ca_pem is not None:
            tls_ca_out.write_bytes(server_tls.ca_pem)
        if demo_targets is not None and demo_data:
            demo_targets.write_bytes(b"".join(orjson.dumps(t) + b"\n" for t in targets))
        click.echo(line, err=True)

    try:
        context = server_tls.context if server_tls else None
        asyncio.run(serve(emu, host, port, listening, context))
    except ConfigError as exc:
        raise _Refused(str(exc)) from None
    except OSError as exc:  # the state saved on shutdown: its folder went away, or the disk is full
        raise click.ClickException(f"cannot save --state {state}: {exc.strerror}") from None
