"""Answers that cannot be turned against the run: echoed secrets, huge or malformed answers,
and a disk that fills up under the logs."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web
from aiohttp.typedefs import Middleware

from batchedit import ImClient, Secret, SigSource
from batchedit.im.client import redact
from batchedit.plan import plan_edits
from batchedit.retry import RetryPolicy
from batchedit.rules import Rules, compile_replacement
from batchedit.runner import run_batch
from tests.conftest import EmulatorFactory, ServerFactory, cli_env
from tests.helpers import ADMIN, SDKAPPID, SECRET, read_results, seed_messages, write_edits
from tests.wrapped import Handler, run_config, serve_behind


def _echo(code: int, sigs: set[str]) -> Middleware:
    """A proxy that answers every edit with ``code`` and an ErrorInfo echoing the request URL,
    the bare UserSig and a terminal escape; it notes each sig in ``sigs``."""

    async def echo(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.endswith("modify_c2c_msg"):
            return await handler(request)
        url, sig = str(request.url), request.query["usersig"]
        sigs.add(sig)
        standard = sig.translate(str.maketrans("*-_", "+/="))
        info = f"proxy refused {url} ({quote(url, safe='')}) sig {sig} {standard}\x1b[2J\u202e"
        return web.json_response({"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": info})

    return echo


@pytest.mark.parametrize("code", [90001, 70009])
async def test_echoed_usersig_never_reaches_results_stderr_or_summary(
    code: int, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """An ErrorInfo that repeats the URL and the live UserSig, as sent and in standard base64
    (a permanent code: results rows; a fatal one: the stop reason) is redacted and its control
    characters escaped everywhere."""
    sigs: set[str] = set()
    emulator, url = await serve_behind(aiohttp_server, _echo(code, sigs))
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
        for form in (secret, secret.translate(str.maketrans("*-_", "+/="))):
            assert form.encode() not in everything
            assert quote(form, safe="").encode() not in everything
    assert b"usersig=" not in everything.replace(b"usersig=<redacted>", b"")
    assert b"usersig%3D" not in everything.replace(b"usersig%3D<redacted>", b"")
    assert b"\x1b" not in err
    assert "\u202e".encode() not in err


_STANDARD = str.maketrans("*-_", "+/=")
_ODD_FORMS: tuple[Callable[[str], str], ...] = (
    lambda sig: quote(sig, safe="").lower(),  # .NET's HttpUtility.UrlEncode: %2a
    lambda sig: quote(quote(sig, safe=""), safe=""),  # quoted twice: %252A
    lambda sig: "\n".join(sig[i : i + 76] for i in range(0, len(sig), 76)),  # MIME lines
    lambda sig: "\r\n".join(sig.translate(_STANDARD)[i : i + 64] for i in range(0, len(sig), 64)),
    lambda sig: quote(sig.translate(_STANDARD), safe="").lower(),  # %2b %2f %3d
    lambda sig: sig.translate(_STANDARD).rstrip("="),  # standard base64 without its padding
    lambda sig: sig.translate(str.maketrans("*-_", "-_=")),  # RFC 4648 URL-safe base64
)


def _echo_odd(sigs: set[str]) -> Middleware:
    """A proxy that refuses every edit for good (90001) with an ErrorInfo echoing the UserSig in
    each of :data:`_ODD_FORMS`; it notes each sig in ``sigs``."""

    async def echo(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.endswith("modify_c2c_msg"):
            return await handler(request)
        sig = request.query["usersig"]
        sigs.add(sig)
        info = " ".join(f"[{form(sig)}]" for form in _ODD_FORMS)
        return web.json_response({"ErrorCode": 90001, "ErrorInfo": f"proxy refused {info}"})

    return echo


async def test_a_usersig_echoed_in_odd_forms_never_reaches_results_or_stderr(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """A UserSig echoed percent-encoded in lower case or twice, wrapped over lines, without its
    padding or in another base64 alphabet is redacted too: no run of a dozen of its letters and
    digits reaches the results or stderr."""
    sigs: set[str] = set()
    emulator, url = await serve_behind(aiohttp_server, _echo_odd(sigs))
    targets = seed_messages(emulator.store, 3)
    path = write_edits(tmp_path / "e.jsonl", [{**t, "CloudCustomData": "x"} for t in targets])
    results = tmp_path / "r.jsonl"
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "batchedit", "run", str(path), "--results", str(results)],
        env=cli_env(url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1, err.decode()
    everything = out + err + results.read_bytes()
    assert everything.count(b"proxy refused") == 3
    assert sigs
    for sig in sigs:
        for run in re.findall(r"[A-Za-z0-9]{12,}", sig):
            assert run.encode() not in everything


def _seq(msg_key: str) -> int:
    return int(msg_key.split("_", maxsplit=1)[0])


async def _huge_answers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """3 MiB answers to edits, by MsgSeq modulo 3: announced in Content-Length, chunked, or
    gzipped to a few KB on the wire."""
    if not request.path.endswith("modify_c2c_msg"):
        return await handler(request)
    filler = b"x" * (3 * 1024 * 1024)
    how = _seq(orjson.loads(await request.read())["MsgKey"]) % 3
    if how != 1:
        response = web.Response(body=b'{"ErrorCode":0,"ErrorInfo":"' + filler + b'"}')
        if how == 2:
            response.enable_compression(web.ContentCoding.gzip)
        return response
    chunked = web.StreamResponse()
    chunked.enable_chunked_encoding()
    await chunked.prepare(request)
    for start in range(0, len(filler), 256 * 1024):
        await chunked.write(filler[start : start + 256 * 1024])
    return chunked


async def test_answers_over_the_bound_are_errors_not_results(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """A 3 MiB answer, announced, chunked or compressed, is not read past 2 MiB: the edit
    fails with a short reason and the results row stays small."""
    emulator, url = await serve_behind(aiohttp_server, _huge_answers)
    targets = seed_messages(emulator.store, 6)
    path = write_edits(tmp_path / "e.jsonl", [{**t, "CloudCustomData": "x"} for t in targets])
    with path.open("rb") as source:
        summary = await run_batch(source, run_config(url, tmp_path, policy=RetryPolicy(1, 0, 0)))
    assert summary.statuses["failed"] == 6
    raw = (tmp_path / "results.jsonl").read_bytes()
    assert max(len(row) for row in raw.splitlines()) < 400
    infos = {row["ErrorInfo"] for row in read_results(tmp_path / "results.jsonl").values()}
    assert infos == {"answer larger than 2 MiB, not read"}
    assert {_seq(t["MsgKey"]) % 3 for t in targets} == {0, 1, 2}


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

    emulator, url = await serve_behind(aiohttp_server, broken)
    targets = seed_messages(emulator.store, 3)
    path = write_edits(tmp_path / "e.jsonl", [{**t, "CloudCustomData": "x"} for t in targets])
    with path.open("rb") as source:
        summary = await run_batch(source, run_config(url, tmp_path, backup=tmp_path / "b.jsonl"))
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
        summary = await run_batch(
            source, run_config(running.url, tmp_path, backup=Path("/dev/full"))
        )
    assert summary.stopped == "fatal"
    assert summary.reason.startswith(
        "cannot write the backup /dev/full (No space left on device): no edit goes out"
    )
    assert running.emulator.traffic.of("openim/modify_c2c_msg").arrivals == 0
    assert (tmp_path / "results.jsonl").read_bytes() == b""


async def test_a_full_disk_under_the_results_log_stops_the_run(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """When an outcome cannot be logged (ENOSPC), the run stops as fatal at once instead of
    sending edits whose outcomes would be lost."""
    running = await start_emulator()
    targets = seed_messages(running.emulator.store, 10)
    path = write_edits(tmp_path / "e.jsonl", [{**t, "CloudCustomData": "x"} for t in targets])
    config = run_config(running.url, tmp_path, results=Path("/dev/full"), concurrency=1)
    with path.open("rb") as source:
        summary = await run_batch(source, config)
    assert (summary.stopped, summary.reason) == (
        "fatal",
        "cannot write the results log /dev/full (No space left on device); free space or raise "
        "the file size limit, then run again with --resume",
    )
    assert running.emulator.traffic.of("openim/modify_c2c_msg").arrivals == 1


def test_redact_finds_a_usersig_echoed_in_standard_base64() -> None:
    """A UserSig (URL-safe base64: * - _) echoed as standard base64 (+ / =), raw or
    URL-quoted, is redacted as the sig itself is."""
    sig = "eJw*Xy-Ab_c_"
    standard = "eJw+Xy/Ab=c="
    text = f"sig {sig}, {standard}, {quote(standard, safe='')}, {quote(sig, safe='')}"
    assert redact(text, [sig]) == "sig <redacted>, <redacted>, <redacted>, <redacted>"
