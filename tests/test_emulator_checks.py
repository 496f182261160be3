"""The emulator's facts beyond the happy path: MsgKey shape, the roaming window, recalled
messages, its own imports, its config's repr, and control requests it must refuse cleanly."""

from __future__ import annotations

import ast
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

import batchedit
from batchedit import ImClient
from batchedit.emulator import Emulator, EmulatorConfig, Message
from batchedit.im import usersig
from tests.conftest import ClientFactory, EmulatorFactory, Running
from tests.helpers import ADMIN, SDKAPPID, SECRET, text_body

DAY = 86400


async def _alice_bob(
    start_emulator: EmulatorFactory, open_client: ClientFactory, **config: Any
) -> tuple[Running, ImClient, str]:
    running = await start_emulator(**config)
    client = await open_client(running)
    assert (await client.multiaccount_import(["alice", "bob"])).ok
    sent = await client.sendmsg("alice", "bob", text_body("hello"))
    return running, client, str(sent.data["MsgKey"])


def _edit(key: str) -> dict[str, Any]:
    return {"From_Account": "alice", "To_Account": "bob", "MsgKey": key, "CloudCustomData": "x"}


@pytest.mark.parametrize(
    "key",
    [
        "",
        "abc",
        "1_2",
        "1_2_3_4",
        "1_2_-3",
        "1_2_4294967296",
        "1__3",
        "k62504023_1747216201_1069",
        "\uff11_2_3",  # fullwidth digit one: a digit to str.isdigit, not to the service
        "1_2_3 ",
    ],
)
async def test_malformed_msgkey_is_90054(
    start_emulator: EmulatorFactory, open_client: ClientFactory, key: str
) -> None:
    """A MsgKey not of the seq_random_time shape (uint32 parts) is 90054 on modify and recall."""
    _, client, _ = await _alice_bob(start_emulator, open_client)
    assert (await client.modify_c2c_msg(_edit(key))).code == 90054
    assert (await client.admin_msgwithdraw("alice", "bob", key)).code == 90054


async def test_well_formed_unknown_msgkey_keeps_the_configured_code(
    start_emulator: EmulatorFactory, open_client: ClientFactory
) -> None:
    """A well-formed key that names no message gets the configurable code (default 20026)."""
    _, client, key = await _alice_bob(start_emulator, open_client)
    assert (await client.modify_c2c_msg(_edit("4294967295_0_1"))).code == 20026
    assert (await client.modify_c2c_msg(_edit(key))).code == 0
    _, other, _ = await _alice_bob(start_emulator, open_client, unknown_msgkey_code=90054)
    assert (await other.modify_c2c_msg(_edit("1_2_3"))).code == 90054


async def test_max_time_above_uint32_is_90001(
    start_emulator: EmulatorFactory, open_client: ClientFactory
) -> None:
    """admin_getroammsg answers 90001 for a MaxTime above the uint32 range (spec section 3)."""
    _, client, _ = await _alice_bob(start_emulator, open_client)
    assert (await client.admin_getroammsg("alice", "bob", 0, 2**32 - 1, 10)).data["MsgCnt"] == 1
    assert (await client.admin_getroammsg("alice", "bob", 0, 2**32, 10)).code == 90001
    beyond_u64 = (
        b'{"Operator_Account": "alice", "Peer_Account": "bob", "MaxCnt": 10, "MinTime": 0, '
        b'"MaxTime": 18446744073709551616}'
    )
    assert (await client.call_raw("openim/admin_getroammsg", beyond_u64)).code == 90001


def _aged(running: Running, days: float, seq: int) -> str:
    """Store a message from alice to bob sent ``days`` ago; its MsgKey."""
    stamp = int(time.time() - days * DAY)
    message = Message("alice", "bob", seq, seq, stamp, text_body(f"{days} days old"))
    return running.emulator.store.add(message).key


