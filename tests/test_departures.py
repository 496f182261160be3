"""The departures file beside RESULTS: written as requests leave, read by the next run, never
written over anything else; and a run killed with SIGKILL and resumed at once keeps the rate
across both processes, judged from when the emulator saw each request."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from batchedit.departures import LINE, DepartureLog, Recorded, departures_of
from batchedit.emulator import Emulator, EmulatorConfig, Store
from batchedit.im.client import MODIFY
from batchedit.im.errors import ConfigError
from batchedit.ratelimit import AdaptiveLimiter, BudgetLost
from tests.conftest import EmulatorProcess, cli_env
from tests.helpers import ADMIN, SDKAPPID, SECRET, read_results, seed_messages, write_edits
from tests.vclock import run_virtual

ROAM = "openim/admin_getroammsg"
DEADLINE = 60.0
"""Seconds any subprocess or wait loop gets; never reached when the run behaves."""


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _results(tmp_path: Path, content: bytes = b"") -> Path:
    path = tmp_path / "r.jsonl"
    path.write_bytes(content)
    return path


def _record(results: Path, clock: Clock, *, slots: int, departures: int, apart: float) -> None:
    """A run beside ``results`` records ``departures`` edits ``apart`` seconds apart in a ring of
    ``slots``, then stops."""
    log = DepartureLog.open(results, clock)
    log.before(MODIFY, 1.0)
    ring = log.ring(MODIFY, slots)
    for _ in range(departures):
        clock.now += apart
        ring.record()
    log.close()


def test_the_next_run_reads_the_departures_of_the_last_window(tmp_path: Path) -> None:
    """Departures written by one run are read by the next, per API, as seconds ago, and only
    those of the last window."""
    clock = Clock()
    results = _results(tmp_path)
    log = DepartureLog.open(results, clock)
    assert log.before(MODIFY, 1.005) == []
    edits, reads = log.ring(MODIFY, 8), log.ring(ROAM, 8)
    for step in (0.0, 0.5, 0.2, 0.2):
        clock.now += step
        edits.record()
    reads.record()
    log.close()
    clock.now += 0.1
    later = DepartureLog.open(results, clock)
    assert later.before(MODIFY, 1.005) == pytest.approx([1.0, 0.5, 0.3, 0.1])
    assert later.before(ROAM, 1.005) == pytest.approx([0.1])
    assert later.before(MODIFY, 0.4) == pytest.approx([0.3, 0.1])
    later.close()


def test_a_ring_keeps_the_latest_departures(tmp_path: Path) -> None:
    """Twenty departures into eight slots leave the latest eight."""
    clock = Clock()
    results = _results(tmp_path)
    _record(results, clock, slots=8, departures=20, apart=0.01)
    later = DepartureLog.open(results, clock)
    ages = sorted(later.before(MODIFY, 1.0) or [])
    assert ages == pytest.approx([i * 0.01 for i in range(8)], abs=1e-5)
    later.close()


def test_without_a_departures_file_a_results_log_with_outcomes_means_not_known(
    tmp_path: Path,
) -> None:
    """Beside a results log that holds outcomes and no departures (an older batchedit wrote it),
    what was sent is not known; beside an empty one, nothing was."""
    log = DepartureLog.open(_results(tmp_path, b'{"line":1}\n'))
    assert log.before(MODIFY, 1.0) is None
    log.close()
    departures_of(tmp_path / "r.jsonl").unlink()
    log = DepartureLog.open(_results(tmp_path))
    assert log.before(MODIFY, 1.0) == []
    log.close()


def test_a_run_without_a_limit_leaves_the_next_one_not_knowing(tmp_path: Path) -> None:
    """A run sending without a limit empties the file: the next run on that RESULTS, which holds
    outcomes by then, does not know what was sent."""
    clock = Clock()
    results = _results(tmp_path)
    log = DepartureLog.open(results, clock)
    log.before(MODIFY, 1.0)
    log.ring(MODIFY, 4).record()
    log.close()
    log = DepartureLog.open(results, clock)
    log.forget()
    log.close()
    results.write_bytes(b'{"line":1}\n')
    log = DepartureLog.open(results, clock)
    assert log.before(MODIFY, 1.0) is None
    log.close()


def test_old_departures_are_dropped_and_recent_ones_kept(tmp_path: Path) -> None:
    """A file whose departures are all older than a window starts over; one with a recent
    departure keeps it, and the next run's rings go after it."""
    clock = Clock()
    results = _results(tmp_path)
    log = DepartureLog.open(results, clock)
    log.before(MODIFY, 1.0)
    log.ring(MODIFY, 4).record()
    log.close()
    path = departures_of(results)
    clock.now += 0.5
    log = DepartureLog.open(results, clock)
    log.before(MODIFY, 1.0)
    log.ring(MODIFY, 4)
    log.close()
    assert path.stat().st_size == 8 * LINE
    clock.now += 5
    log = DepartureLog.open(results, clock)
    assert log.before(MODIFY, 1.0) == []
    log.ring(MODIFY, 4)
    log.close()
    assert path.stat().st_size == 4 * LINE


