"""Operator mistakes: files that coincide, reruns without --resume, outputs checked up front,
the start line, and summaries that tell the truth about skipped and unsent lines."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from click.testing import CliRunner

from batchedit import Secret, SigSource, resolve_endpoint, run_batch
from batchedit.cli import main
from batchedit.emulator import Emulator, EmulatorConfig, Store
from batchedit.im.errors import ConfigError
from batchedit.preflight import check_plan_files, check_writable, start_lines
from batchedit.retry import RetryPolicy
from batchedit.runner import RunConfig
from tests.conftest import EmulatorProcess, ServerFactory, cli_env, secret_file
from tests.helpers import ADMIN, SDKAPPID, SECRET, read_results, seed_messages, write_edits

StartEmulator = Callable[..., EmulatorProcess]
MODIFY = "openim/modify_c2c_msg"


def _cli(
    url: str, *args: str | Path, stdin: Any = None, input: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``batchedit ARGS`` against the emulator at ``url``; ``env`` adds to its environment."""
    return subprocess.run(
        [sys.executable, "-m", "batchedit", *map(str, args)],
        env={**cli_env(url), **env},
        stdin=stdin,
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _edits_sent(emulator: EmulatorProcess) -> int:
    stats = emulator.get("/__emulator/stats")
    return int(stats.get(MODIFY, {}).get("arrivals", 0))


def _start(tmp_path: Path, start: StartEmulator, count: int) -> tuple[EmulatorProcess, Path]:
    """An emulator holding ``count`` messages, and an edit file touching each once."""
    store = Store()
    targets = seed_messages(store, count)
    state = tmp_path / "state.jsonl"
    store.save(state)
    edits = write_edits(tmp_path / "edits.jsonl", [{**t, "CloudCustomData": "x"} for t in targets])
    return start(state=state), edits


def _backup_rows(path: Path, targets: list[dict[str, str]]) -> Path:
    rows: list[dict[str, Any]] = [
        {**t, "line": i, "MsgTimeStamp": 0, "MsgBody": [], "CloudCustomData": None}
        for i, t in enumerate(targets, 1)
    ]
    return write_edits(path, rows)


def _case(args: str, message: str, stdin: str | None = None) -> Any:
    return pytest.param(args.split(), message, stdin, id=args + (f" < {stdin}" if stdin else ""))


@pytest.mark.parametrize(
    ("args", "message", "stdin"),
    [
        _case("run E --results E", "EDITS and RESULTS are the same file (E)"),
        _case("run E --results R --backup R", "RESULTS and BACKUP are the same file (R)"),
        _case("run E --results L", "EDITS and RESULTS are the same file (L)"),
        _case("run - --results E", "EDITS and RESULTS are the same file (E)", stdin="E"),
        _case(
            "run E --results R --summary-json R", "RESULTS and --summary-json are the same file (R)"
        ),
        _case("undo B --results B", "BACKUP and RESULTS are the same file (B)"),
    ],
)
def test_two_roles_one_file_is_refused_before_anything_is_sent(
    args: list[str],
    message: str,
    stdin: str | None,
    tmp_path: Path,
    emulator_process: StartEmulator,
) -> None:
    """Any two of a run's files that are one file (same inode: L is a hard link to E) exit 2;
    nothing is sent or written."""
    emulator, edits = _start(tmp_path, emulator_process, 5)
    results = tmp_path / "r.jsonl"
    link = tmp_path / "link.jsonl"
    os.link(edits, link)
    backup = _backup_rows(tmp_path / "b.jsonl", read_edits(edits))
    names = {"E": edits, "R": results, "L": link, "B": backup}
    before = {path: path.read_bytes() for path in (edits, backup)}
    with names[stdin].open("rb") if stdin else open(os.devnull, "rb") as source:
        done = _cli(emulator.url, *(names.get(arg, arg) for arg in args), stdin=source)
    for name, path in names.items():
        message = message.replace(f"({name})", f"({path})")
    assert (done.returncode, done.stderr) == (2, f"Error: {message}; give each a file of its own\n")
    assert {path: path.read_bytes() for path in before} == before
    assert not results.exists()
    assert _edits_sent(emulator) == 0


def read_edits(path: Path) -> list[dict[str, str]]:
    """The message targets of an edit file."""
    keys = ("From_Account", "To_Account", "MsgKey")
    return [{k: orjson.loads(raw)[k] for k in keys} for raw in path.read_bytes().splitlines()]


def test_rerun_without_resume_is_refused(tmp_path: Path, emulator_process: StartEmulator) -> None:
    """The same command twice (up-arrow, Enter): the second exits 2 naming --resume and a new
    results file, sends nothing and leaves RESULTS as it was; --resume then skips every line."""
    emulator, edits = _start(tmp_path, emulator_process, 20)
    results = tmp_path / "r.jsonl"
    first = _cli(emulator.url, "run", edits, "--results", results)
    assert first.returncode == 0, first.stderr
    logged = results.read_bytes()
    again = _cli(emulator.url, "run", edits, "--results", results)
    assert (again.returncode, again.stderr) == (
        2,
        f"Error: RESULTS {results} already holds the outcomes of an earlier run; add --resume to "
        "continue that run, or give a new results file\n",
    )
    assert results.read_bytes() == logged
    assert _edits_sent(emulator) == 20
    resumed = _cli(emulator.url, "run", edits, "--results", results, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "skipped (done before): ok 20, invalid 0" in resumed.stderr
    assert _edits_sent(emulator) == 20


def test_one_backup_per_run(tmp_path: Path, emulator_process: StartEmulator) -> None:
    """A BACKUP that is not empty is refused without --resume, even with a new RESULTS."""
    emulator, edits = _start(tmp_path, emulator_process, 5)
    backup = tmp_path / "b.jsonl"
    first = _cli(emulator.url, "run", edits, "--results", tmp_path / "r1.jsonl", "--backup", backup)
    assert first.returncode == 0, first.stderr
    saved = backup.read_bytes()
    again = _cli(emulator.url, "run", edits, "--results", tmp_path / "r2.jsonl", "--backup", backup)
    assert (again.returncode, again.stderr) == (
        2,
        f"Error: BACKUP {backup} is not empty: one backup per run; give a new backup file, or "
        "add --resume to continue the run that wrote it\n",
    )
    assert backup.read_bytes() == saved
    assert _edits_sent(emulator) == 5


def test_undo_rerun_without_resume_is_refused(
    tmp_path: Path, emulator_process: StartEmulator
) -> None:
    """undo writes a results log, so the same rule holds: a second undo needs --resume."""
    emulator, edits = _start(tmp_path, emulator_process, 5)
    backup = tmp_path / "b.jsonl"
    run = _cli(emulator.url, "run", edits, "--results", tmp_path / "r.jsonl", "--backup", backup)
    assert run.returncode == 0, run.stderr
    undo = tmp_path / "undo.jsonl"
    first = _cli(emulator.url, "undo", backup, "--results", undo)
    assert first.returncode == 0, first.stderr
    again = _cli(emulator.url, "undo", backup, "--results", undo)
    assert again.returncode == 2
    assert again.stderr.startswith(f"Error: RESULTS {undo} already holds the outcomes")
    assert _edits_sent(emulator) == 10


def test_resume_counts_earlier_invalid_lines_against_the_exit_status(
    tmp_path: Path, emulator_process: StartEmulator
) -> None:
    """Lines skipped by --resume count by their earlier outcome: an earlier invalid line keeps
    the exit status at 1, though nothing is sent again."""
    emulator, edits = _start(tmp_path, emulator_process, 3)
    edits.write_bytes(edits.read_bytes() + b'{"From_Account": "u01"}\n')
    results = tmp_path / "r.jsonl"
    first = _cli(emulator.url, "run", edits, "--results", results)
    assert first.returncode == 1
    resumed = _cli(emulator.url, "run", edits, "--results", results, "--resume")
    assert resumed.returncode == 1
    assert (
        "  outcomes: ok 0, failed 0, invalid 0; skipped (done before): ok 3, invalid 1\n"
        in resumed.stderr
    )
    assert _edits_sent(emulator) == 3


@pytest.mark.parametrize("piped", [False, True])
def test_a_stopped_run_says_how_many_lines_were_never_sent(
    piped: bool, tmp_path: Path, emulator_process: StartEmulator
) -> None:
    """A fatal stop reports the lines left without an outcome and that --resume continues;
    from a pipe, which cannot be read to its end, the lines after the last one read too."""
    emulator, edits = _start(tmp_path, emulator_process, 600)
    results = tmp_path / "r.jsonl"
    done = _cli(
        emulator.url,
        "run",
        "-" if piped else edits,
        "--results",
        results,
        "--concurrency",
        "1",
        input=edits.read_text() if piped else None,
        TIM_SECRET_KEY="not-the-key",
    )
    assert done.returncode == 3
    assert "STOPPED (fatal)" in done.stderr
    recorded = len(read_results(results))
    if piped:  # how far the reader got into the pipe depends on its buffer: read it back
        found = re.search(r"every line after line (\d+) \(not read\)", done.stderr)
        assert found is not None
        last_read = int(found[1])
        assert recorded <= last_read <= 600
        rest = f", and every line after line {last_read} (not read)"
    else:
        last_read, rest = 600, ""
    assert (
        f"  never sent: {last_read - recorded} lines{rest}; run the same command with --resume "
        "to continue\n" in done.stderr
    )


def test_unwritable_summary_json_is_found_before_the_first_edit(
    tmp_path: Path, emulator_process: StartEmulator
) -> None:
    """--summary-json in a directory that does not exist: exit 2 before anything is sent."""
    emulator, edits = _start(tmp_path, emulator_process, 5)
    target = tmp_path / "missing" / "s.json"
    done = _cli(
        emulator.url, "run", edits, "--results", tmp_path / "r.jsonl", "--summary-json", target
    )
    assert (done.returncode, done.stderr) == (
        2,
        f"Error: cannot write --summary-json {target}: no directory {target.parent}\n",
    )
    assert _edits_sent(emulator) == 0
    assert not (tmp_path / "r.jsonl").exists()


def test_start_line_and_rate_warning(tmp_path: Path, emulator_process: StartEmulator) -> None:
    """Before sending, a run prints a warning naming the documented limit for a --rate above
    it, then one start line: endpoint, SDKAppID, admin, input, rate, concurrency."""
    emulator, edits = _start(tmp_path, emulator_process, 3)
    done = _cli(
        emulator.url, "run", edits, "--results", tmp_path / "r.jsonl", "--rate", "500", "-q"
    )
    assert done.returncode == 0, done.stderr
    host = emulator.url.removeprefix("http://")
    assert done.stderr.splitlines()[:2] == [
        "warning: --rate 500 is above the documented limit of 200 requests per second per API; "
        "the service answers the excess with 60007",
        f"start: endpoint {host}, SDKAppID {SDKAPPID}, admin {ADMIN}, input {edits}, "
        "rate 500/s, concurrency 100",
    ]


def _runner() -> CliRunner:
    return CliRunner(env={"TIM_REGION": None, "TIM_BASE_URL": None, "TIM_SDKAPPID": "1"})


def test_an_explicit_region_beats_tim_base_url(tmp_path: Path) -> None:
    """--region on the command line wins over TIM_BASE_URL (here: an unknown region is
    reported, rather than the environment's URL silently used)."""
    edits = write_edits(tmp_path / "e.jsonl", [])
    result = _runner().invoke(
        main,
        ["run", str(edits), "--results", str(tmp_path / "r.jsonl"), "--region", "mars"],
        env={"TIM_BASE_URL": "http://127.0.0.1:9", "TIM_SECRET_KEY": "k"},
    )
    assert result.exit_code == 2
    assert result.output.startswith("Error: unknown region 'mars'")


def test_an_explicit_base_url_beats_tim_region(
    tmp_path: Path, emulator_process: StartEmulator
) -> None:
    """--base-url on the command line wins over TIM_REGION: the edits reach the emulator."""
    emulator, edits = _start(tmp_path, emulator_process, 3)
    env = {k: v for k, v in cli_env(emulator.url).items() if k != "TIM_BASE_URL"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "batchedit",
            "run",
            str(edits),
            "--results",
            str(tmp_path / "r.jsonl"),
            "--base-url",
            emulator.url,
        ],
        env={**env, "TIM_REGION": "singapore"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert _edits_sent(emulator) == 3


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--region", "singapore", "--base-url", "http://127.0.0.1:9"],
            {},
            "Error: --region and --base-url are both set; give one endpoint\n",
        ),
        (
            [],
            {"TIM_REGION": "singapore", "TIM_BASE_URL": "http://127.0.0.1:9"},
            "Error: TIM_REGION and TIM_BASE_URL are both set; give one endpoint\n",
        ),
    ],
)
def test_two_endpoints_at_one_level_clash(
    args: list[str], env: dict[str, str], message: str, tmp_path: Path
) -> None:
    """Two endpoint settings of equal standing are refused rather than one silently dropped."""
    edits = write_edits(tmp_path / "e.jsonl", [])
    result = _runner().invoke(
        main, ["run", str(edits), "--results", str(tmp_path / "r.jsonl"), *args], env=env
    )
    assert (result.exit_code, result.output) == (2, message)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "https://h.example/v4/openim/modify_c2c_msg",
            "base URL must be https://host[:port][/path] without /v4, a query or a fragment "
            "(batchedit adds /v4/... itself), got 'https://h.example/v4/openim/modify_c2c_msg'",
        ),
        (
            "https://h.example/?usersig=abc",
            "base URL must be https://host[:port][/path] without /v4, a query or a fragment "
            "(batchedit adds /v4/... itself), got 'https://h.example/?usersig=<redacted>'",
        ),
        ("https://u:pw@h.example/", "base URL must not hold credentials (user:password@)"),
    ],
)
def test_a_base_url_that_would_be_cut_is_refused(url: str, message: str) -> None:
    """A base URL whose query, /v4 path or credentials would be dropped is refused instead."""
    with pytest.raises(ConfigError) as caught:
        resolve_endpoint(base_url=url)
    assert str(caught.value) == message


