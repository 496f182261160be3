"""The local parts an operator waits on: ``plain``, ``memory`` and ``resume``.

``plain`` compares ``batchedit run`` (no rate limit, zero latency) with a bare aiohttp loop that
sends the same edits, once as it is and once writing and flushing one JSON result line per edit
(the work a run cannot skip); ``memory`` runs a 1,000,000-line ``--dry-run`` (and a 100,000-line
one, for its peak RSS) and a 100,000-edit unlimited run; ``resume`` skips 1,000,000 lines a
results log already has. Each run prints wall time and CPU time (user + sys, from ``wait4``): on
a busy machine the CPU time is the steadier.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
from itertools import islice
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson

from batchedit.im import usersig
from batchedit.records import line_digest
from bench.common import (
    ADMIN,
    PY,
    SDKAPPID,
    SECRET,
    emulator,
    env,
    run_cli,
    stats,
    targets_to_edits,
)

MILLION = 1_000_000


async def plain_rate(
    url: str,
    bodies: list[dict[str, Any]],
    concurrency: int,
    seconds: float,
    results: IO[bytes] | None = None,
) -> float:
    """Requests per second of a bare aiohttp loop sending modify_c2c_msg: no limiter, no
    retries, no records. With ``results``, each answer is also read as JSON and one result line
    is written and flushed for it, as a run does."""
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
                body = bodies[i % len(bodies)]
                sent = time.perf_counter()
                async with session.post(query, data=orjson.dumps(body)) as r:
                    raw = await r.read()
                if results is not None:
                    answer = orjson.loads(raw)
                    row = {
                        "line": i + 1,
                        "MsgKey": body["MsgKey"],
                        "From_Account": body["From_Account"],
                        "To_Account": body["To_Account"],
                        "outcome": "ok" if answer["ErrorCode"] == 0 else "failed",
                        "ErrorCode": answer["ErrorCode"],
                        "ErrorInfo": answer["ErrorInfo"],
                        "attempts": 1,
                        "latency_ms": round((time.perf_counter() - sent) * 1000, 1),
                        "at": round(time.time(), 3),
                    }
                    results.write(orjson.dumps(row) + b"\n")
                    results.flush()
                done += 1
                i += concurrency

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return done / (time.perf_counter() - start)


def _timed_plain(
    url: str, bodies: list[dict[str, Any]], results: IO[bytes] | None
) -> tuple[float, float]:
    """(requests per second, CPU seconds per 1,000 requests) of :func:`plain_rate`, 10 s."""
    cpu = time.process_time()
    wall = time.perf_counter()
    rate = asyncio.run(plain_rate(url, bodies, 64, 10.0, results))
    elapsed = time.perf_counter() - wall
    return rate, (time.process_time() - cpu) / (rate * elapsed) * 1000


def section_plain(work: Path) -> None:
    """Issue 3 (c), issue 10: no rate limit, zero latency; batchedit run vs a plain aiohttp loop
    with and without a result line written and flushed per edit."""
    with emulator(
        work, "--rate-limit", "0", "--demo-data", "20000", "--demo-targets", str(work / "t20.jsonl")
    ) as url:
        count = targets_to_edits(work / "t20.jsonl", work / "e20.jsonl")
        summary = work / "s20.json"
        args = [
            str(work / "e20.jsonl"),
            "--results",
            str(work / "r20.jsonl"),
            "--rate",
            "0",
            "--concurrency",
            "64",
        ]
        done = run_cli([*args, "--summary-json", str(summary)], url)
        data = orjson.loads(summary.read_bytes())
        ours = count / data["elapsed_s"]
        # The same run again with --resume has nothing left to send: its CPU is the start-up.
        start = run_cli([*args, "--resume"], url)
        ours_cpu = (done.cpu - start.cpu) / count * 1000
        bodies = [orjson.loads(line) for line in (work / "e20.jsonl").read_bytes().splitlines()]
        bare, bare_cpu = _timed_plain(url, bodies, None)
        with (work / "plain-results.jsonl").open("wb") as out:
            writing, writing_cpu = _timed_plain(url, bodies, out)
        print(
            f"(c) no rate limit, zero latency, concurrency 64: batchedit run {ours:.0f} edits/s "
            f"({count} edits, all {data['outcomes']}), {ours_cpu:.3f} CPU s per 1,000 beyond "
            f"its start-up ({start.cpu:.2f} CPU s)"
        )
        print(
            f"    plain aiohttp loop {bare:.0f} req/s ({bare_cpu:.3f} CPU s per 1,000); writing "
            f"and flushing a result line per edit {writing:.0f} req/s ({writing_cpu:.3f} CPU s "
            f"per 1,000)"
        )
        print(
            f"    ratio to the loop that writes results: {ours / writing:.2f} by rate, "
            f"{writing_cpu / ours_cpu:.2f} by CPU per edit (the rate ratio holds on an idle "
            f"machine; on a busy one trust the CPU ratio); to the plain loop {ours / bare:.2f}"
        )


def _million_edits(path: Path) -> None:
    with path.open("wb") as out:
        for i in range(MILLION):
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


_LAUNCH = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
print(os.wait4(pid, 0)[2].ru_maxrss)
"""


