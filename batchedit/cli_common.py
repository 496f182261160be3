"""What the command-line modules share: credentials, the connection options, exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from batchedit.console import log_note
from batchedit.im.auth import Secret, SigSource, read_secret_key
from batchedit.im.client import REGIONS, resolve_endpoint
from batchedit.im.errors import ConfigError
from batchedit.retry import RetryPolicy
from batchedit.sender import RunControl
from batchedit.wiring import ApiConfig

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_CONFIG = 2
EXIT_ABORTED = 3
EXIT_INTERRUPTED = 130


class ConfigProblem(click.ClickException):
    """A configuration error: exit 2, nothing was sent."""

    exit_code = EXIT_CONFIG


@dataclass(frozen=True, slots=True)
class Connection:
    """The connection options every talking command takes, as given."""

    sdkappid: int | None
    admin: str
    secret_key_file: Path | None
    region: str | None
    base_url: str | None
    rate: float
    rate_margin: float
    budget: str | None
    concurrency: int
    max_attempts: int
    timeout: float
    ca_file: Path | None

    def endpoint(self) -> str:
        """The base URL (raises :class:`ConfigError` with a hint when none is set)."""
        return resolve_endpoint(self.region, self.base_url)

    def sig(self) -> SigSource:
        """The UserSig source: secret key (file or env) first, else ``TIM_USERSIG``."""
        if self.sdkappid is None:
            raise ConfigError("no SDKAppID: set TIM_SDKAPPID or pass --sdkappid")
        key = read_secret_key(self.secret_key_file)
        if key is not None:
            return SigSource(self.sdkappid, self.admin, secret_key=key)
        usersig = os.environ.get("TIM_USERSIG", "").strip()
        if usersig:
            return SigSource(self.sdkappid, self.admin, fixed_usersig=Secret(usersig))
        raise ConfigError(
            "no credentials: set TIM_SECRET_KEY, pass --secret-key-file, or set TIM_USERSIG"
        )

    @property
    def window(self) -> float:
        """The limiter's window in seconds."""
        return 1.0 + self.rate_margin / 1000

    def policy(self) -> RetryPolicy:
        """The retry policy these options ask for."""
        return RetryPolicy(max_attempts=self.max_attempts)

    def api(self) -> ApiConfig:
        """How to reach the API, as these options say (raises :class:`ConfigError`)."""
        return ApiConfig(
            endpoint=self.endpoint(),
            sig=self.sig(),
            rate=self.rate or None,
            window=self.window,
            concurrency=self.concurrency,
            policy=self.policy(),
            timeout=self.timeout,
            ca_file=self.ca_file,
            budget=self.budget,
        )


F = TypeVar("F", bound=Callable[..., Any])

