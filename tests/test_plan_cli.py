"""`batchedit plan` on the command line: archives, streams into `run`, and what it says."""

from __future__ import annotations

import select
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from batchedit.cli import main
from batchedit.cli_plan import render_change
from batchedit.emulator import Store
from batchedit.im.client import RoamMessage
from tests.conftest import EmulatorProcess, cli_env
from tests.migration import (
    NEW,
    OLD,
    callback_archive,
    exact_state,
    expected_migration,
    seed_migration,
)

PLAN = [sys.executable, "-m", "batchedit", "plan"]
MIGRATE = ["--rewrite-url", OLD, NEW, "--ccd-rename", "tag", "label", "--ccd-set", "v", "2"]


def _sorted(line: bytes) -> bytes:
    return orjson.dumps(orjson.loads(line), option=orjson.OPT_SORT_KEYS)


def _runner() -> CliRunner:
    return CliRunner(env={"TIM_SECRET_KEY": None, "TIM_BASE_URL": None, "TIM_REGION": None})


def _payload(key: str, **fields: Any) -> bytes:
    payload = {
        "CallbackCommand": "C2C.CallbackAfterSendMsg",
        "From_Account": "ann",
        "To_Account": "bob",
        "MsgSeq": 1,
        "MsgRandom": 2,
        "MsgTime": 1_790_000_000,
        "MsgKey": key,
        "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "old words"}}],
        **fields,
    }
    return orjson.dumps({k: v for k, v in payload.items() if v is not None})


