"""Backed-up runs, undo and plans, against the real emulator."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from batchedit import ImClient, Secret, SigSource
from batchedit.backup import read_backup
from batchedit.cli import exit_code_for
from batchedit.edits import Edits
from batchedit.emulator import Message, Store
from batchedit.im.client import RoamMessage
from batchedit.pairs import BadPair, parse_when, read_pairs
from batchedit.plan import plan_edits
from batchedit.retry import RetryPolicy
from batchedit.rules import Rules, parse_template
from batchedit.runner import RunConfig, run_batch
from tests.conftest import ClientFactory, EmulatorFactory, EmulatorProcess, Running, cli_env
from tests.helpers import ADMIN, SDKAPPID, SECRET, read_results, text_body, write_edits

T0 = 1_790_000_000
SECRET_CODE = re.compile(r"code \d{4}")


def seed_conversations(store: Store, conversations: int = 200, per: int = 25) -> set[str]:
    """Seed ``conversations * per`` messages; every tenth conversation crams 40 messages into
    one second. Returns the MsgKeys whose text holds a secret code."""
    rng = random.Random(11)
    store.import_account(ADMIN)
    matching = set()
    for c in range(conversations):
        a, b = f"p{c:03d}a", f"p{c:03d}b"
        store.import_account(a)
        store.import_account(b)
        for i in range(per + (40 if c % 10 == 0 else 0)):
            sender, recipient = (a, b) if rng.random() < 0.5 else (b, a)
            crowded = c % 10 == 0 and i >= per
            stamp = T0 + 5000 if crowded else T0 + rng.randrange(86400)
            secret = rng.random() < 0.15
            text = f"my code {rng.randrange(1000, 9999)} ok" if secret else f"hello {i}"
            ccd = rng.choice([None, "meta"])
            message = store.add(
                Message(sender, recipient, i, rng.randrange(2**32), stamp, text_body(text), ccd)
            )
            if secret:
                matching.add(message.key)
    return matching


def _state(store: Store) -> bytes:
    return b"".join(line + b"\n" for line in store.dump_lines())


def _config(running: Running, tmp_path: Path, **options: Any) -> RunConfig:
    settings: dict[str, Any] = {
        "results": tmp_path / "results.jsonl",
        "endpoint": running.url,
        "sig": SigSource(SDKAPPID, ADMIN, secret_key=Secret(SECRET)),
        "rate": None,
        "policy": RetryPolicy.zero_wait(),
        **options,
    }
    return RunConfig(**settings)


REDACT = Rules(((SECRET_CODE, "code ****"),))


class Collect:
    """An ``emit`` for plan_edits that keeps every planned edit."""

    def __init__(self) -> None:
        self.edits: list[dict[str, Any]] = []

    def __call__(self, edit: dict[str, Any], before: RoamMessage) -> bool:
        self.edits.append(edit)
        return True


async def _plan(client: ImClient, pairs: list[tuple[str, str]], out: Path) -> set[str]:
    planned = Collect()
    await plan_edits(pairs, T0, T0 + 86400, REDACT, client.call, planned)
    write_edits(out, planned.edits)
    return {e["MsgKey"] for e in planned.edits}


def _pairs() -> list[tuple[str, str]]:
    return [(f"p{c:03d}a", f"p{c:03d}b") for c in range(200)]


async def test_plan_backup_undo_round_trip(
    start_emulator: EmulatorFactory, open_client: ClientFactory, tmp_path: Path
) -> None:
    """Plan a redaction, run it with --backup, undo: the state is the original, byte for byte;
    the plan holds exactly the matching messages, though 40 share a second in some chats."""
    running = await start_emulator(rate_limit=None)
    matching = seed_conversations(running.emulator.store)
    original = _state(running.emulator.store)
    client = await open_client(running)
    planned = await _plan(client, _pairs(), tmp_path / "plan.jsonl")
    assert planned == matching
    backup = tmp_path / "backup.jsonl"
    with (tmp_path / "plan.jsonl").open("rb") as source:
        summary = await run_batch(source, _config(running, tmp_path, backup=backup))
    assert summary.all_ok
    assert summary.reads >= len(matching)
    redacted = running.emulator.store.find(*_any_target(tmp_path / "plan.jsonl"))
    assert redacted is not None
    assert "code ****" in redacted.body[0]["MsgContent"]["Text"]
    assert _state(running.emulator.store) != original
    with read_backup(backup) as plan:
        config = _config(running, tmp_path, results=tmp_path / "u.jsonl")
        undone = await run_batch(plan.source, config, kind=Edits(undo=plan))
    assert undone.all_ok
    assert _state(running.emulator.store) == original


def _any_target(plan: Path) -> tuple[str, str, str]:
    first = orjson.loads(plan.read_bytes().splitlines()[0])
    return first["From_Account"], first["To_Account"], first["MsgKey"]


async def test_plan_skips_recalled_and_uses_each_messages_direction(
    start_emulator: EmulatorFactory, open_client: ClientFactory
) -> None:
    """A recalled message is not planned; each edit names its own message's sender."""
    running = await start_emulator()
    store = running.emulator.store
    for user in ("ann", "bob"):
        store.import_account(user)
    store.add(Message("ann", "bob", 1, 1, T0, text_body("code 1111")))
    store.add(Message("bob", "ann", 2, 2, T0, text_body("code 2222")))
    recalled = store.add(Message("ann", "bob", 3, 3, T0, text_body("code 3333"), flag_bits=8))
    client = await open_client(running)
    collect = Collect()
    await plan_edits([("bob", "ann")], T0, T0, REDACT, client.call, collect)
    planned = collect.edits
    assert {(e["From_Account"], e["MsgKey"]) for e in planned} == {
        ("ann", "1_1_" + str(T0)),
        ("bob", "2_2_" + str(T0)),
    }
    assert recalled.key not in {e["MsgKey"] for e in planned}
    assert running.emulator.traffic.of("openim/admin_getroammsg").arrivals == 1