async def test_roaming_window_hides_old_messages(
    start_emulator: EmulatorFactory, open_client: ClientFactory
) -> None:
    """With a 7-day window, an 8-day-old message is not listed, not modifiable (the unknown-key
    code) and not recallable (20022); a 6-day-old one is all three."""
    running, client, _ = await _alice_bob(start_emulator, open_client, retention_days=7)
    old, recent = _aged(running, 8, 1), _aged(running, 6, 2)
    page = await client.admin_getroammsg("bob", "alice", 0, 2**32 - 1, 100)
    keys = {m["MsgKey"] for m in page.data["MsgList"]}
    assert recent in keys
    assert old not in keys
    assert page.data["Complete"] == 1
    assert (await client.modify_c2c_msg(_edit(old))).code == 20026
    assert (await client.admin_msgwithdraw("alice", "bob", old)).code == 20022
    assert (await client.modify_c2c_msg(_edit(recent))).code == 0
    assert (await client.admin_msgwithdraw("alice", "bob", recent)).code == 0


async def test_window_is_a_setting(
    start_emulator: EmulatorFactory, open_client: ClientFactory
) -> None:
    """A 30-day window keeps the 8-day-old message; no window (None) keeps a 3-year-old one."""
    running, client, _ = await _alice_bob(start_emulator, open_client, retention_days=30)
    assert (await client.modify_c2c_msg(_edit(_aged(running, 8, 1)))).code == 0
    assert (await client.modify_c2c_msg(_edit(_aged(running, 40, 2)))).code == 20026
    running, client, _ = await _alice_bob(start_emulator, open_client, retention_days=None)
    assert (await client.modify_c2c_msg(_edit(_aged(running, 3 * 365, 1)))).code == 0


@pytest.mark.parametrize(("setting", "code"), [("allow", 0), ("refuse", 20023)])
async def test_editing_a_recalled_message_is_a_setting(
    start_emulator: EmulatorFactory, open_client: ClientFactory, setting: str, code: int
) -> None:
    """Whether a recalled message may be modified is unverified: allowed or refused (20023)."""
    _, client, key = await _alice_bob(start_emulator, open_client, edit_recalled=setting)
    assert (await client.admin_msgwithdraw("alice", "bob", key)).ok
    assert (await client.modify_c2c_msg(_edit(key))).code == code


def test_config_repr_hides_the_secret_key() -> None:
    """Neither the config's nor the emulator's repr shows the secret key."""
    config = EmulatorConfig(sdkappid=SDKAPPID, secret_key="very-secret-value")
    assert "very-secret-value" not in repr(config)
    assert "very-secret-value" not in repr(Emulator(config))


def test_emulator_imports_no_client_logic() -> None:
    """The emulator takes from batchedit.im only the UserSig algorithm, constants and the key
    reader: never the client's validators, so a rule the client invents is not agreed with."""
    allowed = {
        "batchedit.im.usersig",
        "batchedit.im.history.UINT32_MAX",
        "batchedit.im.elements.MAX_BODY_BYTES",
        "batchedit.im.auth.read_secret_key",
        "batchedit.im.errors.ConfigError",
    }
    package = Path(batchedit.__file__).parent / "emulator"
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("batchedit.im"):
                for alias in node.names:
                    name = f"{node.module}.{alias.name}"
                    assert name in allowed, f"emulator/{path.name} imports {name}"


async def _post(running: Running, path: str, body: bytes) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{running.url}{path}", data=body) as response,
    ):
        return response.status, await response.json()


@pytest.mark.parametrize(
    "body",
    [
        b'{"transient_rate": "0.5"}',
        b'{"transient_rate": 2}',
        b'{"drop_rate": true}',
        b'{"transient_codes": []}',
        b'{"transient_codes": [20004, "x"]}',
        b'{"latency_ms": [5]}',
        b'{"latency_ms": [9, 1]}',
        b'{"slow_seconds": 1e300}',
        b'{"key_codes": ["a"]}',
        b'{"key_codes": {"1_2_3": 1.5}}',
        b'{"fail_first": -1}',
        b'{"fail_first_code": null}',
        b'{"fail_first": 1, "nope": 1}',
        b"[1, 2]",
        b"not json",
    ],
)
async def test_bad_fault_settings_are_refused_whole(
    start_emulator: EmulatorFactory, open_client: ClientFactory, body: bytes
) -> None:
    """An ill-typed or unknown knob is HTTP 400 and changes nothing; the API keeps answering."""
    running, client, key = await _alice_bob(start_emulator, open_client)
    before = running.emulator.faults.as_json()
    status, answer = await _post(running, "/__emulator/faults", body)
    assert status == 400
    assert answer["error"].startswith("bad fault setting: ")
    assert running.emulator.faults.as_json() == before
    assert (await client.modify_c2c_msg(_edit(key))).code == 0


