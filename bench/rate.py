"""Bench sections about the request budget (issue 9): ``rate``, ``restart``, ``cpu``, ``tls`` and
``backup``. Each run is ``batchedit run --rate 200`` against an emulator subprocess with 20-300 ms
latency; the emulator's sliding-window maximum is the largest number of requests it saw in any
one second (the limit is 200), and ``at`` is when that busiest second ended, counted from the
first request it saw."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    PY,
    latency_run,
    measure,
    run_cli,
    seeded_emulator,
    start_cli,
    stats,
    targets_to_edits,
)

RUNS = 10
"""Runs of the ``rate`` section."""
EDITS = 4000
"""Edits per run: 20 s at 200/s."""


def _window(server: dict[str, Any]) -> str:
    return f"window maximum {server['max_window_arrivals']} at {server['max_window_at_s']:.3f} s"


def section_rate(work: Path, runs: int = RUNS, count: int = EDITS) -> None:
    """Issue 9: ten runs of --rate 200 over 4,000 edits each; every window maximum must be at
    most 200, the achieved rate at least 99.4 % of 200."""
    maxima, rates = [], []
    for run in range(1, runs + 1):
        result = latency_run(work, count)
        server = result.server["openim/modify_c2c_msg"]
        achieved = result.summary["achieved_rate"]
        maxima.append(server["max_window_arrivals"])
        rates.append(achieved)
        print(
            f"run {run:>2}: {_window(server)}, achieved {achieved:.2f} req/s "
            f"({achieved / 2:.2f} % of 200), codes {server['codes']}, "
            f"CPU {result.done.cpu / result.count * 1000:.3f} s per 1,000 edits"
        )
    over = sum(m > 200 for m in maxima)
    print(
        f"{runs} runs: window maxima {min(maxima)}-{max(maxima)} ({over} over 200); achieved "
        f"{min(rates):.2f}-{max(rates):.2f} req/s, median {statistics.median(rates):.2f} "
        f"({min(rates) / 2:.2f}-{max(rates) / 2:.2f} % of 200)"
    )


def _arrivals(url: str) -> int:
    with urllib.request.urlopen(f"{url}/__emulator/stats", timeout=10) as response:  # noqa: S310 - loopback only
        found: dict[str, Any] = orjson.loads(response.read())
    return int(found.get("openim/modify_c2c_msg", {}).get("arrivals", 0))


def section_restart(work: Path, runs: int = 5, count: int = 3000) -> None:
    """Issue 9: a run killed with SIGKILL halfway (1,500 requests sent) and resumed at once with
    --resume; the emulator counts both processes, so its window maximum spans the restart."""
    for run in range(1, runs + 1):
        targets = work / f"restart-t{run}.jsonl"
        with seeded_emulator(work, count, targets) as url:
            edits = work / f"restart-e{run}.jsonl"
            targets_to_edits(targets, edits)
            common = [str(edits), "--results", str(work / f"restart-r{run}.jsonl"), "--rate", "200"]
            first = start_cli(common, url)
            deadline = time.monotonic() + 60
            seen = None
            while (arrived := _arrivals(url)) < count // 2 and time.monotonic() < deadline:
                if arrived and seen is None:
                    seen = time.monotonic()
                time.sleep(0.02)
            first.kill()
            first.wait()
            killed = time.monotonic()
            second = start_cli([*common, "--resume"], url)
            done = measure(second, time.perf_counter())
            server = stats(url)
        print(
            f"restart {run}: killed {killed - (seen or killed):.2f} s after the first request "
            f"(+-0.02), resumed at once (exit {done.status}); {_window(server)} across both, "
            f"{server['arrivals']} requests, codes {server['codes']}"
        )


def section_cpu(work: Path, count: int = EDITS, pairs: int = 3) -> None:
    """Issue 9: client CPU per 1,000 edits at 200/s, batchedit run next to a plain aiohttp and
    aiolimiter loop that writes a result line per edit (bench/plainloop.py), same emulator, in
    ``pairs`` alternating pairs (one run's CPU time varies by a fifth on this machine)."""
    per = 1000 / count
    ratios = []
    for pair in range(1, pairs + 1):
        targets = work / f"cpu-t{pair}.jsonl"
        with seeded_emulator(work, count, targets) as url:
            edits = work / f"cpu-e{pair}.jsonl"
            count = targets_to_edits(targets, edits)
            results = work / f"cpu-r{pair}.jsonl"
            ours = run_cli([str(edits), "--results", str(results), "--rate", "200"], url)
            started = time.perf_counter()
            loop = [PY, "-m", "bench.plainloop", str(edits), str(work / "cpu-plain.jsonl")]
            plain = subprocess.Popen([*loop, url, "200"], env=dict(os.environ))
            theirs = measure(plain, started)
        ratios.append(ours.cpu / theirs.cpu)
        print(
            f"pair {pair}: client CPU per 1,000 edits at 200/s, 20-300 ms latency: batchedit run "
            f"{ours.cpu * per:.3f} s, plain aiohttp+aiolimiter loop {theirs.cpu * per:.3f} s, "
            f"ratio {ratios[-1]:.2f} (exits {ours.status}, {theirs.status}; wall "
            f"{ours.wall:.1f} s, {theirs.wall:.1f} s)"
        )
    print(
        f"{pairs} pairs: CPU ratio {min(ratios):.2f}-{max(ratios):.2f}, median "
        f"{statistics.median(ratios):.2f}"
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
            f"{label} --rate 200, {result.count} edits, 20-300 ms latency: {_window(edits)} "
            f"(limit 200), achieved {data['achieved_rate']:.2f} req/s, client CPU "
            f"{done.cpu / result.count * 1000:.3f} s per 1,000 edits, server codes {edits['codes']}"
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


def section_backup(work: Path, count: int = 5000) -> None:
    """Issue 4: edit rate of a --backup run at --rate 200 over 5,000 edits, 20-300 ms latency.

    Each before-image is fsynced before its edit goes out (one fsync per batch of rows waiting
    together); the cost of one fsync on the scratch disk is printed alongside."""
    mean, worst = fsync_cost(work)
    print(
        f"fsync of one backup row on the scratch disk: mean {mean * 1000:.2f} ms, "
        f"max {worst * 1000:.2f} ms"
    )
    backup = work / "backup.jsonl"
    backup.unlink(missing_ok=True)
    result = latency_run(work, count, "--backup", str(backup))
    data = result.summary
    edits = result.server["openim/modify_c2c_msg"]
    reads = result.server["openim/admin_getroammsg"]
    print(
        f"backup run, --rate 200, {result.count} edits, 20-300 ms latency: edits at "
        f"{data['achieved_rate']:.2f} req/s, {data['history_reads']} before-image reads, "
        f"wall {result.done.wall:.1f} s, outcomes {data['outcomes']}"
    )
    print(
        f"    sliding-window maxima: modify_c2c_msg {_window(edits)}, "
        f"admin_getroammsg {_window(reads)} (each limited to 200)"
    )