def test_rules_rewrite_texts_descs_and_custom_data() -> None:
    """--replace touches texts (and custom Desc with --custom-desc); the template fills $names."""
    body = [
        {"MsgType": "TIMTextElem", "MsgContent": {"Text": "code 1234"}},
        {"MsgType": "TIMCustomElem", "MsgContent": {"Data": "d", "Desc": "code 9999"}},
    ]
    message = RoamMessage("a", "b", 1, 2, T0, "1_2_3", 0, body, "old", 0)
    texts_only = Rules(((SECRET_CODE, "x"),)).rewrite(message)
    assert texts_only is not None
    assert texts_only["MsgBody"][1]["MsgContent"]["Desc"] == "code 9999"
    with_desc = Rules(((SECRET_CODE, "x"),), custom_desc=True).rewrite(message)
    assert with_desc is not None
    assert [
        e["MsgContent"].get("Text", e["MsgContent"].get("Desc")) for e in with_desc["MsgBody"]
    ] == ["x", "x"]
    ccd = Rules(cloud_custom_data=parse_template('{"was":"$CloudCustomData","key":"$MsgKey"}'))
    assert ccd.rewrite(message) == {
        "From_Account": "a",
        "To_Account": "b",
        "MsgKey": "1_2_3",
        "CloudCustomData": '{"was":"old","key":"1_2_3"}',
    }
    assert Rules(((re.compile("nomatch"), "x"),)).rewrite(message) is None


def test_pairs_and_times(tmp_path: Path) -> None:
    """Pairs come from CSV or JSONL, each conversation once; bad lines are named."""
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text("a,b\nb,a\nc,d,e\n\nx,y\n")
    got = list(read_pairs(csv_file))
    assert got[:2] == [
        ("a", "b"),
        BadPair(3, "pairs line 3: expected two UserIDs, got ['c', 'd', 'e']"),
    ]
    assert got[2:] == [("x", "y")]
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('["a", "b"]\n{"u": "c", "v": "d"}\n42\n')
    assert [p if isinstance(p, tuple) else p.line for p in read_pairs(jsonl)] == [
        ("a", "b"),
        ("c", "d"),
        3,
    ]
    assert parse_when("1700000000") == 1700000000
    assert parse_when("2026-11-20") == 1795132800
    assert parse_when("2026-11-20", end=True) == 1795132800 + 86399
    assert parse_when("2026-11-20T08:00:00+08:00") == 1795132800


