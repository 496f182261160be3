"""Sending: backoff, the retry limits, the settle delay after a timeout, and answers that stop
a run (a wrong URL, an unreachable host), against the real emulator or a real wrong server."""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from batchedit import Secret, SigSource
from batchedit.edits import UNCERTAIN
from batchedit.emulator import Emulator, EmulatorConfig, Faults
from batchedit.outcomes import Summary
from batchedit.retry import RetryPolicy
from batchedit.runner import RunConfig, run_batch
from batchedit.wiring import UNREACHABLE_AFTER
from tests.conftest import EmulatorFactory, ServerFactory
from tests.helpers import ADMIN, SDKAPPID, SECRET, read_results, seed_messages, write_edits

HANG_GUARD = 60.0
"""Seconds after which a run counts as hung; never reached when it behaves."""


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    """Each wait is uniform in [0, min(cap, base * 2**(n-1))]: doubling, capped, and spread
    over the whole range (seeded, so exact)."""
    policy = RetryPolicy(base=0.2, cap=10.0)
    rng = random.Random(7)
    for failures, ceiling in [(1, 0.2), (2, 0.4), (3, 0.8), (6, 6.4), (7, 10.0), (40, 10.0)]:
        waits = [policy.backoff(failures, rng) for _ in range(2000)]
        assert 0.0 <= min(waits) < ceiling * 0.01
        assert ceiling * 0.99 < max(waits) <= ceiling
    assert RetryPolicy.zero_wait().backoff(5) == 0.0


def test_backoff_draws_from_the_given_generator() -> None:
    """The same seed gives the same waits: the jitter is reproducible in tests."""
    policy = RetryPolicy()
    first = [policy.backoff(n, random.Random(3)) for n in range(1, 8)]
    assert first == [policy.backoff(n, random.Random(3)) for n in range(1, 8)]


def _config(url: str, results: Path, **options: Any) -> RunConfig:
    settings: dict[str, Any] = {
        "results": results,
        "endpoint": url,
        "sig": SigSource(SDKAPPID, ADMIN, secret_key=Secret(SECRET)),
        "rate": None,
        "policy": RetryPolicy.zero_wait(),
        **options,
    }
    return RunConfig(**settings)


async def _run(path: Path, config: RunConfig) -> Summary:
    with path.open("rb") as source:
        return await asyncio.wait_for(run_batch(source, config), HANG_GUARD)


def _ccd(targets: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [{**t, "CloudCustomData": f"v{i}"} for i, t in enumerate(targets)]


async def test_max_throttled_bounds_the_tries_of_a_throttled_edit(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """An edit answered only "too many requests" gives up after max_throttled retries, with a
    note saying so, and does not count against max_attempts."""
    running = await start_emulator(faults=Faults(throttle_rate=1.0))
    path = write_edits(tmp_path / "e.jsonl", _ccd(seed_messages(running.emulator.store, 2)))
    policy = RetryPolicy(max_attempts=2, max_throttled=4, base=0.0, cap=0.0)
    results = tmp_path / "r.jsonl"
    summary = await _run(path, _config(running.url, results, policy=policy, breaker=0))
    for row in read_results(results).values():
        assert (row["outcome"], row["ErrorCode"], row["attempts"]) == ("failed", 60007, 5)
        assert row["note"] == "still throttled after 4 tries"
    assert summary.attempts == running.emulator.traffic.of("openim/modify_c2c_msg").arrivals


async def test_max_seconds_bounds_the_time_spent_on_an_edit(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """Once max_seconds have passed since an edit's first attempt, a transient failure is final;
    with 0 s that is the first one, whatever max_attempts allows."""
    running = await start_emulator(faults=Faults(transient_rate=1.0, transient_codes=(20005,)))
    path = write_edits(tmp_path / "e.jsonl", _ccd(seed_messages(running.emulator.store, 3)))
    policy = RetryPolicy(max_attempts=50, max_seconds=0.0, base=0.0, cap=0.0)
    results = tmp_path / "r.jsonl"
    await _run(path, _config(running.url, results, policy=policy))
    for row in read_results(results).values():
        assert (row["outcome"], row["ErrorCode"], row["attempts"]) == ("failed", 20005, 1)
        assert row["note"] == "gave up after 0 s"


async def test_a_wrong_base_url_answering_404_stops_the_run(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """A server that is not the IM API (HTTP 404 to every path) stops the run as fatal after a
    handful of requests instead of retrying every line."""
    server = await aiohttp_server(web.Application(), host="127.0.0.1")
    url = str(server.make_url("")).rstrip("/")
    edits = [
        {
            "From_Account": "a",
            "To_Account": "b",
            "MsgKey": f"1_{i}_1700000000",
            "CloudCustomData": "",
        }
        for i in range(500)
    ]
    path = write_edits(tmp_path / "e.jsonl", edits)
    summary = await _run(path, _config(url, tmp_path / "r.jsonl", concurrency=4))
    assert summary.stopped == "fatal"
    assert summary.reason == (
        "HTTP 404 from the server: it is not the IM REST API; check the base URL or region"
    )
    assert summary.attempts <= 4


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_host_stops_the_run(tmp_path: Path) -> None:
    """When the first requests all fail to connect, the run stops with "cannot reach HOST"
    instead of retrying each line max_attempts times."""
    port = _closed_port()
    edits = [
        {
            "From_Account": "a",
            "To_Account": "b",
            "MsgKey": f"1_{i}_1700000000",
            "CloudCustomData": "",
        }
        for i in range(200)
    ]
    path = write_edits(tmp_path / "e.jsonl", edits)
    config = _config(f"http://127.0.0.1:{port}", tmp_path / "r.jsonl", concurrency=4)
    summary = await _run(path, config)
    assert summary.stopped == "fatal"
    assert summary.reason.startswith(f"cannot reach 127.0.0.1:{port} (ClientConnectorError: ")
    assert summary.reason.endswith("check the base URL or region, and this machine's network")
    assert UNREACHABLE_AFTER <= summary.attempts < UNREACHABLE_AFTER + 4


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def test_after_a_timeout_the_next_edit_of_the_message_waits_and_is_uncertain(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """An attempt that timed out may still land later: the message's next request (the retry,
    or the next line's edit) reaches the server only after the settle delay, and each line whose
    attempts included a timeout is noted as uncertain."""
    arrivals: list[float] = []

    @web.middleware
    async def note_arrival(request: web.Request, handler: Handler) -> web.StreamResponse:
        arrivals.append(time.monotonic())
        return await handler(request)

    # The emulator carries every edit out at once, but answers only after 1 s.
    faults = Faults(slow_rate=1.0, slow_seconds=1.0)
    emulator = Emulator(
        EmulatorConfig(sdkappid=SDKAPPID, secret_key=SECRET, retention_days=None), faults=faults
    )
    app = emulator.app()
    app.middlewares.append(note_arrival)
    server = await aiohttp_server(app, host="127.0.0.1")
    target = seed_messages(emulator.store, 1)[0]
    edits = [{**target, "CloudCustomData": "first"}, {**target, "CloudCustomData": "second"}]
    path = write_edits(tmp_path / "e.jsonl", edits)
    results = tmp_path / "r.jsonl"
    settle = 0.3
    url = str(server.make_url("")).rstrip("/")
    config = _config(url, results, timeout=0.1, settle=settle, policy=RetryPolicy.zero_wait(2))
    await _run(path, config)
    final = read_results(results)
    for row in final.values():
        assert (row["outcome"], row["ErrorCode"], row["attempts"]) == ("failed", None, 2)
        assert row["note"] == UNCERTAIN
    assert len(arrivals) == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert min(gaps) >= settle
