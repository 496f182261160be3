"""Helpers for the report tests: runs against the emulator, and results rows made by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from batchedit import Secret, SigSource
from batchedit.outcomes import Outcome, Status, Summary
from batchedit.progress import Observer
from batchedit.retry import RetryPolicy
from batchedit.runner import RunConfig, run_batch
from batchedit.sender import RunControl
from tests.conftest import Running
from tests.helpers import ADMIN, SDKAPPID, SECRET, seed_messages, write_edits

TORN = b'{"line":999,"MsgKey":"1_2_3","From_Acc'


async def run_edits(
    running: Running,
    edits: Path,
    results: Path,
    *,
    control: RunControl | None = None,
    observer: Observer | None = None,
    **options: Any,
) -> Summary:
    """Run ``edits`` against ``running`` (limiter at 5000/s, no retry waits)."""
    config = RunConfig(
        results=results,
        endpoint=running.url,
        sig=SigSource(SDKAPPID, ADMIN, secret_key=Secret(SECRET)),
        rate=5000.0,
        policy=RetryPolicy.zero_wait(),
        **options,
    )
    with edits.open("rb") as source:
        return await run_batch(source, config, control=control, observer=observer)


def faulty_edits(running: Running, tmp_path: Path, count: int) -> tuple[Path, list[int]]:
    """Edits of ``count`` messages, three of them refused for good, two lines invalid."""
    targets = seed_messages(running.emulator.store, count)
    edits: list[dict[str, Any]] = [{**t, "CloudCustomData": f"n{i}"} for i, t in enumerate(targets)]
    for i in (5, 60, 200):
        running.emulator.faults.key_codes[targets[i]["MsgKey"]] = 20026
    edits[10] = {"From_Account": "u01"}
    edits[300] = {**edits[300], "Bogus": 1}
    return write_edits(tmp_path / "edits.jsonl", edits), [6, 11, 61, 201, 301]


def counts(summary: Summary) -> dict[str, Any]:
    """The counts a report must share with a run's summary."""
    data = summary.as_json()
    return {k: data[k] for k in ("outcomes", "error_codes", "attempts", "retries")}


def row(line: int, status: str = "ok", /, **fields: Any) -> bytes:
    """A results row as ``run`` writes it; a field given as ``...`` is left out."""
    code = {"ok": 0, "failed": 20026, "invalid": None}[status]
    outcome = Outcome(line, f"{line:016x}", Status(status), "a", "b", f"1_{line}_2", code=code)
    row = {**outcome.as_json(), "attempts": 1, "latency_ms": 10.0, **fields}
    return orjson.dumps({k: v for k, v in row.items() if v is not ...}) + b"\n"