async def test_message_edited_twice_returns_to_its_original(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """Two edits of one message in one run: undo restores the state before the first."""
    running = await start_emulator()
    store = running.emulator.store
    for user in ("ann", "bob"):
        store.import_account(user)
    message = store.add(Message("ann", "bob", 1, 1, T0, text_body("original")))
    original = _state(store)
    target = {"From_Account": "ann", "To_Account": "bob", "MsgKey": message.key}
    edits = [
        {**target, "MsgBody": text_body("first")},
        {**target, "MsgBody": text_body("second"), "CloudCustomData": "c"},
    ]
    backup = tmp_path / "backup.jsonl"
    path = write_edits(tmp_path / "edits.jsonl", edits)
    with path.open("rb") as source:
        assert (await run_batch(source, _config(running, tmp_path, backup=backup))).all_ok
    assert message.body == text_body("second")
    assert len(backup.read_bytes().splitlines()) == 2
    with read_backup(backup) as plan:
        config = _config(running, tmp_path, results=tmp_path / "u")
        assert (await run_batch(plan.source, config, kind=Edits(undo=plan))).all_ok
    assert _state(store) == original


async def test_missing_before_image_means_no_edit(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """No before-image (unknown message, or a MsgKey without a time part): the edit is not
    sent, the outcome says why, and the exit status is 1. An edit that changes nothing is ok
    and not sent, unless forced."""
    running = await start_emulator()
    store = running.emulator.store
    for user in ("ann", "bob"):
        store.import_account(user)
    kept = store.add(Message("ann", "bob", 1, 1, T0, text_body("same")))
    edits: list[dict[str, Any]] = [
        {"From_Account": "ann", "To_Account": "bob", "MsgKey": f"9_9_{T0}", "CloudCustomData": "x"},
        {
            "From_Account": "ann",
            "To_Account": "bob",
            "MsgKey": "opaque-key",
            "CloudCustomData": "x",
        },
        {
            "From_Account": "ann",
            "To_Account": "bob",
            "MsgKey": kept.key,
            "MsgBody": text_body("same"),
        },
    ]
    path = write_edits(tmp_path / "edits.jsonl", edits)
    with path.open("rb") as source:
        summary = await run_batch(source, _config(running, tmp_path, backup=tmp_path / "b.jsonl"))
    final = read_results(tmp_path / "results.jsonl")
    assert final[1]["outcome"] == "failed"
    assert final[1]["ErrorInfo"] == (
        f"before-image not found: no message 9_9_{T0} from ann to bob in its second; edit not sent"
    )
    assert final[2]["ErrorInfo"] == (
        "before-image: MsgKey 'opaque-key' is not seq_random_time, so its second is unknown; "
        "edit not sent"
    )
    assert (final[3]["outcome"], final[3]["note"]) == (
        "ok",
        "unchanged: the message already reads so; not sent",
    )
    assert running.emulator.traffic.of("openim/modify_c2c_msg").arrivals == 0
    assert exit_code_for(summary) == 1
    with path.open("rb") as source:
        forced = await run_batch(
            source,
            _config(
                running,
                tmp_path,
                results=tmp_path / "forced.jsonl",
                backup=tmp_path / "forced-backup.jsonl",
                force=True,
            ),
        )
    assert forced.statuses["ok"] == 1
    assert running.emulator.traffic.of("openim/modify_c2c_msg").arrivals == 1


def test_killed_backed_up_run_resumed_then_undone(tmp_path: Path, emulator_process: Any) -> None:
    """Killed midway and resumed before the undo: the state still returns byte for byte."""
    store = Store()
    matching = seed_conversations(store, conversations=60, per=20)
    seed = tmp_path / "seed.jsonl"
    store.save(seed)
    original = seed.read_bytes()
    emulator: EmulatorProcess = emulator_process("--latency-ms", "2-10", state=seed)
    edits = []
    for message in store.messages():
        if message.key in matching:
            text = SECRET_CODE.sub("code ****", message.body[0]["MsgContent"]["Text"])
            edits.append(
                {
                    "From_Account": message.from_account,
                    "To_Account": message.to_account,
                    "MsgKey": message.key,
                    "MsgBody": text_body(text),
                }
            )
    path = write_edits(tmp_path / "edits.jsonl", edits)
    results, backup = tmp_path / "results.jsonl", tmp_path / "backup.jsonl"
    command = [
        sys.executable,
        "-m",
        "batchedit",
        "run",
        str(path),
        "--results",
        str(results),
        "--backup",
        str(backup),
        "--rate",
        "100",
        "--quiet",
    ]
    env = cli_env(emulator.url)
    first = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not results.exists() or results.read_bytes().count(b"\n") < 40:
        assert first.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the run did not get far enough before the deadline"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=20)
    resumed = subprocess.run(
        [*command, "--resume"], env=env, capture_output=True, check=False, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert {row["outcome"] for row in read_results(results).values()} == {"ok"}
    undo = subprocess.run(
        [
            sys.executable,
            "-m",
            "batchedit",
            "undo",
            str(backup),
            "--results",
            str(tmp_path / "undo.jsonl"),
            "--quiet",
        ],
        env=env,
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert undo.returncode == 0, undo.stderr.decode()
    assert emulator.stop() == original
