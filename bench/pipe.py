"""``python -m bench pipe``: ``plan --output - | run -`` against plan, then run.

10,000 messages over 200 conversations, half of them changed by the rule (5,000 edits); each
message is about 2.5 KB, so a history page holds about five and the plan needs some 2,000
``admin_getroammsg`` requests (about 10 s at 200/s) against the run's 5,000 ``modify_c2c_msg``
requests (about 25 s). Both at --rate 200 against an emulator with 20-300 ms latency, each
measurement on a fresh copy of the same seed. The two APIs have separate budgets, so the
pipeline should take about as long as the run alone, not the sum.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import orjson

from batchedit.emulator import Message, Store

CONVERSATIONS = 200
PER = 50
T0 = 1_790_000_000
FILLER = "x" * 2300
RULE = ["--replace", "old-cdn[.]example[.]com", "new-cdn.example.com"]


def _seed(path: Path) -> Path:
    """The seed state; returns the PAIRS file (a CSV) next to it."""
    rng = random.Random(5)
    store = Store()
    store.import_account("administrator")
    pairs = path.with_name("pipe-pairs.csv")
    with pairs.open("w") as out:
        for c in range(CONVERSATIONS):
            a, b = f"p{c:03d}a", f"p{c:03d}b"
            store.import_account(a)
            store.import_account(b)
            out.write(f"{a},{b}\n")
            for i in range(PER):
                host = "old-cdn.example.com" if i % 2 else "elsewhere.example.org"
                text = f"see https://{host}/{c}/{i} {FILLER}"
                body = [{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}]
                stamp = T0 + rng.randrange(86400)
                store.add(Message(a, b, i + 1, rng.randrange(2**32), stamp, body))
    store.save(path)
    return pairs


def _plan(pairs: Path, output: str) -> list[str]:
    return [
        *(sys.executable, "-m", "batchedit", "plan", str(pairs)),
        *("--since", str(T0), "--until", str(T0 + 86400), *RULE, "--output", output),
    ]


def _run(source: str, results: Path) -> list[str]:
    return [sys.executable, "-m", "batchedit", "run", source, "--results", str(results), "-q"]


def _ok(results: Path) -> int:
    rows = [orjson.loads(line) for line in results.read_bytes().splitlines()]
    return sum(row["outcome"] == "ok" for row in rows)


def _piped(pairs: Path, results: Path, env: dict[str, str]) -> None:
    """``plan PAIRS --output - | run - --results RESULTS``; both must exit 0."""
    quiet = subprocess.DEVNULL
    plan = subprocess.Popen(_plan(pairs, "-"), env=env, stdout=subprocess.PIPE, stderr=quiet)
    run = subprocess.Popen(_run("-", results), env=env, stdin=plan.stdout, stderr=quiet)
    if plan.stdout is not None:
        plan.stdout.close()  # the run holds the read end now
    assert (plan.wait(), run.wait()) == (0, 0)


def piped_plan(
    work: Path,
    emulator: Callable[..., AbstractContextManager[str]],
    all_stats: Callable[[str], dict[str, Any]],
    env: Callable[[str], dict[str, str]],
) -> None:
    """Print the sequential and piped wall times, with each one's request counts."""
    seed = work / "pipe-seed.jsonl"
    pairs = _seed(seed)
    timings: dict[str, float] = {}
    for mode in ("sequential", "piped"):
        state = work / f"pipe-{mode}.jsonl"
        shutil.copyfile(seed, state)
        results = work / f"pipe-{mode}-results.jsonl"
        server = ("--state", str(state), "--retention-days", "0", "--latency-ms", "20-300")
        with emulator(work, *server) as url:
            started = time.perf_counter()
            if mode == "sequential":
                edits = work / "pipe-edits.jsonl"
                for command in (_plan(pairs, str(edits)), _run(str(edits), results)):
                    subprocess.run(command, env=env(url), stderr=subprocess.DEVNULL, check=True)
                    timings.setdefault("plan", time.perf_counter() - started)
            else:
                _piped(pairs, results, env(url))
            timings[mode] = time.perf_counter() - started
            server_stats = all_stats(url)
        reads = server_stats["openim/admin_getroammsg"]
        writes = server_stats["openim/modify_c2c_msg"]
        print(
            f"{mode:>10}: wall {timings[mode]:.1f} s, {_ok(results)} edits ok; "
            f"admin_getroammsg {reads['arrivals']} requests (window maximum "
            f"{reads['max_window_arrivals']}), modify_c2c_msg {writes['arrivals']} requests "
            f"(window maximum {writes['max_window_arrivals']})"
        )
    run_alone = timings["sequential"] - timings["plan"]
    print(
        f"    plan alone {timings['plan']:.1f} s, run alone {run_alone:.1f} s: piped "
        f"{timings['piped']:.1f} s is {timings['piped'] / max(timings['plan'], run_alone):.2f}x "
        f"the slower one, {timings['piped'] / timings['sequential']:.2f}x one after the other"
    )
