"""An emulator behind a test middleware (a proxy, a broken server), and run settings for it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Middleware

from batchedit import Secret, SigSource
from batchedit.emulator import Emulator, EmulatorConfig
from batchedit.retry import RetryPolicy
from batchedit.runner import RunConfig
from tests.conftest import ServerFactory
from tests.helpers import ADMIN, SDKAPPID, SECRET

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve_behind(
    aiohttp_server: ServerFactory, middleware: Middleware
) -> tuple[Emulator, str]:
    """An emulator (no rate limit) with ``middleware`` in front; returns it and its base URL."""
    emulator = Emulator(
        EmulatorConfig(sdkappid=SDKAPPID, secret_key=SECRET, rate_limit=None, retention_days=None)
    )
    app = emulator.app()
    app.middlewares.append(web.middleware(middleware))
    server: TestServer = await aiohttp_server(app, host="127.0.0.1")
    return emulator, str(server.make_url("")).rstrip("/")


def run_config(url: str, tmp_path: Path, **options: Any) -> RunConfig:
    """A run against ``url`` with RESULTS in ``tmp_path``, no rate limit, zero-wait retries."""
    settings: dict[str, Any] = {
        "results": tmp_path / "results.jsonl",
        "endpoint": url,
        "sig": SigSource(SDKAPPID, ADMIN, secret_key=Secret(SECRET)),
        "rate": None,
        "policy": RetryPolicy.zero_wait(),
        **options,
    }
    return RunConfig(**settings)
