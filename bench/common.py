"""What every bench section uses: emulator subprocesses, measured ``batchedit run`` subprocesses
(CPU time and peak RSS from ``wait4``), edit files from ``--demo-targets``, the emulator's stats."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from batchedit import client_context

SDKAPPID = 1400000000
SECRET = "bench-secret-key"
ADMIN = "administrator"
PY = sys.executable


@dataclass
class Finished:
    """A finished subprocess: wall seconds, CPU seconds, peak RSS in MiB, exit status."""

    wall: float
    cpu: float
    rss_mib: float
    status: int


def env(url: str = "") -> dict[str, str]:
    """The environment of a ``batchedit`` subprocess talking to ``url``."""
    found = dict(os.environ)
    found.update({"TIM_SECRET_KEY": SECRET, "TIM_SDKAPPID": str(SDKAPPID), "TIM_BASE_URL": url})
    return found


@contextmanager
def emulator(work: Path, *args: str) -> Iterator[str]:
    """An emulator subprocess; yields its base URL."""
    process = subprocess.Popen(
        [PY, "-m", "batchedit", "emulator", "--port", "0", *args],
        env=env(),
        stderr=subprocess.PIPE,
        text=True,
        cwd=work,
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    try:
        yield line.split()[-1]
    finally:
        process.terminate()
        process.wait()
        process.stderr.close()


def seeded_emulator(
    work: Path, count: int, targets: Path, *extra: str
) -> AbstractContextManager[str]:
    """An emulator (see :func:`emulator`) with 20-300 ms latency and ``count`` demo messages,
    whose MsgKeys it writes to ``targets``; ``extra`` options too."""
    seeded = ("--demo-data", str(count), "--demo-targets", str(targets))
    return emulator(work, "--latency-ms", "20-300", *seeded, *extra)


def start_cli(args: list[str], url: str) -> subprocess.Popen[bytes]:
    """Start ``batchedit run --quiet ARGS`` against ``url``."""
    return subprocess.Popen(
        [PY, "-m", "batchedit", "run", "--quiet", *args],
        env=env(url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def measure(process: subprocess.Popen[bytes], started: float) -> Finished:
    """Wait for ``process`` (started at ``time.perf_counter()`` ``started``) and measure it."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return Finished(
        time.perf_counter() - started,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        process.returncode,
    )


def run_cli(args: list[str], url: str) -> Finished:
    """Run ``batchedit run ARGS`` and measure it."""
    started = time.perf_counter()
    return measure(start_cli(args, url), started)


def targets_to_edits(targets: Path, edits: Path) -> int:
    """Turn ``--demo-targets`` output into CloudCustomData edits; return how many."""
    count = 0
    with targets.open("rb") as source, edits.open("wb") as out:
        for raw in source:
            row = orjson.loads(raw)
            row.pop("Text")
            row["CloudCustomData"] = f'{{"bench":{count}}}'
            out.write(orjson.dumps(row) + b"\n")
            count += 1
    return count


def all_stats(url: str, ca: Path | None = None) -> dict[str, Any]:
    """The emulator's counters of every API (``ca``: the CA to trust over https)."""

    async def get() -> dict[str, Any]:
        connector = aiohttp.TCPConnector(ssl=client_context(ca))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"{url}/__emulator/stats") as r,
        ):
            data: dict[str, Any] = await r.json()
            return data

    return asyncio.run(get())


def stats(url: str) -> dict[str, Any]:
    """The emulator's modify_c2c_msg counters."""
    found: dict[str, Any] = all_stats(url).get("openim/modify_c2c_msg", {})
    return found


@dataclass
class LatencyRun:
    """A ``batchedit run`` at --rate 200 against an emulator with 20-300 ms latency."""

    count: int
    done: Finished
    summary: dict[str, Any]
    server: dict[str, Any]


def latency_run(
    work: Path, count: int, *extra: str, server: tuple[str, ...] = (), ca: Path | None = None
) -> LatencyRun:
    """Seed ``count`` messages, edit each once at --rate 200 (plus ``extra`` options); the
    emulator gets ``server`` options too, and ``ca`` (a CA it writes) is trusted when given."""
    name = f"lat{count}{'-tls' if ca else ''}"
    with seeded_emulator(work, count, work / f"t-{name}.jsonl", *server) as url:
        edits = work / f"e-{name}.jsonl"
        count = targets_to_edits(work / f"t-{name}.jsonl", edits)
        summary = work / f"s-{name}.json"
        results = work / f"r-{name}.jsonl"
        for old in (results, results.with_name(results.name + ".departures")):
            old.unlink(missing_ok=True)
        args = [
            str(edits),
            "--results",
            str(results),
            "--rate",
            "200",
            "--summary-json",
            str(summary),
            *extra,
            *(["--ca-file", str(ca)] if ca else []),
        ]
        done = run_cli(args, url)
        return LatencyRun(count, done, orjson.loads(summary.read_bytes()), all_stats(url, ca))