def test_zeros_left_by_a_machine_crash_read_as_nothing(tmp_path: Path) -> None:
    """Blocks of zeros (a machine that lost power before writing back) are blank lines."""
    results = _results(tmp_path)
    departures_of(results).write_bytes(b"\0" * 3 * LINE)
    log = DepartureLog.open(results)
    assert log.before(MODIFY, 1.0) == []
    log.close()


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda p: p.write_bytes(b'{"From_Account": "u1"}\n'), "is in the way"),
        (lambda p: p.mkdir(), "cannot open"),
        (lambda p: p.symlink_to(p.with_name("edits.jsonl")), "cannot open"),
    ],
)
def test_nothing_else_is_ever_written_over(
    tmp_path: Path, make: Callable[[Path], object], said: str
) -> None:
    """A file of the user's, a directory or a symlink where the departures go is a
    configuration error, and is left as it was."""
    results = _results(tmp_path)
    edits = tmp_path / "edits.jsonl"
    edits.write_bytes(b'{"From_Account": "u1"}\n')
    path = departures_of(results)
    make(path)
    with pytest.raises(ConfigError, match=said):
        DepartureLog.open(results)
    assert edits.read_bytes() == b'{"From_Account": "u1"}\n'


def test_a_departures_file_that_cannot_be_written_stops_taking_grants(tmp_path: Path) -> None:
    """When a departure cannot be written, the request still counts, and the next grant raises
    BudgetLost naming the file (the run stops as for a lost budget)."""
    log = DepartureLog.open(_results(tmp_path))

    async def body() -> None:
        limiter = Recorded(AdaptiveLimiter(100), log, MODIFY, 1.005)
        granted = await limiter.acquire()
        os.close(log._fd)  # the simplest real write error: a closed descriptor
        limiter.departed(granted)
        with pytest.raises(BudgetLost, match="cannot record when requests left in"):
            await limiter.acquire()

    run_virtual(body())


def test_a_resumed_run_follows_what_its_predecessor_sent(tmp_path: Path) -> None:
    """Recorded departures of the last window reach the next run's limiter: its first grant
    waits for the oldest of them to leave the window."""
    clock = Clock()
    results = _results(tmp_path)
    _record(results, clock, slots=10, departures=4, apart=0.1)
    clock.now += 0.2
    log = DepartureLog.open(results, clock)

    async def body() -> float:
        limiter = Recorded(AdaptiveLimiter(4, window=1.0), log, MODIFY, 1.0)
        start = asyncio.get_running_loop().time()
        return await limiter.acquire() - start

    assert run_virtual(body()) == pytest.approx(0.5, abs=1e-6)
    log.close()


Arrivals = list[tuple[float, str]]


