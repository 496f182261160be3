"""An undo that never destroys newer work: conflicts, --force, --dry-run, an undoable undo,
old backups, and before-images that undo could not send back; against the real emulator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchedit.backup import read_backup
from batchedit.cli import exit_code_for
from batchedit.edits import UNCHECKED, Edits
from batchedit.emulator import Message, Store
from batchedit.im.client import RoamMessage
from batchedit.im.errors import ConfigError
from batchedit.outcomes import Summary
from batchedit.progress import Progress
from batchedit.runner import run_batch
from tests.conftest import EmulatorFactory, EmulatorProcess, Running, cli_env
from tests.helpers import read_results, seed_messages, text_body, write_edits
from tests.wrapped import run_config

T0 = 1_790_000_000
CHANGED = (2, 9, 17, 23, 38)
"""The lines (1-based) whose messages someone else changes after the run."""


def _state(running: Running) -> bytes:
    return b"".join(line + b"\n" for line in running.emulator.store.dump_lines())


def _modifies(running: Running) -> int:
    return running.emulator.traffic.of("openim/modify_c2c_msg").arrivals


async def _backed_up_run(
    running: Running, tmp_path: Path, count: int = 40
) -> tuple[list[dict[str, Any]], Path, bytes]:
    """Seed ``count`` messages, edit them all in a backed-up run; the edits, the backup, and
    the state before the run."""
    targets = seed_messages(running.emulator.store, count)
    original = _state(running)
    edits = [
        {**target, "MsgBody": text_body(f"redacted {i}"), "CloudCustomData": f"m{i}"}
        for i, target in enumerate(targets)
    ]
    path = write_edits(tmp_path / "edits.jsonl", edits)
    backup = tmp_path / "backup.jsonl"
    with path.open("rb") as source:
        config = run_config(running.url, tmp_path, results=tmp_path / "run.jsonl", backup=backup)
        assert (await run_batch(source, config)).all_ok
    return edits, backup, original


def _change_behind_its_back(running: Running, edits: list[dict[str, Any]]) -> None:
    """Someone else edits the messages of lines :data:`CHANGED`: the body of odd lines, the
    CloudCustomData of even ones."""
    for line in CHANGED:
        edit = edits[line - 1]
        message = running.emulator.store.find(
            edit["From_Account"], edit["To_Account"], edit["MsgKey"]
        )
        assert message is not None
        if line % 2:
            message.body = text_body("edited by a moderator")
        else:
            message.cloud_custom_data = "someone else's"


async def _undo(running: Running, undoing: Path, results: Path | None, **options: Any) -> Summary:
    """``batchedit undo UNDOING --results RESULTS`` with the options given (RunConfig's)."""
    with read_backup(undoing) as plan:
        config = run_config(
            running.url, undoing.parent, results=results, read_from=undoing, **options
        )
        return await run_batch(plan.source, config, kind=Edits(undo=plan))


async def test_undo_restores_the_rest_and_leaves_changed_messages_as_conflicts(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """5 messages changed after a backed-up run: undo restores the 35 others, leaves those 5
    as they are with conflict naming the changed field (exit 1); --force restores them."""
    running = await start_emulator(rate_limit=None)
    edits, backup, original = await _backed_up_run(running, tmp_path)
    _change_behind_its_back(running, edits)
    changed = {line: running.emulator.store.find(*_target(edits[line - 1])) for line in CHANGED}
    kept = {line: (m.body, m.cloud_custom_data) for line, m in changed.items() if m is not None}
    before = _modifies(running)
    results = tmp_path / "undo.jsonl"
    summary = await _undo(running, backup, results)
    rows = read_results(results)
    conflicts = {line: row["fields"] for line, row in rows.items() if row["outcome"] != "ok"}
    assert conflicts == {line: ["MsgBody"] if line % 2 else ["CloudCustomData"] for line in CHANGED}
    assert rows[2]["ErrorInfo"] == (
        "CloudCustomData changed since the run wrote it; not restored, so as not to undo that "
        "change (--force restores it anyway)"
    )
    assert _modifies(running) - before == 35
    assert summary.as_json()["outcomes"] == {"ok": 35, "conflict": 5, "failed": 0, "invalid": 0}
    assert exit_code_for(summary) == 1
    for line, image in kept.items():
        message = changed[line]
        assert message is not None
        assert (message.body, message.cloud_custom_data) == image
    forced = await _undo(running, backup, results, resume=True, force=True)
    assert (forced.skipped, forced.statuses["ok"], exit_code_for(forced)) == (35, 5, 0)
    assert read_results(results)[9]["note"] == "forced: MsgBody had changed since the run wrote it"
    assert _state(running) == original


def _target(edit: dict[str, Any]) -> tuple[str, str, str]:
    return edit["From_Account"], edit["To_Account"], edit["MsgKey"]


async def test_undo_dry_run_sends_nothing_and_reports(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """--dry-run reads each message, sends no edit (the emulator counts none), writes no
    results, and reports what would be restored and what conflicts."""
    running = await start_emulator(rate_limit=None)
    edits, backup, _ = await _backed_up_run(running, tmp_path)
    _change_behind_its_back(running, edits)
    after_run = _state(running)
    before = _modifies(running)
    results = tmp_path / "undo.jsonl"
    summary = await _undo(running, backup, results, dry_run=True)
    assert _modifies(running) == before
    assert _state(running) == after_run
    assert not results.exists()
    assert summary.reads == 40
    assert summary.render().splitlines()[:2] == [
        "batchedit summary (dry run: no edit sent)",
        "  outcomes: would restore 35, conflict 5, failed 0, invalid 0",
    ]
    assert exit_code_for(summary) == 1


async def test_an_undo_with_its_own_backup_can_itself_be_undone(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """undo --backup B2, then undo B2: every message is back as the run left it, byte for byte;
    the first undo's conflict check still applies to B2's own rows."""
    running = await start_emulator(rate_limit=None)
    _, backup, original = await _backed_up_run(running, tmp_path)
    after_run = _state(running)
    second = tmp_path / "undo-backup.jsonl"
    undone = await _undo(running, backup, tmp_path / "undo.jsonl", backup=second)
    assert undone.all_ok
    assert _state(running) == original
    rows = [orjson.loads(line) for line in second.read_bytes().splitlines()]
    assert len(rows) == 40
    assert all(
        row["After"]["MsgBody"][0]["MsgContent"]["Text"].startswith("original") for row in rows
    )
    redone = await _undo(running, second, tmp_path / "redo.jsonl")
    assert redone.all_ok
    assert _state(running) == after_run


async def test_an_old_backup_undoes_without_the_check_and_says_so(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """Backup rows without an after-image (an older batchedit) still undo, every message, with
    a notice before the first edit and a note on each line: no conflict check was possible."""
    running = await start_emulator(rate_limit=None)
    edits, backup, original = await _backed_up_run(running, tmp_path)
    rows = [orjson.loads(line) for line in backup.read_bytes().splitlines()]
    old = tmp_path / "old-backup.jsonl"
    old.write_bytes(
        b"".join(orjson.dumps({k: v for k, v in r.items() if k != "After"}) + b"\n" for r in rows)
    )
    _change_behind_its_back(running, edits)
    notices = _Notices()
    with read_backup(old) as plan:
        config = run_config(running.url, tmp_path, results=tmp_path / "u.jsonl", read_from=old)
        summary = await run_batch(plan.source, config, kind=Edits(undo=plan), observer=notices)
    assert summary.all_ok
    assert _state(running) == original
    assert notices.lines[-1] == (
        f"{old}: 40 of its 40 messages have rows without an after-image (an older batchedit "
        "wrote them): those are restored without the conflict check"
    )
    assert {row["note"] for row in read_results(tmp_path / "u.jsonl").values()} == {UNCHECKED}
    assert summary.reads == 0


class _Notices:
    """An observer that keeps the notices."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def notice(self, line: str) -> None:
        self.lines.append(line)

    def outcome(self, outcome: Any) -> None:
        """Outcomes are not watched here."""

    def tick(self, progress: Progress) -> None:
        """Progress is not watched here."""


async def test_run_backup_refuses_an_edit_that_undo_could_not_send_back(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """A stored message the validator refuses cannot be restored by undo, so run --backup does
    not edit it: the line fails saying why, nothing is sent or backed up. An old SDK's sound
    element is a valid stored element: that message is edited and undone."""
    running = await start_emulator(rate_limit=None)
    store = running.emulator.store
    for user in ("ann", "bob"):
        store.import_account(user)
    odd = store.add(Message("ann", "bob", 1, 1, T0, [{"MsgType": "TIMNopeElem", "MsgContent": {}}]))
    sound = {"MsgType": "TIMSoundElem", "MsgContent": {"UUID": "s", "Size": 9, "Second": 2}}
    old_sdk = store.add(Message("ann", "bob", 2, 2, T0, [sound], "c"))
    original = _state(running)
    edits = [
        {"From_Account": "ann", "To_Account": "bob", "MsgKey": key, "CloudCustomData": "x"}
        for key in (odd.key, old_sdk.key)
    ]
    path = write_edits(tmp_path / "edits.jsonl", edits)
    backup = tmp_path / "backup.jsonl"
    with path.open("rb") as source:
        summary = await run_batch(source, run_config(running.url, tmp_path, backup=backup))
    rows = read_results(tmp_path / "results.jsonl")
    assert (rows[1]["outcome"], rows[1]["ErrorInfo"]) == (
        "failed",
        "before-image could not be sent back by undo (MsgBody[0].MsgType: unknown MsgType "
        "'TIMNopeElem'); edit not sent",
    )
    assert rows[2]["outcome"] == "ok"
    assert exit_code_for(summary) == 1
    assert _modifies(running) == 1
    assert [orjson.loads(line)["MsgKey"] for line in backup.read_bytes().splitlines()] == [
        old_sdk.key
    ]
    assert (await _undo(running, backup, tmp_path / "undo.jsonl")).all_ok
    assert _state(running) == original


def test_a_message_may_read_as_any_edit_of_the_run_left_it(tmp_path: Path) -> None:
    """Two edits of one message, the second failed: the message reads as the first left it,
    which is no conflict; anything else is, named against the last edit."""
    base = {
        "line": 1,
        "From_Account": "a",
        "To_Account": "b",
        "MsgKey": "1_1_1790000000",
        "MsgTimeStamp": 1790000000,
    }
    first, second = text_body("first"), text_body("second")
    backup = tmp_path / "backup.jsonl"
    backup.write_bytes(
        orjson.dumps(
            {
                **base,
                "MsgBody": text_body("0"),
                "CloudCustomData": None,
                "After": {"MsgBody": first, "CloudCustomData": None},
            }
        )
        + b"\n"
        + orjson.dumps(
            {
                **base,
                "line": 2,
                "MsgBody": first,
                "CloudCustomData": None,
                "After": {"MsgBody": second, "CloudCustomData": "c"},
            }
        )
        + b"\n"
    )

    def reading(body: Any, ccd: str | None) -> RoamMessage:
        return RoamMessage("a", "b", 1, 1, T0, "1_1_1790000000", 0, body, ccd, 0)

    with read_backup(backup) as plan:
        afters = plan.afters(1)
        assert afters is not None
        assert plan.afters(2) is None
        assert afters.changed(reading(first, "")) == ()
        assert afters.changed(reading(second, "c")) == ()
        assert afters.changed(reading(second, "d")) == ("CloudCustomData",)
        assert afters.changed(reading(text_body("x"), None)) == ("MsgBody", "CloudCustomData")
        assert plan.source.read().count(b"\n") == 1


def test_a_damaged_after_image_is_named(tmp_path: Path) -> None:
    """A backup row whose After is not an image stops undo before anything is sent."""
    backup = tmp_path / "backup.jsonl"
    row = {
        "line": 1,
        "From_Account": "a",
        "To_Account": "b",
        "MsgKey": "k",
        "MsgTimeStamp": 1790000000,
        "MsgBody": [],
        "CloudCustomData": None,
        "After": {"MsgBody": "x", "CloudCustomData": None},
    }
    backup.write_bytes(orjson.dumps(row) + b"\n")
    with pytest.raises(ConfigError, match=r"line 1: not a backup row \(After.MsgBody: must be"):
        read_backup(backup)


def test_undo_command_dry_run_lists_conflicts(tmp_path: Path, emulator_process: Any) -> None:
    """`batchedit undo --dry-run` prints each conflict and the counts, exits 1, sends no edit;
    an undo whose --backup is its BACKUP is refused (exit 2)."""
    store = Store()
    targets = seed_messages(store, 6)
    seed = tmp_path / "seed.jsonl"
    store.save(seed)
    emulator: EmulatorProcess = emulator_process(state=seed)
    env = cli_env(emulator.url)
    edits = write_edits(
        tmp_path / "edits.jsonl", [{**t, "CloudCustomData": "new"} for t in targets]
    )
    backup = tmp_path / "backup.jsonl"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "batchedit", *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    ran = cli("run", str(edits), "--results", str(tmp_path / "r.jsonl"), "--backup", str(backup))
    assert ran.returncode == 0, ran.stderr
    tamper = write_edits(tmp_path / "tamper.jsonl", [{**targets[3], "CloudCustomData": "mod"}])
    assert cli("run", str(tamper), "--results", str(tmp_path / "t.jsonl")).returncode == 0
    modifies = emulator.get("/__emulator/stats")["openim/modify_c2c_msg"]["arrivals"]
    dry = cli("undo", str(backup), "--dry-run")
    assert dry.returncode == 1, dry.stderr
    assert (
        f"conflict: line 4 ({targets[3]['MsgKey']}): CloudCustomData changed since the run "
        "wrote it" in dry.stderr
    )
    assert "outcomes: would restore 5, conflict 1, failed 0, invalid 0" in dry.stderr
    assert emulator.get("/__emulator/stats")["openim/modify_c2c_msg"]["arrivals"] == modifies
    same = cli("undo", str(backup), "--results", str(tmp_path / "u.jsonl"), "--backup", str(backup))
    assert same.returncode == 2
    assert "BACKUP and --backup are the same file" in same.stderr


def test_undo_refuses_an_edit_file_given_as_backup(tmp_path: Path, emulator_process: Any) -> None:
    """An edit file (or a backup with an edit line in it) given to undo: exit 2 naming the file
    and line, nothing sent, no results written; every backup row has `line` and `MsgTimeStamp`,
    an edit line has neither."""
    store = Store()
    targets = seed_messages(store, 3)
    seed = tmp_path / "seed.jsonl"
    store.save(seed)
    emulator: EmulatorProcess = emulator_process(state=seed)
    edits = write_edits(
        tmp_path / "edits.jsonl",
        [{**t, "MsgBody": text_body("new"), "CloudCustomData": "new"} for t in targets],
    )
    backup = tmp_path / "backup.jsonl"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "batchedit", *args],
            env=cli_env(emulator.url),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    ran = cli("run", str(edits), "--results", str(tmp_path / "r.jsonl"), "--backup", str(backup))
    assert ran.returncode == 0, ran.stderr
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(backup.read_bytes() + edits.read_bytes().splitlines(keepends=True)[0])
    modifies = emulator.get("/__emulator/stats")["openim/modify_c2c_msg"]["arrivals"]
    for given, line in ((edits, 1), (mixed, 4)):
        results = tmp_path / f"undo-{given.stem}.jsonl"
        undone = cli("undo", str(given), "--results", str(results))
        assert undone.returncode == 2, undone.stderr
        assert undone.stderr == (
            f"Error: {given}: line {line} is not a backup row (no 'line' and 'MsgTimeStamp' "
            "whole numbers): undo takes the BACKUP a `batchedit run --backup` wrote, not an "
            "edit file\n"
        )
        assert not results.exists()
    assert emulator.get("/__emulator/stats")["openim/modify_c2c_msg"]["arrivals"] == modifies