_CONNECTION_OPTIONS = [
    click.option(
        "--sdkappid", type=int, envvar="TIM_SDKAPPID", help="SDKAppID [env TIM_SDKAPPID]."
    ),
    click.option(
        "--admin",
        envvar="TIM_ADMIN",
        default="administrator",
        show_default=True,
        help="App admin identifier [env TIM_ADMIN].",
    ),
    click.option(
        "--secret-key-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="File holding the secret key (else env TIM_SECRET_KEY, else a ready-made "
        "TIM_USERSIG). No flag takes the key itself: it would show in ps.",
    ),
    click.option(
        "--region",
        envvar="TIM_REGION",
        help=f"Region: {', '.join(REGIONS)} [env TIM_REGION].",
    ),
    click.option("--base-url", envvar="TIM_BASE_URL", help="Explicit endpoint [env TIM_BASE_URL]."),
    click.option(
        "--rate",
        type=click.FloatRange(min=0),
        default=200.0,
        show_default=True,
        help="Requests per second per API, retries included, never exceeded in any sliding "
        "second (0: no limit).",
    ),
    click.option(
        "--rate-margin",
        type=click.FloatRange(min=0),
        default=5.0,
        show_default=True,
        help="Milliseconds added to the 1-second window the rate is kept in, for requests that "
        "reach the server unevenly; widen it on a jittery network (costs rate x margin/1000).",
    ),
    click.option(
        "--budget",
        envvar="TIM_BUDGET",
        metavar="URL",
        help="Share the --rate budget with every process given the same Redis "
        "(redis://HOST:PORT/DB): together they never exceed it [env TIM_BUDGET]. "
        "Default: this process keeps its own.",
    ),
    click.option(
        "--concurrency",
        type=click.IntRange(min=1),
        default=100,
        show_default=True,
        help="Records (or conversations, for plan) in progress at most.",
    ),
    click.option(
        "--max-attempts",
        type=click.IntRange(min=1),
        default=6,
        show_default=True,
        help="Attempts per request for transient errors.",
    ),
    click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=10.0,
        show_default=True,
        help="Seconds per HTTP attempt.",
    ),
    click.option(
        "--ca-file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="TIM_CA_FILE",
        help="PEM file of the CA certificates to trust for an https endpoint, instead of the "
        "system's (a proxy or test server with a private CA) [env TIM_CA_FILE]. The certificate "
        "is always verified.",
    ),
]


def with_options(options: Sequence[Callable[[Any], Any]], command: F) -> F:
    """``command`` decorated with each of ``options``, in the order listed (as stacked)."""
    decorated: Any = command
    for option in reversed(options):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]


def connection_options(command: F) -> F:
    """Add the connection options; the command receives them as one ``conn`` argument."""
    names = [
        "sdkappid",
        "admin",
        "secret_key_file",
        "region",
        "base_url",
        "rate",
        "rate_margin",
        "budget",
        "concurrency",
        "max_attempts",
        "timeout",
        "ca_file",
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["region"], kwargs["base_url"] = _one_endpoint(kwargs["region"], kwargs["base_url"])
        conn = Connection(**{name: kwargs.pop(name) for name in names})
        return command(*args, conn=conn, **kwargs)

    return with_options(_CONNECTION_OPTIONS, wrapper)  # type: ignore[return-value]


def _one_endpoint(region: str | None, base_url: str | None) -> tuple[str | None, str | None]:
    """The endpoint setting to use: a flag wins over the environment; two at one level clash."""
    if not (region and base_url):
        return region, base_url
    source = click.get_current_context().get_parameter_source
    region_flag = source("region") is ParameterSource.COMMANDLINE
    if region_flag != (source("base_url") is ParameterSource.COMMANDLINE):
        return (region, None) if region_flag else (None, base_url)
    both = "--region and --base-url" if region_flag else "TIM_REGION and TIM_BASE_URL"
    raise ConfigProblem(f"{both} are both set; give one endpoint")


T = TypeVar("T")

STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}
"""The signals that stop a run: the first gracefully, the second at once."""


async def with_signals(work: Callable[[RunControl], Awaitable[T]]) -> T:
    """``await work(control)`` with Ctrl-C, SIGTERM and SIGHUP wired to ``control``.

    The first such signal stops taking work and lets in-flight requests finish; the next
    cancels them.
    """
    control = RunControl()
    loop = asyncio.get_running_loop()
    received = 0

    def on_signal(number: signal.Signals) -> None:
        nonlocal received
        received += 1
        name = STOP_SIGNALS[number]
        if received == 1:
            control.interrupt("interrupted" if number is signal.SIGINT else f"stopped by {name}")
            message = (
                f"{name}: stopping, letting in-flight requests finish ({name} again cancels them)"
            )
        else:
            control.cancel_now()
            message = f"{name} again: cancelling in-flight requests"
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            log_note(message, "signal")

    for number in STOP_SIGNALS:
        loop.add_signal_handler(number, on_signal, number)
    try:
        return await work(control)
    finally:
        for number in STOP_SIGNALS:
            loop.remove_signal_handler(number)
