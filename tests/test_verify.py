"""batchedit verify: every message an edit file targets read back and judged, against the
real emulator."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import orjson
import pytest
from click.testing import CliRunner

from batchedit.backup import read_backup
from batchedit.cli import exit_code_for, main
from batchedit.edits import Edits, LineKind
from batchedit.emulator import Message, Store
from batchedit.im.errors import ConfigError
from batchedit.outcomes import Outcome, Status
from batchedit.records import EditRecord, parse_line
from batchedit.report import build_report
from batchedit.runner import run_batch
from batchedit.verify import LastLines, ReadBack
from tests.conftest import EmulatorFactory, EmulatorProcess, Running, cli_env
from tests.helpers import read_results, seed_messages, text_body, write_edits
from tests.wrapped import run_config

T0 = 1_790_000_000


def _redactions(targets: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [
        {**target, "MsgBody": text_body(f"redacted {i}"), "CloudCustomData": f"m{i}"}
        for i, target in enumerate(targets)
    ]


async def _verify(running: Running, path: Path, results: Path, **options: Any) -> Any:
    with path.open("rb") as source:
        config = run_config(running.url, results.parent, results=results, **options)
        return await run_batch(source, config, kind=ReadBack())


async def test_verify_names_exactly_the_messages_changed_behind_the_runs_back(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """After a run, 3 messages changed by someone else are the only mismatches (naming the
    field that differs), every other line matches, and the exit status is 1; no edit is sent."""
    running = await start_emulator(rate_limit=None)
    store = running.emulator.store
    edits = _redactions(seed_messages(store, 40))
    path = write_edits(tmp_path / "edits.jsonl", edits)
    with path.open("rb") as source:
        ran = await run_batch(source, run_config(running.url, tmp_path))
    assert ran.all_ok
    changed = {3: "body", 17: "ccd", 30: "both"}
    for line, what in changed.items():
        edit = edits[line - 1]
        message = store.find(edit["From_Account"], edit["To_Account"], edit["MsgKey"])
        assert message is not None
        if what in ("body", "both"):
            message.body = text_body("changed by a moderator")
        if what in ("ccd", "both"):
            message.cloud_custom_data = "someone else's"
    modifies = running.emulator.traffic.of("openim/modify_c2c_msg").arrivals
    summary = await _verify(running, path, tmp_path / "verify.jsonl")
    rows = read_results(tmp_path / "verify.jsonl")
    assert sorted(rows) == list(range(1, 41))
    mismatched = {line: row["fields"] for line, row in rows.items() if row["outcome"] != "match"}
    assert mismatched == {
        3: ["MsgBody"],
        17: ["CloudCustomData"],
        30: ["MsgBody", "CloudCustomData"],
    }
    assert {rows[line]["outcome"] for line in changed} == {"mismatch"}
    assert rows[30]["ErrorInfo"] == "MsgBody and CloudCustomData differ from what the line sets"
    assert rows[3]["MsgKey"] == edits[2]["MsgKey"]
    assert summary.statuses["match"] == 37
    assert summary.attempts == 40
    assert exit_code_for(summary) == 1
    assert running.emulator.traffic.of("openim/modify_c2c_msg").arrivals == modifies
    report = build_report([tmp_path / "verify.jsonl"]).render()
    assert "outcomes: match 37, mismatch 3, missing 0, failed 0, invalid 0" in report
    assert "mismatch, missing, failed and invalid lines (3):" in report


async def test_verify_outcomes_for_missing_unreadable_invalid_and_repeated_lines(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """A message that does not exist is missing, a key without a time part failed, a bad line
    invalid; two lines for one message are both judged against the last one."""
    running = await start_emulator(rate_limit=None)
    store = running.emulator.store
    for user in ("ann", "bob"):
        store.import_account(user)
    message = store.add(Message("ann", "bob", 1, 1, T0, text_body("second"), "c"))
    target = {"From_Account": "ann", "To_Account": "bob", "MsgKey": message.key}
    path = tmp_path / "edits.jsonl"
    lines = [
        orjson.dumps({**target, "MsgBody": text_body("first")}),
        orjson.dumps({**target, "MsgKey": f"9_9_{T0}", "CloudCustomData": "x"}),
        orjson.dumps({**target, "MsgKey": "opaque", "CloudCustomData": "x"}),
        b'{"From_Account": "ann"',
        orjson.dumps({**target, "MsgBody": text_body("second"), "CloudCustomData": "c"}),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    summary = await _verify(running, path, tmp_path / "verify.jsonl")
    rows = read_results(tmp_path / "verify.jsonl")
    assert {line: row["outcome"] for line, row in rows.items()} == {
        1: "match",
        2: "missing",
        3: "failed",
        4: "invalid",
        5: "match",
    }
    assert rows[1]["note"] == "judged by line 5, the last for its message"
    assert "note" not in rows[5]
    assert rows[2]["ErrorInfo"] == f"no message 9_9_{T0} from ann to bob in its second"
    assert rows[3]["ErrorInfo"].startswith("cannot be read back: MsgKey 'opaque'")
    assert summary.as_json()["outcomes"] == {
        "match": 2,
        "mismatch": 0,
        "missing": 1,
        "failed": 1,
        "invalid": 1,
    }
    message.body = text_body("first")
    again = await _verify(running, path, tmp_path / "again.jsonl")
    rows = read_results(tmp_path / "again.jsonl")
    assert (rows[1]["outcome"], rows[1]["ErrorInfo"]) == (
        "mismatch",
        "MsgBody differs from what line 5 sets",
    )
    assert again.statuses["mismatch"] == 2


async def test_verify_resume_checks_again_only_what_did_not_match(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """--resume skips the lines that matched and reads the others again: once fixed, they
    match, and the whole verify counts as passed."""
    running = await start_emulator(rate_limit=None)
    store = running.emulator.store
    edits = _redactions(seed_messages(store, 12))
    path = write_edits(tmp_path / "edits.jsonl", edits)
    with path.open("rb") as source:
        assert (await run_batch(source, run_config(running.url, tmp_path))).all_ok
    edit = edits[4]
    message = store.find(edit["From_Account"], edit["To_Account"], edit["MsgKey"])
    assert message is not None
    message.body = text_body("tampered")
    results = tmp_path / "verify.jsonl"
    first = await _verify(running, path, results)
    assert (first.statuses["mismatch"], exit_code_for(first)) == (1, 1)
    message.body = edit["MsgBody"]
    reads = running.emulator.traffic.of("openim/admin_getroammsg").arrivals
    resumed = await _verify(running, path, results, resume=True)
    assert (resumed.skipped, resumed.statuses["match"], exit_code_for(resumed)) == (11, 1, 0)
    assert running.emulator.traffic.of("openim/admin_getroammsg").arrivals == reads + 1
    assert "skipped (done before): match 11, invalid 0" in resumed.render()


def test_last_lines_finds_each_messages_last_valid_line() -> None:
    """The scan keeps the last valid line of every message with several, however far apart,
    and leaves the stream where it was."""
    store = Store()
    targets = seed_messages(store, 3000)
    edits = [{**t, "CloudCustomData": "a"} for t in targets]
    edits += [{**targets[7], "CloudCustomData": "b"}, {**targets[2999], "CloudCustomData": "c"}]
    data = b"".join(orjson.dumps(e) + b"\n" for e in edits) + b"not json\n"
    data += orjson.dumps({**targets[7], "CloudCustomData": "bad", "Nope": 1}) + b"\n"
    stream = io.BytesIO(data)
    stream.seek(5)
    index = LastLines.scan(stream, lambda: False)
    assert stream.tell() == 5

    def last(line: int) -> tuple[int, Any]:
        item = parse_line(line, orjson.dumps(edits[line - 1]))
        assert isinstance(item, EditRecord)
        found = index.last(item)
        return found.line, found.fields["CloudCustomData"]

    assert last(8) == (3001, "b")
    assert last(3000) == (3002, "c")
    assert last(3001) == (3001, "b")
    assert last(9) == (9, "a")


def test_verify_of_a_pipe_is_refused() -> None:
    """A stream that cannot be read twice is refused with a reason."""
    read, write = os.pipe()
    with (
        open(read, "rb") as stream,
        open(write, "wb"),
        pytest.raises(ConfigError, match="so it must be a file, not a pipe"),
    ):
        LastLines.scan(stream, lambda: False)


def test_verify_of_stdin_is_refused_saying_why(tmp_path: Path) -> None:
    """`verify -`: exit 2, "must be a file, not stdin" (not a missing file named "-"); no
    results written."""
    results = tmp_path / "r.jsonl"
    result = CliRunner().invoke(
        main,
        [
            *("verify", "-", "--results", str(results)),
            *("--base-url", "http://127.0.0.1:9", "--sdkappid", "1"),
        ],
        env={"TIM_SECRET_KEY": "x"},
        input=b"{}\n",
    )
    assert result.exit_code == 2
    assert result.stderr == ("Error: verify reads EDITS twice, so it must be a file, not stdin\n")
    assert not results.exists()


def test_verify_command_exit_status_and_summary(tmp_path: Path, emulator_process: Any) -> None:
    """`batchedit verify` against the emulator: 0 when every line matches; 1, with the
    mismatches named and counted in the summary, when some do not."""
    store = Store()
    targets = seed_messages(store, 20)
    seed = tmp_path / "seed.jsonl"
    store.save(seed)
    emulator: EmulatorProcess = emulator_process(state=seed)
    matching = write_edits(
        tmp_path / "same.jsonl",
        [{**t, "MsgBody": text_body(f"original {i}")} for i, t in enumerate(targets)],
    )
    env = cli_env(emulator.url)
    command = [sys.executable, "-m", "batchedit", "verify"]
    ok = subprocess.run(
        [*command, str(matching), "--results", str(tmp_path / "v1.jsonl"), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "outcomes: match 20, mismatch 0, missing 0, failed 0, invalid 0" in ok.stderr
    changed = [{**targets[0], "CloudCustomData": "x"}, *matching_rows(matching)[1:]]
    other = write_edits(tmp_path / "other.jsonl", changed)
    bad = subprocess.run(
        [*command, str(other), "--results", str(tmp_path / "v2.jsonl")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert bad.returncode == 1, bad.stderr
    assert "outcomes: match 19, mismatch 1, missing 0, failed 0, invalid 0" in bad.stderr
    key = targets[0]["MsgKey"]
    assert f"mismatch: line 1 ({key}): CloudCustomData differs from what the line sets" in (
        bad.stderr
    )
    assert read_results(tmp_path / "v2.jsonl")[1]["fields"] == ["CloudCustomData"]


def matching_rows(path: Path) -> list[dict[str, Any]]:
    """The edits of an edit file."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _arrivals(running: Running) -> int:
    return sum(api.arrivals for api in running.emulator.traffic.apis.values())


