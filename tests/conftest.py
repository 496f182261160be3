"""Shared fixtures: a real emulator on 127.0.0.1 and real clients talking to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from batchedit import ImClient, Secret, SigSource
from batchedit.emulator import Emulator, EmulatorConfig, Faults
from tests.helpers import ADMIN, SDKAPPID, SECRET

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
    """Start an emulator; keyword arguments go to :class:`EmulatorConfig` (``faults=`` too)."""

    async def start(faults: Faults | None = None, **config: Any) -> Running:
        settings: dict[str, Any] = {"sdkappid": SDKAPPID, "secret_key": SECRET, **config}
        emulator = Emulator(EmulatorConfig(**settings), faults=faults or Faults())
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
