"""``make bench``: throughput, rate compliance, CPU, memory and resume numbers, printed.

Every server is a ``batchedit emulator`` subprocess on 127.0.0.1; every run is a ``batchedit run``
subprocess whose CPU time and peak RSS come from ``wait4`` (helpers in bench/common.py). Run one
section with ``python -m bench SECTION`` (sections: client, rate, restart, cpu, plain, memory,
resume, backup, tls, budget, pipe); all by default. The sections about the request budget are in
bench/rate.py and bench/budget.py; plain, memory and resume in bench/local.py; the piped plan
in bench/pipe.py.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from batchedit import ImClient, Secret, SigSource
from bench.budget import shared_budget
from bench.common import (
    ADMIN,
    SDKAPPID,
    SECRET,
    all_stats,
    emulator,
    env,
    targets_to_edits,
)
from bench.local import plain_rate, section_memory, section_plain, section_resume
from bench.pipe import piped_plan
from bench.rate import section_backup, section_cpu, section_rate, section_restart, section_tls


def section_client(work: Path) -> None:
    """Issue 2: client requests/s at concurrency 1 and 64 (no throttle), and the emulator's
    ceiling measured with a plain aiohttp loop at concurrency 128."""
    with emulator(
        work, "--rate-limit", "0", "--demo-data", "5000", "--demo-targets", str(work / "t.jsonl")
    ) as url:
        targets_to_edits(work / "t.jsonl", work / "e.jsonl")
        bodies = [orjson.loads(line) for line in (work / "e.jsonl").read_bytes().splitlines()]

        async def client_rate(concurrency: int, seconds: float) -> float:
            sig = SigSource(SDKAPPID, ADMIN, secret_key=Secret(SECRET))
            done = 0
            deadline = time.perf_counter() + seconds
            async with ImClient(url, sig, max_connections=concurrency) as client:

                async def worker(offset: int) -> None:
                    nonlocal done
                    i = offset
                    while time.perf_counter() < deadline:
                        reply = await client.modify_c2c_msg(bodies[i % len(bodies)])
                        assert reply.ok, reply
                        done += 1
                        i += concurrency

                start = time.perf_counter()
                await asyncio.gather(*(worker(k) for k in range(concurrency)))
                return done / (time.perf_counter() - start)

        for concurrency in (1, 64):
            rate = asyncio.run(client_rate(concurrency, 5.0))
            print(f"client, concurrency {concurrency:>3}: {rate:8.0f} req/s (ImClient, 5 s)")
        ceiling = asyncio.run(plain_rate(url, bodies, 128, 5.0))
        print(f"emulator ceiling:          {ceiling:8.0f} req/s (plain aiohttp, concurrency 128)")


def section_pipe(work: Path) -> None:
    """Issue 8: `plan --output - | run -` against plan, then run (bench/pipe.py)."""
    piped_plan(work, emulator, all_stats, env)


SECTIONS: dict[str, Callable[[Path], None]] = {
    "client": section_client,
    "rate": section_rate,
    "restart": section_restart,
    "cpu": section_cpu,
    "plain": section_plain,
    "memory": section_memory,
    "resume": section_resume,
    "backup": section_backup,
    "tls": section_tls,
    "budget": shared_budget,
    "pipe": section_pipe,
}


def main() -> None:
    """Run the named sections (all by default) in a scratch folder."""
    names = sys.argv[1:] or list(SECTIONS)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {sys.platform}")
    with tempfile.TemporaryDirectory(prefix="batchedit-bench-") as scratch:
        for name in names:
            print(f"--- {name}")
            SECTIONS[name](Path(scratch))


if __name__ == "__main__":
    main()
