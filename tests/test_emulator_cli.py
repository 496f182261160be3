"""`batchedit emulator` on the command line: where it may listen, and its behaviour flags."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from batchedit import ImClient, Secret, SigSource
from batchedit.cli import main
from batchedit.emulator import Message, Store
from batchedit.emulator.server import is_loopback
from tests.conftest import EmulatorProcess
from tests.helpers import ADMIN, SDKAPPID, SECRET, text_body

StartEmulator = Callable[..., EmulatorProcess]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),  # noqa: S104 - the address being refused
        ("::", False),
        ("", False),
        ("192.168.1.5", False),
        ("example.com", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    """127.0.0.0/8, ::1 and localhost are loopback; the wildcard, LAN addresses and names not."""
    assert is_loopback(host) is loopback


def test_a_remote_host_needs_allow_remote() -> None:
    """--host 0.0.0.0 without --allow-remote is a usage error (exit 2) that says why; nothing
    is bound."""
    runner = CliRunner(env={"TIM_SECRET_KEY": "k"})
    result = runner.invoke(main, ["emulator", "--host", "0.0.0.0", "--port", "0"])  # noqa: S104
    assert result.exit_code == 2
    assert result.output.endswith(
        "Error: --host 0.0.0.0 is not a loopback address, and the control endpoints hand out "
        "every stored message: pass --allow-remote to serve it anyway\n"
    )


def _state(path: Path) -> dict[str, str]:
    """A state with one message 8 days old and one a day old; their MsgKeys."""
    store = Store()
    for user in (ADMIN, "alice", "bob"):
        store.import_account(user)
    now = int(time.time())
    keys = {}
    for name, days in (("old", 8), ("recent", 1)):
        message = Message("alice", "bob", days, days, now - days * 86400, text_body(name))
        keys[name] = store.add(message).key
    store.save(path)
    return keys


async def test_window_recall_and_fail_first_flags(
    tmp_path: Path, emulator_process: StartEmulator
) -> None:
    """--retention-days 7 hides the 8-day-old message, --edit-recalled refuse refuses an edit
    of a recalled one (20023), --fail-first 1 --fail-first-code 91000 fails the first request."""
    keys = _state(tmp_path / "state.jsonl")
    emulator = emulator_process(
        "--retention-days",
        "7",
        "--edit-recalled",
        "refuse",
        "--fail-first",
        "1",
        "--fail-first-code",
        "91000",
        state=tmp_path / "state.jsonl",
    )
    sig = SigSource(SDKAPPID, ADMIN, secret_key=Secret(SECRET))

    def edit(key: str) -> dict[str, Any]:
        return {"From_Account": "alice", "To_Account": "bob", "MsgKey": key, "CloudCustomData": "c"}

    async with ImClient(emulator.url, sig) as client:
        assert (await client.modify_c2c_msg(edit(keys["recent"]))).code == 91000
        page = await client.admin_getroammsg("alice", "bob", 0, 2**32 - 1, 10)
        assert [m["MsgKey"] for m in page.data["MsgList"]] == [keys["recent"]]
        assert (await client.modify_c2c_msg(edit(keys["old"]))).code == 20026
        assert (await client.admin_msgwithdraw("alice", "bob", keys["recent"])).ok
        assert (await client.modify_c2c_msg(edit(keys["recent"]))).code == 20023
    emulator.stop()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["--state", "{tmp}/missing/state.jsonl"],
            "Error: cannot write --state {tmp}/missing/state.jsonl: no directory {tmp}/missing\n",
        ),
        (
            ["--state", "{tmp}/garbage.jsonl"],
            "Error: --state {tmp}/garbage.jsonl: line 2: not a state row (not JSON)\n",
        ),
        (
            ["--state", "{tmp}/wrong.jsonl"],
            "Error: --state {tmp}/wrong.jsonl: line 1: not a state row (MsgSeq: must be a whole "
            "number)\n",
        ),
        (
            ["--demo-targets", "{tmp}/targets.jsonl"],
            "Error: --demo-targets needs --demo-data (the messages whose targets it writes)\n",
        ),
        (["--port", "99999"], "Error: Invalid value for '--port': 99999 is not in the range"),
        (["--demo-data", "-5"], "Error: Invalid value for '--demo-data': -5 is not in the range"),
    ],
)
def test_the_emulator_refuses_what_it_cannot_serve_or_save_at_start(
    tmp_path: Path, args: list[str], error: str
) -> None:
    """A --state it could not save on shutdown, a --state that is not a state, --demo-targets
    without --demo-data, a port or count out of range: exit 2 with one line, no traceback,
    nothing written."""
    (tmp_path / "garbage.jsonl").write_bytes(b'{"type":"account","UserID":"a"}\ngarbage\n')
    (tmp_path / "wrong.jsonl").write_bytes(
        b'{"type":"message","From_Account":"a","To_Account":"b","MsgSeq":true}\n'
    )
    before = sorted(tmp_path.iterdir())
    runner = CliRunner(env={"TIM_SECRET_KEY": "k"})
    given = [arg.format(tmp=tmp_path) for arg in args]
    result = runner.invoke(main, ["emulator", "--port", "0", *given])
    assert result.exit_code == 2, result.output
    expected = error.format(tmp=tmp_path)
    if expected.endswith("\n"):
        assert result.stderr == expected
    else:
        assert expected in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert sorted(tmp_path.iterdir()) == before


def test_a_state_that_cannot_be_saved_on_shutdown_is_one_line(
    tmp_path: Path, emulator_process: StartEmulator
) -> None:
    """The --state folder gone while serving: SIGTERM exits 1 with one line naming the file,
    no traceback."""
    folder = tmp_path / "state"
    folder.mkdir()
    emulator = emulator_process(state=folder / "state.jsonl")
    folder.rmdir()
    emulator.process.send_signal(signal.SIGTERM)
    assert emulator.process.wait(timeout=20) == 1
    assert emulator.process.stderr is not None
    assert emulator.process.stderr.read() == (
        f"Error: cannot save --state {folder / 'state.jsonl'}: No such file or directory\n"
    )