async def test_good_fault_settings_apply(
    start_emulator: EmulatorFactory, open_client: ClientFactory
) -> None:
    """Well-typed knobs apply together and read back as set."""
    running, client, key = await _alice_bob(start_emulator, open_client)
    status, answer = await _post(
        running,
        "/__emulator/faults",
        b'{"transient_codes": [91000], "latency_ms": [0, 1], "fail_first": 1, '
        b'"fail_first_code": 90992}',
    )
    assert status == 200
    assert (answer["transient_codes"], answer["latency_ms"]) == ([91000], [0.0, 1.0])
    assert (await client.modify_c2c_msg(_edit(key))).code == 90992
    assert (await client.modify_c2c_msg(_edit(key))).code == 0


async def test_deep_nesting_is_refused_and_state_stays_savable(
    start_emulator: EmulatorFactory, open_client: ClientFactory, tmp_path: Path
) -> None:
    """A body nesting past 32 levels is 90001 (300 once made --state unsavable); 32 is fine."""
    path = tmp_path / "state.jsonl"
    running, client, key = await _alice_bob(start_emulator, open_client, state_path=path)
    for levels, code in ((28, 0), (29, 90001), (300, 90001)):
        deep = b"[" * levels + b'"deep"' + b"]" * levels
        body = (
            b'{"From_Account": "alice", "To_Account": "bob", "MsgKey": "%s", "MsgBody": '
            b'[{"MsgType": "TIMTextElem", "MsgContent": {"Text": "t", "X": %s}}]}'
        ) % (key.encode(), deep)
        assert (await client.call_raw("openim/modify_c2c_msg", body)).code == code, levels
    status, answer = await _post(running, "/__emulator/save", b"")
    assert (status, answer) == (200, {"saved": str(path)})
    assert (await client.admin_getroammsg("alice", "bob", 0, 2**32 - 1, 10)).data["MsgCnt"] == 1


async def test_a_failing_save_is_an_answer_not_a_crash(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """POST /__emulator/save into a missing folder answers 503 with the reason."""
    running = await start_emulator(state_path=tmp_path / "missing" / "state.jsonl")
    status, answer = await _post(running, "/__emulator/save", b"")
    assert (status, answer) == (503, {"error": "cannot save: No such file or directory"})


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("random=%C2%B2", 60002),  # superscript two: str.isdigit says yes, int() says no
        ("random=" + "9" * 5000, 60002),  # longer than int() converts
        ("random=00000000000000000000042", 0),
        ("random=1&sdkappid=%D9%A1%D9%A4", 60006),  # Arabic-Indic digits
        ("random=1&sdkappid=" + "1" * 5000, 60006),
        ("random=1&sdkappid=", 60006),
        ("random=1&sdkappid=%FF%FE", 60006),
    ],
)
async def test_odd_digit_strings_in_the_query_get_codes(
    start_emulator: EmulatorFactory, query: str, code: int
) -> None:
    """Digits that are not ASCII, or too many of them, are request errors, never HTTP 500."""
    running = await start_emulator()
    sig = usersig.generate(SDKAPPID, SECRET, ADMIN)
    params = f"identifier={ADMIN}&usersig={sig}&contenttype=json"
    if "sdkappid=" not in query:
        params += f"&sdkappid={SDKAPPID}"
    url = f"{running.url}/v4/im_open_login_svc/account_check?{params}&{query}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(URL(url, encoded=True), data=b'{"CheckItem": [{"UserID": "x"}]}') as response,
    ):
        assert response.status == 200
        assert (await response.json())["ErrorCode"] == code
