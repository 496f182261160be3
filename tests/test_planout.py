"""Where a plan's edits go: a stream written as planned, a reader that goes away or stops
reading, an archive that cannot be read."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchedit import planout
from batchedit.emulator import Store
from batchedit.plan import run_callbacks_plan
from batchedit.planner import PlanStats
from batchedit.rules import CcdEdit, Rules
from batchedit.sender import RunControl
from batchedit.transform import Transform
from tests.migration import callback_archive, seed_migration

BUMP = Rules(ccd_edits=(CcdEdit.set("v", "3"),))
HANG_GUARD = 60.0
"""Seconds after which a plan that has not ended fails the test instead of hanging it."""


def _plan(coroutine: Awaitable[PlanStats]) -> Awaitable[PlanStats]:
    return asyncio.wait_for(coroutine, HANG_GUARD)


@pytest.fixture(scope="module")
def archive() -> bytes:
    """The callback archive of a 2,000-message migration fixture (1,000 with JSON data)."""
    store = Store()
    seed_migration(store, conversations=20, per=100)
    return callback_archive(store)


@pytest.fixture
def pipe() -> Iterator[tuple[int, io.FileIO]]:
    """A pipe: its read end, and its write end as an unbuffered binary stream."""
    read, write = os.pipe()
    stream = io.FileIO(write, "wb")
    yield read, stream
    stream.close()
    os.close(read)  # a writer thread still blocked on the pipe now fails and ends


async def test_a_stream_gets_each_edit_as_a_whole_line(archive: bytes) -> None:
    """Edits written to a stream are the same lines a file would get, in archive order."""
    stream = io.BytesIO()
    stats = await _plan(run_callbacks_plan(io.BytesIO(archive), BUMP, output=stream))
    lines = stream.getvalue().splitlines()
    assert (stats.stopped, stats.planned, len(lines)) == (None, 1000, 1000)
    assert all(orjson.loads(line)["CloudCustomData"] for line in lines)


async def test_a_reader_that_has_gone_stops_the_plan_as_fatal(archive: bytes) -> None:
    """Writing into a pipe whose reader closed stops the plan (fatal) with the reason."""
    read, write = os.pipe()
    os.close(read)
    with io.FileIO(write, "wb") as stream:
        stats = await _plan(run_callbacks_plan(io.BytesIO(archive), BUMP, output=stream))
    assert stats.stopped == "fatal"
    assert stats.reason == (
        "cannot write the edits: the reader of the output has gone; the edits written so far "
        "are whole lines"
    )


async def test_a_stop_does_not_wait_for_a_reader_that_does_not_read(
    archive: bytes, pipe: tuple[int, io.FileIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan stopped while its stream is full (nobody reads) ends after the bounded wait
    for the write in progress, as interrupted."""
    monkeypatch.setattr(planout, "STOP_WAIT", 0.05)
    _, stream = pipe
    control = RunControl()
    seen = 0

    def interrupt_late(message: dict[str, Any]) -> dict[str, Any]:
        nonlocal seen
        seen += 1
        if seen == 1000:  # past a full pipe (64 KiB), before the 1,024 edits that may wait
            control.interrupt()
        return {"CloudCustomData": '{"v":3,"pad":"' + "x" * 300 + '"}'}

    stats = await _plan(
        run_callbacks_plan(
            io.BytesIO(archive),
            Rules(),
            output=stream,
            control=control,
            transform=Transform("late", interrupt_late),
        )
    )
    assert stats.stopped == "interrupted"
    assert stats.planned < 2000


class _Failing(io.RawIOBase):
    """A stream that fails on the first read, as a disk error would."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise OSError(5, "Input/output error")


async def test_an_archive_that_cannot_be_read_stops_the_plan(tmp_path: Path) -> None:
    """A read error on the archive stops the plan as fatal, naming the error; no file."""
    out = tmp_path / "plan.jsonl"
    stats = await _plan(run_callbacks_plan(io.BufferedReader(_Failing()), BUMP, output=out))
    assert (stats.stopped, stats.reason) == (
        "fatal",
        "cannot read the archive: OSError: [Errno 5] Input/output error",
    )
    assert not out.exists()
    assert not (tmp_path / "plan.jsonl.partial").exists()
