"""Input and output that cannot be turned against the run: ambiguous lines, echoed secrets,
huge or malformed answers, and damaged files of every kind we read."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Middleware
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from batchedit import ImClient, Secret, SigSource
from batchedit.backup import undo_edits
from batchedit.cli import main
from batchedit.emulator import Emulator, EmulatorConfig
from batchedit.im.errors import ConfigError
from batchedit.plan import BadPair, Rules, compile_replacement, plan_edits, read_pairs
from batchedit.results import ResumeIndex
from batchedit.retry import RetryPolicy
from batchedit.runner import RunConfig, run_batch
from tests.conftest import EmulatorFactory, EmulatorProcess, ServerFactory, cli_env
from tests.helpers import ADMIN, SDKAPPID, SECRET, read_results, seed_messages, write_edits

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _serve(aiohttp_server: ServerFactory, middleware: Middleware) -> tuple[Emulator, str]:
    """An emulator with ``middleware`` in front of it (a proxy, a broken server)."""
    emulator = Emulator(EmulatorConfig(sdkappid=SDKAPPID, secret_key=SECRET, rate_limit=None))
    app = emulator.app()
    app.middlewares.append(web.middleware(middleware))
    server: TestServer = await aiohttp_server(app, host="127.0.0.1")
    return emulator, str(server.make_url("")).rstrip("/")


def _config(url: str, tmp_path: Path, **options: Any) -> RunConfig:
    settings: dict[str, Any] = {
        "results": tmp_path / "results.jsonl",
        "endpoint": url,
        "sig": SigSource(SDKAPPID, ADMIN, secret_key=Secret(SECRET)),
        "rate": None,
        "policy": RetryPolicy.zero_wait(),
        **options,
    }
    return RunConfig(**settings)


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
        await run_batch(source, _config(running.url, tmp_path))
    final = read_results(tmp_path / "results.jsonl")
    reasons = {line: row["ErrorInfo"] for line, row in final.items() if row["outcome"] != "ok"}
    twice = "given twice in one object; which one is meant is unclear, nothing of this record is"
    assert reasons == {
        2: f"line 2: MsgKey: {twice} sent",
        3: f"line 3: MsgKey: {twice} sent",
        4: f"line 4: CloudCustomData: {twice} sent",
        5: "line 5: the number 18446744073709551616 does not fit in 64 bits",
        6: "line 6: the number -9223372036854775809 does not fit in 64 bits",
        7: "line 7: nested too deeply",
    }
    assert final[2]["MsgKey"] is None
    assert running.emulator.traffic.of("openim/modify_c2c_msg").arrivals == 2


def _echo(code: int, sigs: set[str]) -> Middleware:
    """A proxy that answers every edit with ``code`` and an ErrorInfo echoing the request URL,
    the bare UserSig and a terminal escape; it notes each sig in ``sigs``."""

    async def echo(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.endswith("modify_c2c_msg"):
            return await handler(request)
        url, sig = str(request.url), request.query["usersig"]
        sigs.add(sig)
        info = f"proxy refused {url} ({quote(url, safe='')}) sig {sig}\x1b[2J\u202e"
        return web.json_response({"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": info})

    return echo


@pytest.mark.parametrize("code", [90001, 70009])
async def test_echoed_usersig_never_reaches_results_stderr_or_summary(
    code: int, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """An ErrorInfo that repeats the URL and the live UserSig (a permanent code: results rows;
    a fatal one: the stop reason) is redacted and its control characters escaped everywhere."""
    sigs: set[str] = set()
    emulator, url = await _serve(aiohttp_server, _echo(code, sigs))
    targets = seed_messages(emulator.store, 5)
    path = write_edits(tmp_path / "e.jsonl", [{**t, "CloudCustomData": "x"} for t in targets])
    results, summary = tmp_path / "r.jsonl", tmp_path / "s.json"
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "batchedit", "run", str(path), "--results", str(results)],
        *["--summary-json", str(summary), "--max-attempts", "1"],
        env=cli_env(url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == (1 if code == 90001 else 3), err.decode()
    everything = out + err + results.read_bytes() + summary.read_bytes()
    assert b"proxy refused" in everything
    assert b"<redacted>" in everything
    assert sigs
    for secret in (SECRET, *sigs):
        assert secret.encode() not in everything
        assert quote(secret, safe="").encode() not in everything
    assert b"usersig=" not in everything.replace(b"usersig=<redacted>", b"")
    assert b"usersig%3D" not in everything.replace(b"usersig%3D<redacted>", b"")
    assert b"\x1b" not in err
    assert "\u202e".encode() not in err


def _seq(msg_key: str) -> int:
    return int(msg_key.split("_", maxsplit=1)[0])


async def _huge_answers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """3 MiB answers to edits: with a Content-Length for even MsgSeqs, chunked for odd ones."""
    if not request.path.endswith("modify_c2c_msg"):
        return await handler(request)
    filler = b"x" * (3 * 1024 * 1024)
    if _seq(orjson.loads(await request.read())["MsgKey"]) % 2 == 0:
        return web.Response(body=b'{"ErrorCode":0,"ErrorInfo":"' + filler + b'"}')
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for start in range(0, len(filler), 256 * 1024):
        await response.write(filler[start : start + 256 * 1024])
    return response


async def test_answers_over_the_bound_are_errors_not_results(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """A 3 MiB answer, announced or chunked, is not read past 2 MiB: the edit fails with a
    short reason and the results row stays small."""
    emulator, url = await _serve(aiohttp_server, _huge_answers)
    targets = seed_messages(emulator.store, 4)
    path = write_edits(tmp_path / "e.jsonl", [{**t, "CloudCustomData": "x"} for t in targets])
    with path.open("rb") as source:
        summary = await run_batch(source, _config(url, tmp_path, policy=RetryPolicy(1, 0, 0)))
    assert summary.statuses["failed"] == 4
    raw = (tmp_path / "results.jsonl").read_bytes()
    assert max(len(row) for row in raw.splitlines()) < 400
    infos = {row["ErrorInfo"] for row in read_results(tmp_path / "results.jsonl").values()}
    assert infos == {"answer larger than 2 MiB, not read"}
    assert {_seq(t["MsgKey"]) % 2 for t in targets} == {0, 1}


MALFORMED_PAGES: dict[str, tuple[dict[str, Any], str]] = {
    "not an array": ({"MsgList": {"a": 1}}, "MsgList is not an array"),
    "item": ({"MsgList": [{"From_Account": 5}]}, "a MsgList item's From_Account is not a string"),
    "body": (
        {"MsgList": [{"From_Account": "a", "To_Account": "b", "MsgKey": "k", "MsgBody": "x"}]},
        "a MsgList item's MsgBody is not an array",
    ),
    "number": (
        {
            "MsgList": [
                {"From_Account": "a", "To_Account": "b", "MsgKey": "k", "MsgSeq": "9" * 5000}
            ]
        },
        "a MsgList item's MsgSeq is not a whole number",
    ),
    "endless": (
        {
            "Complete": 0,
            "LastMsgTime": 1_700_000_000,
            "LastMsgKey": "1_1_1700000000",
            "MsgList": [
                {
                    "From_Account": "x",
                    "To_Account": "y",
                    "MsgKey": "1_1_1700000000",
                    "MsgSeq": 1,
                    "MsgRandom": 1,
                    "MsgTimeStamp": 1_700_000_000,
                }
            ],
        },
        "the next page would not move back in time",
    ),
}


@pytest.mark.parametrize("kind", MALFORMED_PAGES)
async def test_malformed_history_pages_fail_the_line_not_the_run(
    kind: str, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """A history page the client cannot read (or one that would page forever) fails the
    before-image, and so the edit, with a reason; a plan notes the conversation as not read."""
    page, reason = MALFORMED_PAGES[kind]

    async def broken(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.endswith("admin_getroammsg"):
            return web.json_response({"ActionStatus": "OK", "ErrorCode": 0, **page})
        return await handler(request)

    emulator, url = await _serve(aiohttp_server, broken)
    targets = seed_messages(emulator.store, 3)
    path = write_edits(tmp_path / "e.jsonl", [{**t, "CloudCustomData": "x"} for t in targets])
    with path.open("rb") as source:
        summary = await run_batch(source, _config(url, tmp_path, backup=tmp_path / "b.jsonl"))
    assert summary.statuses["failed"] == 3
    infos = {row["ErrorInfo"] for row in read_results(tmp_path / "results.jsonl").values()}
    assert infos == {
        f"before-image not fetched (openim/admin_getroammsg: no answer: malformed answer: "
        f"{reason}); edit not sent"
    }
    assert emulator.traffic.of("openim/modify_c2c_msg").arrivals == 0
    sig = SigSource(SDKAPPID, ADMIN, secret_key=Secret(SECRET))
    async with ImClient(url, sig) as client:
        stats = await plan_edits(
            [("u00", "u01")],
            0,
            2**31,
            Rules((compile_replacement("a", "b"),)),
            client.call,
            lambda *_: True,
        )
    assert stats.failed_conversations == [
        f"u00 <-> u01: openim/admin_getroammsg: no answer: malformed answer: {reason}"
    ]


async def test_a_full_disk_under_the_backup_stops_the_run_before_any_edit(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """When a before-image cannot be written (ENOSPC), its edit is not sent and the run stops
    as fatal, leaving every line for --resume."""
    running = await start_emulator()
    targets = seed_messages(running.emulator.store, 10)
    path = write_edits(tmp_path / "e.jsonl", [{**t, "CloudCustomData": "x"} for t in targets])
    with path.open("rb") as source:
        summary = await run_batch(source, _config(running.url, tmp_path, backup=Path("/dev/full")))
    assert summary.stopped == "fatal"
    assert summary.reason.startswith(
        "cannot write the backup /dev/full (No space left on device): no edit goes out"
    )
    assert running.emulator.traffic.of("openim/modify_c2c_msg").arrivals == 0
    assert (tmp_path / "results.jsonl").read_bytes() == b""


IMAGE = {"line": 1, "From_Account": "a", "To_Account": "b", "MsgKey": "1_2_1700000000"}
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
        undo_edits(backup)


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
        for read in (ResumeIndex.load, lambda p: undo_edits(p).close()):
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


async def test_a_full_disk_under_the_results_log_stops_the_run(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """When an outcome cannot be logged (ENOSPC), the run stops as fatal at once instead of
    sending edits whose outcomes would be lost."""
    running = await start_emulator()
    targets = seed_messages(running.emulator.store, 10)
    path = write_edits(tmp_path / "e.jsonl", [{**t, "CloudCustomData": "x"} for t in targets])
    config = _config(running.url, tmp_path, results=Path("/dev/full"), concurrency=1)
    with path.open("rb") as source:
        summary = await run_batch(source, config)
    assert (summary.stopped, summary.reason) == (
        "fatal",
        "cannot write the results log /dev/full (No space left on device); make room, then run "
        "again with --resume",
    )
    assert running.emulator.traffic.of("openim/modify_c2c_msg").arrivals == 1
