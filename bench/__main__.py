"""``make bench``: throughput, rate compliance, CPU, memory and resume numbers, printed.

Every server is a ``batchedit emulator`` subprocess on 127.0.0.1; every run is a ``batchedit run``
subprocess whose CPU time and peak RSS come from ``wait4``. Run one section with
``python -m bench SECTION`` (sections: client, rate, plain, memory, resume, backup, tls,
budget, pipe); all by default.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from batchedit import ImClient, Secret, SigSource, client_context
from batchedit.im import usersig
from batchedit.records import line_digest
from bench.budget import shared_budget
from bench.pipe import piped_plan

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


def _env(url: str = "") -> dict[str, str]:
    env = dict(os.environ)
    env.update({"TIM_SECRET_KEY": SECRET, "TIM_SDKAPPID": str(SDKAPPID), "TIM_BASE_URL": url})
    return env


@contextmanager
def emulator(work: Path, *args: str) -> Iterator[str]:
    """An emulator subprocess; yields its base URL."""
    process = subprocess.Popen(
        [PY, "-m", "batchedit", "emulator", "--port", "0", *args],
        env=_env(),
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


def run_cli(args: list[str], url: str) -> Finished:
    """Run ``batchedit run ARGS`` and measure it."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [PY, "-m", "batchedit", "run", "--quiet", *args],
        env=_env(url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return Finished(
        time.perf_counter() - started,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        process.returncode,
    )


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


def stats(url: str) -> dict[str, Any]:
    """The emulator's modify_c2c_msg counters."""
    found: dict[str, Any] = _all_stats(url).get("openim/modify_c2c_msg", {})
    return found


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
    with emulator(
        work,
        "--latency-ms",
        "20-300",
        "--demo-data",
        str(count),
        "--demo-targets",
        str(work / f"t-{name}.jsonl"),
        *server,
    ) as url:
        edits = work / f"e-{name}.jsonl"
        count = targets_to_edits(work / f"t-{name}.jsonl", edits)
        summary = work / f"s-{name}.json"
        args = [
            str(edits),
            "--results",
            str(work / f"r-{name}.jsonl"),
            "--rate",
            "200",
            "--summary-json",
            str(summary),
            *extra,
            *(["--ca-file", str(ca)] if ca else []),
        ]
        done = run_cli(args, url)
        return LatencyRun(count, done, orjson.loads(summary.read_bytes()), _all_stats(url, ca))


def section_rate(work: Path) -> None:
    """Issue 3 (a), (b): --rate 200 over 12,000 edits at 20-300 ms latency."""
    result = latency_run(work, 12000)
    data, done, count = result.summary, result.done, result.count
    server = result.server["openim/modify_c2c_msg"]
    print(
        f"(a) --rate 200, {count} edits, 20-300 ms latency: achieved "
        f"{data['achieved_rate']:.2f} req/s ({data['achieved_rate'] / 2:.2f} % of 200), "
        f"wall {done.wall:.1f} s, outcomes {data['outcomes']}"
    )
    print(
        f"    emulator sliding-window maximum: {server['max_window_arrivals']} "
        f"arrivals in one second (limit 200), codes {server['codes']}"
    )
    print(f"    latency p50/p95/p99: {data['latency_ms']}")
    print(
        f"(b) client CPU: {done.cpu:.2f} s for {count} edits = "
        f"{done.cpu / count * 1000:.3f} CPU s per 1,000 edits at 200/s"
    )


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


def fsync_cost(work: Path, rows: int = 300) -> tuple[float, float]:
    """Mean and worst seconds to append one backup-sized row and fsync it, on ``work``'s disk."""
    row = orjson.dumps({"MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "x" * 200}}]})
    times = []
    fd = os.open(work / "fsync-probe.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for _ in range(rows):
            start = time.perf_counter()
            os.write(fd, row + b"\n")
            os.fsync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
    return sum(times) / rows, max(times)


def section_backup(work: Path) -> None:
    """Issue 4: edit rate of a --backup run at --rate 200 over 5,000 edits, 20-300 ms latency.

    Each before-image is fsynced before its edit goes out (one fsync per batch of rows waiting
    together); the cost of one fsync on the scratch disk is printed alongside."""
    mean, worst = fsync_cost(work)
    print(
        f"fsync of one backup row on the scratch disk: mean {mean * 1000:.2f} ms, "
        f"max {worst * 1000:.2f} ms"
    )
    result = latency_run(work, 5000, "--backup", str(work / "backup.jsonl"))
    data = result.summary
    edits = result.server["openim/modify_c2c_msg"]
    reads = result.server["openim/admin_getroammsg"]
    print(
        f"backup run, --rate 200, {result.count} edits, 20-300 ms latency: edits at "
        f"{data['achieved_rate']:.2f} req/s, {data['history_reads']} before-image reads, "
        f"wall {result.done.wall:.1f} s, outcomes {data['outcomes']}"
    )
    print(
        f"    sliding-window maxima: modify_c2c_msg {edits['max_window_arrivals']}, "
        f"admin_getroammsg {reads['max_window_arrivals']} (each limited to 200)"
    )


def section_tls(work: Path, count: int = 12000) -> None:
    """Issue 9: the --rate 200 run over https (a handshake per new connection) and plain http."""
    ca = work / "bench-ca.pem"
    for label, server, trust in (
        ("https", ("--tls", "--tls-ca-out", str(ca)), ca),
        ("http ", (), None),
    ):
        result = latency_run(work, count, server=server, ca=trust)
        data, done = result.summary, result.done
        edits = result.server["openim/modify_c2c_msg"]
        print(
            f"{label} --rate 200, {result.count} edits, 20-300 ms latency: window maximum "
            f"{edits['max_window_arrivals']} (limit 200), achieved {data['achieved_rate']:.2f} "
            f"req/s, client CPU {done.cpu / result.count * 1000:.3f} s per 1,000 edits, "
            f"server codes {edits['codes']}"
        )


def section_budget(work: Path) -> None:
    """Issue 9: processes sharing --budget (bench/budget.py)."""
    shared_budget(work, emulator, _all_stats, _env)


def section_pipe(work: Path) -> None:
    """Issue 8: `plan --output - | run -` against plan, then run (bench/pipe.py)."""
    piped_plan(work, emulator, _all_stats, _env)


def _all_stats(url: str, ca: Path | None = None) -> dict[str, Any]:
    async def get() -> dict[str, Any]:
        connector = aiohttp.TCPConnector(ssl=client_context(ca))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"{url}/__emulator/stats") as r,
        ):
            data: dict[str, Any] = await r.json()
            return data

    return asyncio.run(get())


SECTIONS: dict[str, Callable[[Path], None]] = {
    "client": section_client,
    "rate": section_rate,
    "plain": section_plain,
    "memory": section_memory,
    "resume": section_resume,
    "backup": section_backup,
    "tls": section_tls,
    "budget": section_budget,
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
