"""Running the emulator as a server until SIGINT or SIGTERM, saving its state on the way out."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import os
import signal
import ssl
from collections.abc import Callable

from aiohttp import web

from batchedit.emulator.app import Emulator
from batchedit.im.errors import ConfigError


def is_loopback(host: str) -> bool:
    """Whether ``host`` is an address of this machine only (127.0.0.0/8, ::1 or localhost).

    The control endpoints hand out every stored message and change the fault knobs, so serving
    anything wider needs the operator's explicit consent (``--allow-remote``).
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(
    emulator: Emulator,
    host: str,
    port: int,
    announce: Callable[[str], None] = print,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Serve on ``host:port`` (port 0 picks a free one) until SIGINT/SIGTERM, then save state.

    ``announce`` receives one line, ``emulator listening on http://HOST:PORT`` (``https`` with an
    ``ssl_context``), once the socket is bound, so a parent process can read the port. A port
    that cannot be bound raises :class:`ConfigError` and saves nothing.
    """
    # Everything loaded so far lives as long as the server: keep it out of the cyclic GC, whose
    # full passes over a large store would stall request handling for milliseconds at a time.
    gc.freeze()
    runner = web.AppRunner(emulator.app(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, shutdown_timeout=1.0, ssl_context=ssl_context).start()
    except OSError as exc:
        await runner.cleanup()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(
            f"cannot listen on {host}:{port}: {reason}; pick another --port (0: any free one)"
        ) from None
    try:
        # The handlers before the announcement: a parent may signal as soon as it has the port.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        bound = runner.addresses[0][1]
        scheme = "https" if ssl_context else "http"
        announce(f"emulator listening on {scheme}://{host}:{bound}")
        await stop.wait()
    finally:
        await runner.cleanup()
        emulator.save()
