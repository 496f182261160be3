"""``make bench``: throughput, rate compliance, CPU, memory and resume numbers, printed.

Every server is a ``batchedit emulator`` subprocess on 127.0.0.1; every run is a ``batchedit run``
subprocess whose CPU time and peak RSS come from ``wait4`` (helpers in bench/common.py). Run one
section with ``python -m bench SECTION`` (sections: client, rate, restart, cpu, plain, memory,
resume, backup, tls, budget, pipe); all by default. The sections about the request budget are in
bench/rate.py and bench/budget.py; the piped plan in bench/pipe.py.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from batchedit import ImClient, Secret, SigSource
from batchedit.im import usersig
from batchedit.records import line_digest
from bench.budget import shared_budget
from bench.common import (
    ADMIN,
    SDKAPPID,
    SECRET,
    all_stats,
    emulator,
    env,
    run_cli,
    stats,
    targets_to_edits,
)
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
        ceiling = asyncio.run(_plain_rate(url, bodies, 128, 5.0))
        print(f"emulator ceiling:          {ceiling:8.0f} req/s (plain aiohttp, concurrency 128)")


async def _plain_rate(
    url: str, bodies: list[dict[str, Any]], concurrency: int, seconds: float
) -> float:
    """A bare aiohttp loop sending modify_c2c_msg: no limiter, no retries, no records."""
    sig = usersig.generate(SDKAPPID, SECRET, ADMIN)
    done = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(offset: int) -> None:
            nonlocal done
            i = offset
            while time.perf_counter() < deadline:
                query = (
                    f"{url}/v4/openim/modify_c2c_msg?sdkappid={SDKAPPID}&identifier={ADMIN}"
                    f"&usersig={sig}&random={random.getrandbits(32)}&contenttype=json"
                )
                async with session.post(query, data=orjson.dumps(bodies[i % len(bodies)])) as r:
                    await r.read()
                done += 1
                i += concurrency

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return done / (time.perf_counter() - start)


def section_plain(work: Path) -> None:
    """Issue 3 (c): no rate limit, zero latency; batchedit run vs a plain aiohttp loop."""
    with emulator(
        work, "--rate-limit", "0", "--demo-data", "20000", "--demo-targets", str(work / "t20.jsonl")
    ) as url:
        count = targets_to_edits(work / "t20.jsonl", work / "e20.jsonl")
        summary = work / "s20.json"
        run_cli(
            [
                str(work / "e20.jsonl"),
                "--results",
                str(work / "r20.jsonl"),
                "--rate",
                "0",
                "--concurrency",
                "64",
                "--summary-json",
                str(summary),
            ],
            url,
        )
        data = orjson.loads(summary.read_bytes())
        ours = count / data["elapsed_s"]
        bodies = [orjson.loads(line) for line in (work / "e20.jsonl").read_bytes().splitlines()]
        plain = asyncio.run(_plain_rate(url, bodies, 64, 10.0))
        print(
            f"(c) no rate limit, zero latency, concurrency 64: batchedit run {ours:.0f} edits/s "
            f"({count} edits, all {data['outcomes']}); plain aiohttp loop {plain:.0f} req/s; "
            f"ratio {ours / plain:.2f}"
        )


def section_memory(work: Path) -> None:
    """Issue 3 (d): peak RSS of a 1,000,000-line --dry-run and a 100,000-edit unlimited run."""
    big = work / "million.jsonl"
    with big.open("wb") as out:
        for i in range(1_000_000):
            out.write(
                orjson.dumps(
                    {
                        "From_Account": f"u{i % 997}",
                        "To_Account": f"v{i % 991}",
                        "MsgKey": f"{i}_{i * 7 % 100000}_1795000000",
                        "CloudCustomData": f'{{"n":{i}}}',
                    }
                )
                + b"\n"
            )
    done = run_cli([str(big), "--dry-run"], "")
    print(
        f"(d) 1,000,000-line --dry-run: peak RSS {done.rss_mib:.0f} MiB, wall {done.wall:.1f} s "
        f"({1_000_000 / done.wall:.0f} lines/s), exit {done.status}"
    )
    with emulator(
        work,
        "--rate-limit",
        "0",
        "--demo-data",
        "100000",
        "--demo-targets",
        str(work / "t100k.jsonl"),
    ) as url:
        count = targets_to_edits(work / "t100k.jsonl", work / "e100k.jsonl")
        done = run_cli(
            [str(work / "e100k.jsonl"), "--results", str(work / "r100k.jsonl"), "--rate", "0"], url
        )
        print(
            f"    {count}-edit run, no rate limit: peak RSS {done.rss_mib:.0f} MiB, wall "
            f"{done.wall:.1f} s, exit {done.status}"
        )


def section_resume(work: Path) -> None:
    """Issue 3 (e): --resume over a 1,000,000-line results file that already has every line."""
    edits = work / "resume-edits.jsonl"
    results = work / "resume-results.jsonl"
    with edits.open("wb") as out, results.open("wb") as log:
        for i in range(1, 1_000_001):
            line = orjson.dumps(
                {
                    "From_Account": f"u{i % 997}",
                    "To_Account": f"v{i % 991}",
                    "MsgKey": f"{i}_{i}_1795000000",
                    "CloudCustomData": "x",
                }
            )
            out.write(line + b"\n")
            log.write(
                orjson.dumps(
                    {
                        "line": i,
                        "MsgKey": f"{i}_{i}_1795000000",
                        "From_Account": f"u{i % 997}",
                        "To_Account": f"v{i % 991}",
                        "outcome": "ok",
                        "ErrorCode": 0,
                        "ErrorInfo": "succeed",
                        "attempts": 1,
                        "latency_ms": 3.0,
                        "hash": line_digest(line),
                    }
                )
                + b"\n"
            )
    with emulator(work) as url:
        done = run_cli([str(edits), "--results", str(results), "--resume"], url)
        server = stats(url)
    print(
        f"(e) --resume skipping 1,000,000 done lines: {done.wall:.1f} s wall, "
        f"{done.cpu:.1f} CPU s, peak RSS {done.rss_mib:.0f} MiB, requests sent "
        f"{server.get('arrivals', 0)}, exit {done.status}"
    )


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
