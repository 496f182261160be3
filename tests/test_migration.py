"""Data migrations against the real emulator: URL moves, CloudCustomData key renames, transforms
and plans from callback archives, each checked byte for byte against a hand-built expectation."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson

from batchedit import Edits, ReadBack, Secret, SigSource, read_backup
from batchedit.emulator import Store
from batchedit.plan import run_callbacks_plan, run_plan
from batchedit.retry import RetryPolicy
from batchedit.rules import CcdEdit, Rules
from batchedit.runner import run_batch
from batchedit.transform import Transform
from batchedit.wiring import ApiConfig
from tests.conftest import EmulatorFactory, Running
from tests.helpers import ADMIN, SDKAPPID, SECRET
from tests.migration import (
    NEW,
    OLD,
    T0,
    callback_archive,
    exact_state,
    expected_migration,
    seed_migration,
)
from tests.wrapped import run_config

MIGRATE = Rules(
    url_rewrites=((OLD, NEW),),
    ccd_edits=(CcdEdit.rename("tag", "label"), CcdEdit.set("v", "2")),
)
ROAM = "openim/admin_getroammsg"


def _api(running: Running) -> ApiConfig:
    sig = SigSource(SDKAPPID, ADMIN, secret_key=Secret(SECRET))
    return ApiConfig(endpoint=running.url, sig=sig, rate=None, policy=RetryPolicy.zero_wait())


def _edits(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_a_migration_moves_every_targeted_url_and_changes_no_other_byte(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """--rewrite-url, --ccd-rename and --ccd-set over 3,000 mixed messages, run with --backup:
    every media URL under the old prefix moved, every tag renamed, v set to 2, and every other
    byte of every message (key order, number spelling, escapes, URLs in texts and custom data)
    as seeded; the plan holds exactly the messages that change."""
    running = await start_emulator(rate_limit=None)
    seeded = seed_migration(running.emulator.store)
    reference = Store()
    seed_migration(reference)
    before = list(exact_state(reference))
    expected = expected_migration(reference, seeded)
    changing = {
        orjson.loads(line)[2] for line, after in zip(before, expected, strict=True) if line != after
    }
    assert len(before) == 3000
    assert 1000 < len(changing) < 3000

    out = tmp_path / "plan.jsonl"
    stats = await run_plan(seeded.pairs, T0, T0 + 86400, MIGRATE, _api(running), output=out)
    assert (stats.stopped, stats.problems, stats.messages) == (None, [], 3000)
    assert {edit["MsgKey"] for edit in _edits(out)} == changing
    assert set(stats.element_types) == {
        "TIMTextElem",
        "TIMImageElem",
        "TIMSoundElem",
        "TIMFileElem",
        "TIMVideoFileElem",
        "TIMCustomElem",
    }

    backup = tmp_path / "backup.jsonl"
    with out.open("rb") as source:
        summary = await run_batch(source, run_config(running.url, tmp_path, backup=backup))
    assert summary.all_ok
    assert summary.statuses["ok"] == summary.sent_records == len(changing)
    assert list(exact_state(running.emulator.store)) == expected
    assert len(backup.read_bytes().splitlines()) == len(changing)

    # The proof a migration ends with: every planned line reads back as the plan says.
    with out.open("rb") as source:
        checked = await run_batch(
            source,
            run_config(running.url, tmp_path, results=tmp_path / "verify.jsonl"),
            kind=ReadBack(),
        )
    assert checked.all_ok
    assert checked.statuses["match"] == len(changing)

    # And the way back: undo restores the seed byte for byte.
    plan = read_backup(backup)
    with plan.source:
        undone = await run_batch(
            plan.source,
            run_config(running.url, tmp_path, results=tmp_path / "undo.jsonl", read_from=backup),
            kind=Edits(undo=plan),
        )
    assert undone.all_ok
    assert list(exact_state(running.emulator.store)) == before


async def test_a_callback_archive_plans_the_same_edits_with_no_request(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """plan --from-callbacks over the fixture's archive writes the same edit lines as the
    history scan, and the emulator sees no request at all."""
    running = await start_emulator(rate_limit=None)
    seeded = seed_migration(running.emulator.store)
    archive = callback_archive(running.emulator.store)
    from_history = tmp_path / "history.jsonl"
    await run_plan(seeded.pairs, T0, T0 + 86400, MIGRATE, _api(running), output=from_history)
    reads = running.emulator.traffic.of(ROAM).arrivals
    assert reads >= 100

    from_archive = tmp_path / "archive.jsonl"
    stats = await run_callbacks_plan(io.BytesIO(archive), MIGRATE, output=from_archive)
    assert (stats.stopped, stats.archive_lines, stats.messages) == (None, 3000, 3000)
    assert running.emulator.traffic.of(ROAM).arrivals == reads
    assert sorted(from_archive.read_bytes().splitlines()) == sorted(
        from_history.read_bytes().splitlines()
    )


TRANSFORM = '''
import json

def migrate(message):
    """Rename tag to label in CloudCustomData; leave alone messages without one."""
    ccd = message["CloudCustomData"]
    if not ccd or '"tag"' not in ccd:
        return None
    data = json.loads(ccd)
    data["label"] = data.pop("tag")
    if message["MsgKey"] == EXPLODE:
        raise RuntimeError("cannot migrate " + message["MsgKey"])
    return {"CloudCustomData": json.dumps(data)}
'''


async def test_a_transform_file_renames_a_key_keeps_only_its_messages_and_reports_one_failure(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """A transform given as a file path plans exactly the messages it returns a change for
    (the others it leaves alone); one that raises on one message reports that MsgKey and the
    error and plans the rest."""
    running = await start_emulator(rate_limit=None)
    seeded = seed_migration(running.emulator.store, conversations=10)
    tagged = {
        m.key: m
        for m in running.emulator.store.messages()
        if '"tag"' in (m.cloud_custom_data or "")
    }
    explode = sorted(tagged)[3]
    script = tmp_path / "fix.py"
    script.write_text(f"EXPLODE = {explode!r}\n{TRANSFORM}")
    transform = Transform.load(f"{script}:migrate")
    out = tmp_path / "plan.jsonl"
    stats = await run_plan(
        seeded.pairs, T0, T0 + 86400, Rules(), _api(running), output=out, transform=transform
    )
    edits = {edit["MsgKey"]: edit for edit in _edits(out)}
    assert set(edits) == set(tagged) - {explode}
    assert all(
        set(edit) == {"From_Account", "To_Account", "MsgKey", "CloudCustomData"}
        for edit in edits.values()
    )
    assert all('"label"' in edit["CloudCustomData"] for edit in edits.values())
    assert stats.left_alone == 300 - len(tagged)
    [problem] = stats.problems
    assert problem.msg_key == explode
    assert problem.reason == (
        f"the transform raised RuntimeError: cannot migrate {explode} (at fix.py:13)"
    )


async def test_a_stale_archive_is_caught_by_the_backed_up_run(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """Messages recalled or edited since they were archived: with --backup a recalled one is
    not edited, one that already reads as planned is not sent, and one edited otherwise keeps
    its newer content in the backup, for undo."""
    running = await start_emulator(rate_limit=None)
    seed_migration(running.emulator.store, conversations=4, per=10)
    archive = callback_archive(running.emulator.store)
    out = tmp_path / "plan.jsonl"
    await run_callbacks_plan(io.BytesIO(archive), MIGRATE, output=out)
    planned = _edits(out)
    recalled, migrated, moderated = (
        running.emulator.store.find(e["From_Account"], e["To_Account"], e["MsgKey"])
        for e in planned[:3]
    )
    assert recalled is not None
    assert migrated is not None
    assert moderated is not None
    recalled.flag_bits = 8
    migrated.body = planned[1].get("MsgBody", migrated.body)
    migrated.cloud_custom_data = planned[1].get("CloudCustomData", migrated.cloud_custom_data)
    moderated.body = [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "[removed]"}}]

    backup = tmp_path / "backup.jsonl"
    with out.open("rb") as source:
        await run_batch(source, run_config(running.url, tmp_path, backup=backup))
    rows = {
        row["line"]: row
        for row in map(orjson.loads, (tmp_path / "results.jsonl").read_bytes().splitlines())
    }
    assert (rows[1]["outcome"], rows[1]["ErrorInfo"]) == (
        "failed",
        "before-image: the message was recalled; edit not sent",
    )
    assert rows[2]["outcome"] == "ok"
    assert rows[2]["note"] == "unchanged: the message already reads so; not sent"
    assert rows[3]["outcome"] == "ok"
    images = [orjson.loads(line) for line in backup.read_bytes().splitlines()]
    assert images[0]["MsgKey"] == moderated.key
    assert images[0]["MsgBody"] == [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "[removed]"}}]
