"""Files that cannot be turned against the run: ambiguous edit lines, and damaged results
logs, backups, pairs files, replacements and key files, none of which gives a traceback."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from batchedit.backup import read_backup
from batchedit.cli import main
from batchedit.im.errors import ConfigError
from batchedit.pairs import BadPair, read_pairs
from batchedit.results import ResumeIndex
from batchedit.rules import compile_replacement
from batchedit.runner import run_batch
from tests.conftest import EmulatorFactory, EmulatorProcess, cli_env
from tests.helpers import read_results, seed_messages, write_edits
from tests.wrapped import run_config


async def test_ambiguous_lines_are_invalid_and_never_sent(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """A key given twice (even spelled with escapes), an integer beyond 64 bits and nesting
    orjson cannot re-encode make a line invalid; plain lines next to them are sent."""
    running = await start_emulator()
    target = seed_messages(running.emulator.store, 1)[0]
    head = orjson.dumps(target)[:-1]
    face = b'"MsgBody":[{"MsgType":"TIMFaceElem","MsgContent":{"Data":"x","Index":%s}}]}'
    lines = [
        head + b',"CloudCustomData":"ok"}',
        head + b',"CloudCustomData":"a","MsgKey":"other"}',
        head + b',"CloudCustomData":"a:b","Msg\\u004bey":"other"}',
        head + b', "CloudCustomData": "\\u003a", "CloudCustomData": "\\u003a"}',
        head + b"," + face % b"18446744073709551616",
        head + b", " + face % b"-9223372036854775809",
        head + b',"CloudCustomData":"x","Deep":' + b"[" * 300 + b"]" * 300 + b"}",
        head + b', "CloudCustomData": "e+ and \\u0041 only look suspicious"}',
    ]
    path = tmp_path / "edits.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with path.open("rb") as source:
        await run_batch(source, run_config(running.url, tmp_path))
    final = read_results(tmp_path / "results.jsonl")
    reasons = {line: row["ErrorInfo"] for line, row in final.items() if row["outcome"] != "ok"}
    twice = "given twice in one object; which one is meant is unclear, nothing of this record is"
    assert reasons == {
        2: f"line 2: MsgKey: {twice} sent",
        3: f"line 3: MsgKey: {twice} sent",
        4: f"line 4: CloudCustomData: {twice} sent",
        5: "line 5: the number 18446744073709551616 does not fit in 64 bits",
        6: "line 6: the number -9223372036854775809 does not fit in 64 bits",
        7: "line 7: cannot be encoded as a request body (Recursion limit reached); nothing is sent",
    }
    assert final[2]["MsgKey"] is None
    assert running.emulator.traffic.of("openim/modify_c2c_msg").arrivals == 2


IMAGE = {
    "line": 1,
    "From_Account": "a",
    "To_Account": "b",
    "MsgKey": "1_2_1700000000",
    "MsgTimeStamp": 1700000000,
}
GOOD_ROW = orjson.dumps({**IMAGE, "MsgBody": [], "CloudCustomData": None}) + b"\n"


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (orjson.dumps({**IMAGE, "CloudCustomData": None}), "MsgBody: must be an array"),
        (orjson.dumps({**IMAGE, "MsgBody": []}), "CloudCustomData: must be a string or null"),
        (orjson.dumps({**IMAGE, "MsgKey": 5, "MsgBody": []}), "MsgKey: must be a non-empty"),
        (b'{"line": 1, "From_Acc', "not JSON"),
        (b"\x00\xff" * 40, "not JSON"),
        (b"[" * 2000 + b"]" * 2000, "not JSON"),
        (b"12345678901234567890123456789", "not a JSON object"),
        (
            orjson.dumps({**IMAGE, "MsgKey": "9", "CloudCustomData": None, "MsgBody": [1]}).replace(
                b"[1]", b"[" * 300 + b"1" + b"]" * 300
            ),
            "MsgBody cannot be sent back (Recursion limit reached)",
        ),
    ],
)
def test_a_damaged_backup_row_makes_undo_exit_2_naming_it(
    row: bytes, problem: str, tmp_path: Path
) -> None:
    """A backup row that is not the torn last one and not a before-image: undo exits 2 naming
    the file, the line and what is wrong, before sending anything."""
    backup = tmp_path / "backup.jsonl"
    backup.write_bytes(GOOD_ROW + row + b"\n" + GOOD_ROW)
    result = CliRunner().invoke(
        main,
        [
            *("undo", str(backup), "--results", str(tmp_path / "r.jsonl")),
            *("--base-url", "http://127.0.0.1:9", "--sdkappid", "1"),
        ],
        env={"TIM_SECRET_KEY": "x"},
    )
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {backup}: line 2: ")
    assert problem in result.output
    assert not (tmp_path / "r.jsonl").exists()


def test_an_endless_backup_row_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    """A row over 8 MiB (no newline in sight) is damage, not a torn row to skip."""
    backup = tmp_path / "backup.jsonl"
    backup.write_bytes(GOOD_ROW + b"x" * (9 * 1024 * 1024))
    with pytest.raises(ConfigError, match=r"line 2: row longer than 8388608 bytes"):
        read_backup(backup)


_LINES = st.lists(
    st.one_of(
        st.binary(max_size=60),
        st.sampled_from(
            [GOOD_ROW.rstrip(), b'{"line":1,"outcome":"ok","hash":"00000000000000ff"}']
        ),
        st.builds(
            orjson.dumps,
            st.dictionaries(
                st.sampled_from([*IMAGE, "MsgBody", "CloudCustomData", "outcome", "hash"]),
                st.one_of(
                    st.none(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=5), st.just([])
                ),
            ),
        ),
    ),
    max_size=8,
)


@given(_LINES, st.booleans())
def test_readers_of_our_logs_raise_only_config_errors(lines: list[bytes], torn: bool) -> None:
    """Whatever bytes a results log or a backup holds, reading it gives a result or a
    ConfigError naming the file, never another exception."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "log.jsonl"
        path.write_bytes(b"\n".join(lines) + (b"" if torn else b"\n"))
        errors = []
        for read in (ResumeIndex.load, lambda p: read_backup(p).close()):
            try:
                read(path)
            except ConfigError as exc:
                errors.append(str(exc))
        assert all(error.startswith(f"{path}: line ") for error in errors)