async def test_a_base_url_path_is_kept(aiohttp_server: ServerFactory, tmp_path: Path) -> None:
    """Behind a reverse proxy at /tim, requests go to /tim/v4/...: the path is not cut."""
    emulator = Emulator(EmulatorConfig(sdkappid=SDKAPPID, secret_key=SECRET, retention_days=None))
    targets = seed_messages(emulator.store, 5)
    proxy = web.Application()
    proxy.add_subapp("/tim", emulator.app())
    server = await aiohttp_server(proxy, host="127.0.0.1")
    endpoint = resolve_endpoint(base_url=str(server.make_url("/tim/")))
    assert endpoint.endswith("/tim")
    edits = write_edits(tmp_path / "e.jsonl", [{**t, "CloudCustomData": "p"} for t in targets])
    config = RunConfig(
        results=tmp_path / "r.jsonl",
        endpoint=endpoint,
        sig=SigSource(SDKAPPID, ADMIN, secret_key=Secret(SECRET)),
        policy=RetryPolicy.zero_wait(max_attempts=1),
    )
    with edits.open("rb") as source:
        summary = await run_batch(source, config)
    assert summary.all_ok
    assert emulator.traffic.of(MODIFY).arrivals == 5


def test_plan_output_may_not_be_its_input(tmp_path: Path) -> None:
    """plan --output equal to PAIRS is refused; PAIRS is left as it was."""
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a,b\n")
    result = CliRunner().invoke(
        main,
        [
            *("plan", str(pairs), "--since", "2026-01-01", "--until", "2026-01-02"),
            *("--replace", "a", "b", "--output", str(pairs)),
        ],
        env={
            "TIM_BASE_URL": "http://127.0.0.1:9",
            "TIM_SDKAPPID": str(SDKAPPID),
            "TIM_SECRET_KEY": SECRET,
        },
    )
    assert (result.exit_code, result.output) == (
        2,
        f"Error: PAIRS and --output are the same file ({pairs}); give each a file of its own\n",
    )
    assert pairs.read_text() == "a,b\n"