@pytest.mark.parametrize(
    ("first", "then", "whose"),
    [
        ("run", "verify", "a `run` or an `undo`, not of a `verify`: give verify"),
        ("verify", "run", "a `verify`, not of a `run`: give run"),
        ("undo", "run", "an `undo`, not of a `run`: give run"),
        ("verify", "undo", "a `verify`, not of an `undo`: give undo"),
    ],
)
async def test_resuming_another_commands_results_log_names_both_commands(
    start_emulator: EmulatorFactory, tmp_path: Path, first: str, then: str, whose: str
) -> None:
    """--resume on a results log another command wrote: ConfigError naming whose log it is
    and which command resumes it; the log is left as it was and nothing is sent. (An undo's
    log is told apart by its conflict rows.)"""
    running = await start_emulator(rate_limit=None)
    edits = _redactions(seed_messages(running.emulator.store, 3))
    path = write_edits(tmp_path / "edits.jsonl", edits)
    results = tmp_path / "results.jsonl"
    if first == "run":
        with path.open("rb") as source:
            assert (await run_batch(source, run_config(running.url, tmp_path))).all_ok
    elif first == "verify":
        assert (await _verify(running, path, results)).total == 3
    else:
        rows = [
            Outcome(1, "0" * 16, Status.OK, "a", "b", "1_1_1790000000", code=0),
            Outcome(2, "0" * 16, Status.CONFLICT, "a", "b", "1_2_1790000000", code=0),
        ]
        results.write_bytes(b"".join(orjson.dumps(row.as_json()) + b"\n" for row in rows))
    written, sent = results.read_bytes(), _arrivals(running)
    kind: LineKind
    given: IO[bytes]
    if then == "undo":
        (tmp_path / "backup.jsonl").touch()
        plan = read_backup(tmp_path / "backup.jsonl")
        kind, given = Edits(undo=plan), plan.source
    else:
        kind, given = ReadBack() if then == "verify" else Edits(), path.open("rb")
    config = run_config(running.url, tmp_path, results=results, resume=True)
    with given, pytest.raises(ConfigError) as refused:
        await run_batch(given, config, kind=kind)
    assert str(refused.value) == f"{results} is the results log of {whose} its own --results"
    assert (results.read_bytes(), _arrivals(running)) == (written, sent)