async def _serve(
    aiohttp_server: Callable[..., Awaitable[TestServer]], edits: int, tmp_path: Path, seen: int
) -> tuple[str, Path, Arrivals, asyncio.Event]:
    """An emulator in this process that notes the wall-clock time and identifier of every
    request as it comes in, and sets the event once ``seen`` came from the first admin;
    ``edits`` edits for it in a file."""
    emulator = Emulator(
        EmulatorConfig(
            sdkappid=SDKAPPID,
            secret_key=SECRET,
            admins=frozenset({ADMIN, "successor"}),
            retention_days=None,
        )
    )
    targets = seed_messages(emulator.store, edits)
    path = write_edits(
        tmp_path / "e.jsonl", [{**t, "CloudCustomData": f"v{i}"} for i, t in enumerate(targets)]
    )
    arrivals: Arrivals = []
    enough = asyncio.Event()

    @web.middleware
    async def note(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        arrivals.append((time.time(), request.query.get("identifier", "")))
        if sum(who == ADMIN for _, who in arrivals) >= seen:
            enough.set()
        return await handler(request)

    app = emulator.app()
    app.middlewares.append(note)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("")).rstrip("/"), path, arrivals, enough


async def _batchedit(url: str, admin: str, *args: str) -> asyncio.subprocess.Process:
    env = {**cli_env(url), "TIM_ADMIN": admin}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchedit", "run", "--quiet", *args, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


def _departed(path: Path) -> list[float]:
    """Every edit departure in a departures file, wall clock, in order."""
    times = []
    for line in path.read_bytes().replace(b"\0", b" ").splitlines():
        fields = line.split()
        if fields and fields[1].decode() == MODIFY:
            times.append(float(fields[0]))
    return sorted(times)


async def test_a_run_killed_and_resumed_at_once_keeps_the_rate_across_both(
    aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path
) -> None:
    """SIGKILL a run as soon as its window is full (--rate 3 in windows of 2 s), resume it at
    once: the k-th request of the resumed run reaches the emulator no sooner than the
    (4-k)-th latest departure of the killed one plus the window, so no window of both holds
    more than 3. Load can only delay the resumed run, never break these lower bounds."""
    url, edits, arrivals, full = await _serve(aiohttp_server, 9, tmp_path, seen=4)
    results = tmp_path / "r.jsonl"
    common = [str(edits), "--results", str(results), "--rate", "3", "--rate-margin", "1000"]
    first = await _batchedit(url, ADMIN, *common)
    try:
        async with asyncio.timeout(DEADLINE):
            await full.wait()
    finally:
        if first.returncode is None:
            first.send_signal(signal.SIGKILL)
        await first.wait()
    before = _departed(departures_of(results))
    second = await _batchedit(url, "successor", *common, "--resume")
    try:
        async with asyncio.timeout(DEADLINE):
            _, err = await second.communicate()
    finally:
        if second.returncode is None:
            second.kill()
            await second.wait()
    assert second.returncode == 0, err.decode()
    assert {row["outcome"] for row in read_results(results).values()} == {"ok"}
    assert len(read_results(results)) == 9
    assert len(before) >= sum(who == ADMIN for _, who in arrivals) >= 4
    resumed = sorted(at for at, who in arrivals if who == "successor")
    for k, arrived in enumerate(resumed[:3], start=1):
        assert arrived >= before[-(4 - k)] + 2.0 - 0.001, (k, arrived, before)


def test_a_departures_file_over_the_file_size_limit_stops_the_run_before_sending(
    tmp_path: Path, emulator_process: Callable[..., EmulatorProcess]
) -> None:
    """Under `ulimit -f 20` the departures ring (25 KB at 200/s) cannot be laid out: the run
    stops (exit 3, STOPPED (budget)) saying why, before a single edit is sent."""
    store = Store()
    store.import_account(ADMIN)
    targets = seed_messages(store, 5)
    store.save(tmp_path / "seed.jsonl")
    emulator = emulator_process(state=tmp_path / "seed.jsonl")
    path = write_edits(tmp_path / "e.jsonl", [{**t, "CloudCustomData": "x"} for t in targets])
    results = tmp_path / "r.jsonl"
    command = ["/bin/sh", "-c", 'ulimit -f 20 && exec "$0" "$@"', sys.executable, "-m"]
    command += ["batchedit", "run", str(path), "--results", str(results)]
    process = subprocess.run(
        command, env=cli_env(emulator.url), capture_output=True, timeout=DEADLINE, check=False
    )
    text = process.stderr.decode()
    assert process.returncode == 3, text
    assert (
        f"STOPPED (budget): cannot record when requests left in {departures_of(results)} "
        "(File too large)"
    ) in text
    assert emulator.get("/__emulator/stats") == {}