def _emulator(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "batchedit",
            "emulator",
            "--secret-key-file",
            str(secret_file(tmp_path)),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_demo_data_on_a_used_state_is_refused(tmp_path: Path) -> None:
    """--demo-data on a --state file that holds data exits 2 and changes nothing."""
    state = tmp_path / "state.jsonl"
    store = Store()
    seed_messages(store, 3)
    store.save(state)
    saved = state.read_bytes()
    targets = tmp_path / "t.jsonl"
    done = _emulator(
        tmp_path,
        "--port",
        "0",
        "--state",
        str(state),
        "--demo-data",
        "50",
        "--demo-targets",
        str(targets),
    )
    assert (done.returncode, done.stderr) == (
        2,
        f"Error: --state {state} already holds data, and --demo-data would add 50 more messages "
        "to it; give a new --state file, or leave out --demo-data to serve it as it is\n",
    )
    assert state.read_bytes() == saved
    assert not targets.exists()


def test_emulator_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    """A port already in use: one line, exit 2, neither state nor demo targets written."""
    state, targets = tmp_path / "state.jsonl", tmp_path / "t.jsonl"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _emulator(
            tmp_path,
            "--port",
            str(port),
            "--state",
            str(state),
            "--demo-data",
            "10",
            "--demo-targets",
            str(targets),
        )
    assert (done.returncode, done.stderr) == (
        2,
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use; pick another --port "
        "(0: any free one)\n",
    )
    assert not state.exists()
    assert not targets.exists()


def test_an_output_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    """An output path naming a directory is refused by name before the run starts."""
    with pytest.raises(ConfigError) as caught:
        check_writable("RESULTS", tmp_path)
    assert str(caught.value) == f"cannot write RESULTS {tmp_path}: it is a directory"


def test_plan_partial_file_may_not_be_its_input(tmp_path: Path) -> None:
    """plan writes FILE.partial first: a PAIRS named so is refused too."""
    pairs = tmp_path / "edits.jsonl.partial"
    pairs.write_text("a,b\n")
    with pytest.raises(ConfigError) as caught:
        check_plan_files(pairs, tmp_path / "edits.jsonl")
    assert str(caught.value) == (
        f"PAIRS and --output's .partial file are the same file ({pairs}); "
        "give each a file of its own"
    )


def test_no_rate_limit_gets_a_warning_too() -> None:
    """--rate 0 (no limit) is warned about with the documented limit, like a rate above it."""
    sig = SigSource(SDKAPPID, ADMIN, secret_key=Secret(SECRET))
    assert start_lines("https://proxy.example.com/tim", sig, "-", None, 8) == [
        "warning: no rate limit; the documented limit is 200 requests per second per API, and "
        "the service answers the excess with 60007",
        f"start: endpoint proxy.example.com/tim, SDKAppID {SDKAPPID}, admin {ADMIN}, input -, "
        "rate unlimited, concurrency 8",
    ]