def _peak_rss_mib(args: list[str]) -> float:
    """The peak RSS of ``batchedit run --quiet ARGS``, in MiB, as a small launcher process sees
    it: the peak wait4 gives for a child is at least its parent's (vfork), and this process may
    be larger than a short run."""
    command = [PY, "-c", _LAUNCH, PY, "-m", "batchedit", "run", "--quiet", *args]
    found = subprocess.run(command, env=env(), capture_output=True, check=True)
    return int(found.stdout) / 1024


def section_memory(work: Path) -> None:
    """Issue 3 (d), issue 10: a 1,000,000-line --dry-run (speed and peak RSS) and the peak RSS
    of a 100,000-edit unlimited run."""
    big = work / "million.jsonl"
    _million_edits(big)
    tenth = work / "tenth.jsonl"
    # Line by line: a child's peak RSS from wait4 is at least this process's own (vfork).
    with big.open("rb") as source, tenth.open("wb") as out:
        out.writelines(islice(source, MILLION // 10))
    small = _peak_rss_mib([str(tenth), "--dry-run"])
    done = run_cli([str(big), "--dry-run"], "")
    print(
        f"(d) 1,000,000-line --dry-run: peak RSS {done.rss_mib:.0f} MiB, wall {done.wall:.1f} s "
        f"({MILLION / done.wall:.0f} lines/s), {done.cpu:.1f} CPU s, exit {done.status}; "
        f"100,000 lines: peak RSS {small:.0f} MiB"
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
            f"{done.wall:.1f} s, {done.cpu:.1f} CPU s, exit {done.status}"
        )


def _done_run(edits: Path, results: Path) -> None:
    """A million edits, and the results log of a run that finished every one of them."""
    with edits.open("wb") as out, results.open("wb") as log:
        for i in range(1, MILLION + 1):
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
                        "at": 1795000000.123 + i / 200,
                    }
                )
                + b"\n"
            )


def section_resume(work: Path) -> None:
    """Issue 3 (e), issue 10: --resume over a 1,000,000-line results file that already has
    every line."""
    edits = work / "resume-edits.jsonl"
    results = work / "resume-results.jsonl"
    _done_run(edits, results)
    with emulator(work) as url:
        done = run_cli([str(edits), "--results", str(results), "--resume"], url)
        server = stats(url)
    print(
        f"(e) --resume skipping 1,000,000 done lines: {done.wall:.1f} s wall, "
        f"{done.cpu:.1f} CPU s, peak RSS {done.rss_mib:.0f} MiB, requests sent "
        f"{server.get('arrivals', 0)}, exit {done.status}"
    )