def test_a_damaged_archive_is_planned_around_its_bad_lines(tmp_path: Path) -> None:
    """Damaged archive lines are named with their number and skipped (exit 1, no traceback);
    other callbacks, undelivered and repeated payloads are counted; no credentials needed."""
    archive = tmp_path / "callbacks.jsonl"
    archive.write_bytes(
        b"\n".join(
            [
                _payload("1_2_1790000000"),
                b"\xff\xfe not text",
                b'{"CallbackCommand": "C2C.CallbackAfterSendMsg", "MsgKey": "x"',
                b"[1, 2]",
                _payload("1_2_1790000000"),
                _payload("3_4_1790000000", CallbackCommand="C2C.CallbackAfterMsgWithDraw"),
                _payload("5_6_1790000000", SendMsgResult=80001),
                _payload("7_8_1790000000", MsgTime="soon"),
                b"",
                b"{" * 70_000,
                _payload("9_9_1790000000", CloudCustomData="keep"),
            ]
        )
        + b"\n"
    )
    out = tmp_path / "plan.jsonl"
    result = _runner().invoke(
        main,
        ["plan", "--from-callbacks", str(archive), "--replace", "old", "new", "-o", str(out)],
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for line in [
        "plan: 11 archive lines, 2 messages, 2 edits planned, no API requests",
        "skipped: 1 C2C.CallbackAfterMsgWithDraw payloads",
        "skipped: 1 messages not delivered (SendMsgResult not 0)",
        "skipped: 1 repeated payloads (a message given again)",
        "skipped: archive line 2: not valid UTF-8 (byte 1)",
        "skipped: archive line 4: expected a JSON object, got array",
        "skipped: archive line 8: MsgTime: missing or not a whole number",
        "skipped: archive line 10: longer than 65536 bytes, not read",
    ]:
        assert f"{line}\n" in result.output
    assert "skipped: archive line 3: malformed JSON: " in result.output
    edits = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [(e["MsgKey"], e["MsgBody"][0]["MsgContent"]["Text"]) for e in edits] == [
        ("1_2_1790000000", "new words"),
        ("9_9_1790000000", "new words"),
    ]


def test_a_plan_that_changes_nothing_says_what_it_saw(tmp_path: Path) -> None:
    """ "0 edits planned" comes with the element types seen and the fields the rules read."""
    image = {
        "MsgType": "TIMImageElem",
        "MsgContent": {"UUID": "u", "ImageFormat": 1, "ImageInfoArray": []},
    }
    archive = tmp_path / "callbacks.jsonl"
    archive.write_bytes(
        b"".join(_payload(f"{i}_1_1790000000", MsgBody=[image]) + b"\n" for i in range(3))
    )
    result = _runner().invoke(
        main,
        ["plan", "--from-callbacks", str(archive), "--replace", "a", "b", "--preview", "1"],
    )
    assert result.exit_code == 0, result.output
    assert (
        "nothing planned: 3 messages: 3 TIMImageElem, 0 with CloudCustomData; "
        "--replace reads TIMTextElem Text only\n"
    ) in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from-callbacks", "-", "P"], "give PAIRS (to read history) or --from-callbacks FILE"),
        ([], "give PAIRS (to read history) or --from-callbacks FILE, not both"),
        (["P", "--since", "1"], "reading history needs --since and --until"),
        (["P", "--since", "1", "--until", "2", "--ccd-set", "v", "x"], "--ccd-set v: 'x' is not"),
        (["--from-callbacks", "-", "--transform", "nope"], "--transform 'nope': give MODULE:"),
        (["--from-callbacks", "nowhere.jsonl"], "cannot read nowhere.jsonl: No such file"),
    ],
)
def test_plan_sources_and_rules_are_checked_first(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both or neither of PAIRS and --from-callbacks, history without a range, a bad rule or
    transform, an archive that cannot be opened: exit 2 with the reason."""
    monkeypatch.chdir(tmp_path)
    Path("P").write_text("a,b\n")
    rule = (
        [] if any(a.startswith(("--ccd", "--transform")) for a in args) else ["--replace", "a", "b"]
    )
    result = _runner().invoke(main, ["plan", *args, *rule, "-o", "out.jsonl"])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_preview_shows_each_changed_field() -> None:
    """The preview shows the fields an edit changes, URLs and custom data included."""
    body = [
        {
            "MsgType": "TIMImageElem",
            "MsgContent": {"UUID": "u", "ImageInfoArray": [{"URL": OLD + "a.png", "Width": 1}]},
        }
    ]
    new = [
        {
            **body[0],
            "MsgContent": {"UUID": "u", "ImageInfoArray": [{"URL": NEW + "a.png", "Width": 1}]},
        }
    ]
    before = RoamMessage("a", "b", 1, 2, 1_790_000_000, "1_2_1790000000", 0, body, None, 0)
    shown = render_change({"MsgBody": new, "CloudCustomData": '{"v":2}'}, before)
    assert shown.splitlines()[1:] == [
        f"  - TIMImageElem.ImageInfoArray[0].URL: {OLD}a.png",
        f"  + TIMImageElem.ImageInfoArray[0].URL: {NEW}a.png",
        "  - CloudCustomData: ",
        '  + CloudCustomData: {"v":2}',
    ]


def test_plan_piped_into_run_migrates_as_it_plans(
    tmp_path: Path, emulator_process: Callable[..., EmulatorProcess]
) -> None:
    """`plan --rewrite-url --ccd-rename --ccd-set --output - | run - --backup`: the stream
    holds only edit lines, every edit is ok, and the emulator ends in the expected state; the
    plan's messages are all on stderr."""
    store = Store()
    seeded = seed_migration(store, conversations=20, per=20)
    expected = expected_migration(store, seeded)
    state = tmp_path / "seed.jsonl"
    store.save(state)
    emulator = emulator_process("--rate-limit", "0", state=state)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("".join(f"{a},{b}\n" for a, b in seeded.pairs))
    env = cli_env(emulator.url)
    plan = subprocess.Popen(
        [*PLAN, str(pairs), "--since", "0", "--until", "2000000000", *MIGRATE, "--output", "-"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert plan.stdout is not None
    results = tmp_path / "results.jsonl"
    run = subprocess.run(
        [
            *(sys.executable, "-m", "batchedit", "run", "-", "--results", str(results)),
            *("--backup", str(tmp_path / "backup.jsonl"), "--quiet"),
        ],
        env=env,
        stdin=plan.stdout,
        capture_output=True,
        timeout=120,
        check=False,
    )
    plan.stdout.close()
    _, plan_err = plan.communicate(timeout=60)
    assert plan.returncode == 0, plan_err.decode()
    assert run.returncode == 0, run.stderr.decode()
    assert b"wrote " in plan_err
    assert b"edits to stdout" in plan_err
    rows = [orjson.loads(line) for line in results.read_bytes().splitlines()]
    assert rows
    assert {row["outcome"] for row in rows} == {"ok"}
    final = Store.load(emulator.stop().splitlines())  # the state file sorts keys: so do we
    assert list(map(_sorted, exact_state(final))) == list(map(_sorted, expected))


def _plan_to_a_pipe(tmp_path: Path, conversations: int) -> subprocess.Popen[bytes]:
    """`plan --output -` of a migration over a callback archive of ``conversations`` of 100
    messages each, its stdout and stderr pipes to the test."""
    store = Store()
    seed_migration(store, conversations=conversations, per=100)
    archive = tmp_path / "callbacks.jsonl"
    archive.write_bytes(callback_archive(store))
    return subprocess.Popen(
        [*PLAN, "--from-callbacks", str(archive), *MIGRATE, "--output", "-"],
        env=cli_env("http://127.0.0.1:9"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_a_reader_that_goes_away_stops_the_plan_without_a_traceback(tmp_path: Path) -> None:
    """When the process reading `plan --output -` exits, plan stops (exit 3) saying so, and
    every line it wrote is whole."""
    plan = _plan_to_a_pipe(tmp_path, conversations=100)
    assert plan.stdout is not None
    first = plan.stdout.readline()
    assert orjson.loads(first)["MsgKey"]
    plan.stdout.close()
    _, err = plan.communicate(timeout=60)
    assert plan.returncode == 3, err.decode()
    assert b"Traceback" not in err
    assert b"Exception ignored" not in err
    assert (
        b"STOPPED (fatal): cannot write the edits: the reader of the output has gone; "
        b"the edits written so far are whole lines\n"
    ) in err


def test_an_archive_can_come_from_stdin(tmp_path: Path) -> None:
    """--from-callbacks - reads the archive from stdin."""
    archive = _payload("1_2_1790000000") + b"\n"
    out = tmp_path / "plan.jsonl"
    done = subprocess.run(
        [*PLAN, "--from-callbacks", "-", "--replace", "old", "new", "-o", str(out)],
        input=archive,
        env=cli_env("http://127.0.0.1:9"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"start: callback archive -, no API requests" in done.stderr
    assert len(out.read_bytes().splitlines()) == 1


def test_ctrl_c_ends_a_plan_whose_reader_does_not_read(tmp_path: Path) -> None:
    """A plan blocked on a full pipe that nobody reads still ends on the first Ctrl-C
    (exit 130), after a bounded wait for the write in progress."""
    plan = _plan_to_a_pipe(tmp_path, conversations=50)
    assert plan.stderr is not None
    ready, _, _ = select.select([plan.stderr], [], [], 30)
    assert ready
    assert plan.stderr.readline().startswith(b"start: callback archive ")  # signals are wired
    plan.send_signal(signal.SIGINT)
    _, err = plan.communicate(timeout=60)
    assert plan.returncode == 130, err.decode()
    assert b"STOPPED (interrupted): interrupted: in-flight requests were let finish\n" in err
    assert b"Traceback" not in err


def test_a_transform_that_fails_on_a_message_names_it_and_plans_the_rest(tmp_path: Path) -> None:
    """`plan --transform FILE.py:FUNCTION`: a message it raises on is named with its MsgKey
    and the error (exit 1); the others are planned."""
    (tmp_path / "fix.py").write_text(
        "def fix(message):\n"
        "    if message['MsgKey'].startswith('2_'):\n"
        "        raise KeyError('label')\n"
        "    return {'CloudCustomData': 'seen'}\n"
    )
    archive = tmp_path / "callbacks.jsonl"
    archive.write_bytes(b"".join(_payload(f"{i}_1_1790000000") + b"\n" for i in range(1, 4)))
    out = tmp_path / "plan.jsonl"
    transform = ["--transform", f"{tmp_path}/fix.py:fix"]
    result = _runner().invoke(
        main, ["plan", "--from-callbacks", str(archive), *transform, "--output", str(out)]
    )
    assert result.exit_code == 1, result.output
    assert (
        "not planned: ann -> bob 2_1_1790000000: the transform raised KeyError: 'label' "
        "(at fix.py:3)\n"
    ) in result.output
    planned = [orjson.loads(line)["MsgKey"] for line in out.read_bytes().splitlines()]
    assert planned == ["1_1_1790000000", "3_1_1790000000"]


def test_ctrl_c_ends_a_plan_waiting_on_a_quiet_archive(tmp_path: Path) -> None:
    """`plan --from-callbacks -` on a stdin that stays open and says nothing ends on the
    first Ctrl-C (exit 130)."""
    plan = subprocess.Popen(
        [*PLAN, "--from-callbacks", "-", "--replace", "a", "b", "-o", str(tmp_path / "p.jsonl")],
        env=cli_env("http://127.0.0.1:9"),
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert plan.stderr is not None
    ready, _, _ = select.select([plan.stderr], [], [], 30)
    assert ready
    assert plan.stderr.readline().startswith(b"start: callback archive -")  # signals are wired
    plan.send_signal(signal.SIGINT)
    returncode = plan.wait(timeout=60)  # stdin stays open and quiet all along
    _, err = plan.communicate(timeout=60)
    assert returncode == 130, err.decode()
    assert b"STOPPED (interrupted)" in err
    assert not (tmp_path / "p.jsonl").exists()