@given(st.lists(st.binary(max_size=80), max_size=10), st.booleans())
def test_pairs_files_of_any_bytes_give_pairs_or_named_bad_lines(
    lines: list[bytes], as_csv: bool
) -> None:
    """A pairs file of any bytes yields conversations and BadPairs naming their line only."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / ("pairs.csv" if as_csv else "pairs.jsonl")
        path.write_bytes(b"\n".join(lines))
        for item in read_pairs(path):
            if isinstance(item, BadPair):
                assert item.reason.startswith(f"pairs line {item.line}: ")
                assert len(item.reason) < 200
            else:
                assert all(isinstance(user, str) and user for user in item)


PLAN = ("plan", "--since", "2026-01-01", "--until", "2026-01-02")


def test_plan_refuses_a_replacement_naming_a_missing_group(tmp_path: Path) -> None:
    """`plan --replace a '\\9'` exits 2 naming the replacement, before reading anything."""
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a,b\n")
    result = CliRunner().invoke(
        main,
        [*PLAN, str(pairs), "--replace", "a", "\\9", "--preview", "1"],
    )
    assert (result.exit_code, result.output) == (
        2,
        "Error: bad --replace replacement '\\\\9': invalid group reference 9 at position 1\n",
    )
    with pytest.raises(ConfigError, match="unknown group name 'x'"):
        compile_replacement("(?P<y>a)", "\\g<x>")


def test_plan_skips_damaged_pairs_lines_and_names_them(
    tmp_path: Path, emulator_process: Callable[..., EmulatorProcess]
) -> None:
    """Binary garbage, an over-long line and lines that are not pairs are skipped with their
    line number (exit 1); the good conversations are planned."""
    emulator = emulator_process()
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(
        b'\xef\xbb\xbf["u1", "u2"]\r\n'
        + b"\xff\xfe\x00garbage\n"
        + b'["'
        + b"x" * 70_000
        + b'"]\n'
        + b"[" * 3000
        + b"\n"
        + b'{"From_Account": "u3", "To_Account": "u4"}\n'
        + b"[1, 2]\n"
    )
    result = CliRunner().invoke(
        main,
        [*PLAN, str(pairs), "--replace", "a", "b", "--output", str(tmp_path / "plan.jsonl")],
        env=cli_env(emulator.url),
    )
    assert result.exit_code == 1, result.output
    assert "skipped: pairs line 2: not valid UTF-8 (byte 1)\n" in result.output
    assert "skipped: pairs line 3: longer than 65536 bytes, not read\n" in result.output
    assert f"skipped: pairs line 4: expected two UserIDs, got '{'[' * 79}..." in result.output
    assert "skipped: pairs line 6: expected two UserIDs, got [1, 2]\n" in result.output
    assert "plan: 2 conversations read" in result.output


def test_a_binary_secret_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    """A secret key file that is not text exits 2 naming it, without a traceback."""
    key = tmp_path / "secret.key"
    key.write_bytes(b"\xff\xfe\x00")
    edits = write_edits(tmp_path / "e.jsonl", [])
    result = CliRunner().invoke(
        main,
        [
            *("run", str(edits), "--results", str(tmp_path / "r.jsonl")),
            *("--base-url", "http://127.0.0.1:9", "--sdkappid", "1", "--secret-key-file", str(key)),
        ],
    )
    assert (result.exit_code, result.output) == (
        2,
        f"Error: the secret key file {key} is not UTF-8 text\n",
    )
