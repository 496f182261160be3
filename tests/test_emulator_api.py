"""The emulator's APIs and request checks, through the real client over loopback."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from batchedit import ImClient
from batchedit.im import usersig
from tests.conftest import ClientFactory, EmulatorFactory, Running
from tests.helpers import ADMIN, SDKAPPID, SECRET, text_body


async def _seeded(
    start_emulator: EmulatorFactory, open_client: ClientFactory, **config: Any
) -> tuple[Running, ImClient, str]:
    running = await start_emulator(**config)
    client = await open_client(running)
    for user in ("alice", "bob"):
        assert (await client.account_import(user)).ok
    sent = await client.sendmsg("alice", "bob", text_body("hello"), cloud_custom_data="v1")
    assert sent.ok
    return running, client, str(sent.data["MsgKey"])


async def test_modify_overwrites_body_and_custom_data(
    start_emulator: EmulatorFactory, open_client: ClientFactory
) -> None:
    """modify_c2c_msg replaces the whole MsgBody and CloudCustomData; an unsent field stays."""
    running, client, key = await _seeded(start_emulator, open_client)
    reply = await client.modify_c2c_msg(
        {"From_Account": "alice", "To_Account": "bob", "MsgKey": key, "MsgBody": text_body("x")}
    )
    assert (reply.code, reply.info, reply.http_status) == (0, "succeed", 200)
    message = running.emulator.store.find("alice", "bob", key)
    assert message is not None
    assert (message.body, message.cloud_custom_data) == (text_body("x"), "v1")
    edit = {"From_Account": "alice", "To_Account": "bob", "MsgKey": key, "CloudCustomData": "v2"}
    assert (await client.modify_c2c_msg(edit)).ok
    assert (message.body, message.cloud_custom_data) == (text_body("x"), "v2")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"From_Account": None}, 20001),
        ({"MsgKey": None}, 20001),
        ({"MsgBody": None, "CloudCustomData": None}, 20001),
        ({"From_Account": "nobody"}, 20003),
        ({"To_Account": None}, 90003),
        ({"To_Account": 7}, 90003),
        ({"To_Account": "nobody"}, 90012),
        ({"MsgBody": "text"}, 90007),
        ({"MsgBody": [1]}, 90002),
        ({"MsgBody": [{"MsgType": "TIMNopeElem", "MsgContent": {}}]}, 90010),
        ({"MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": 1}}]}, 90010),
        ({"MsgKey": "1_2_3"}, 20026),
        ({"From_Account": "bob", "To_Account": "alice"}, 20026),
    ],
)
async def test_modify_error_codes(
    start_emulator: EmulatorFactory,
    open_client: ClientFactory,
    change: dict[str, Any],
    code: int,
) -> None:
    """Each malformed or mistargeted modify gets its documented code, over HTTP 200."""
    _, client, key = await _seeded(start_emulator, open_client)
    edit: dict[str, Any] = {
        "From_Account": "alice",
        "To_Account": "bob",
        "MsgKey": key,
        "MsgBody": text_body("x"),
    }
    edit.update(change)
    edit = {k: v for k, v in edit.items() if v is not None}
    reply = await client.modify_c2c_msg(edit)
    assert (reply.code, reply.http_status) == (code, 200)
    assert reply.data["ActionStatus"] == "FAIL"


async def test_unknown_msgkey_code_is_configurable(
    start_emulator: EmulatorFactory, open_client: ClientFactory
) -> None:
    """The code for a MsgKey that does not exist is a setting (spec: unverified)."""
    _, client, _ = await _seeded(start_emulator, open_client, unknown_msgkey_code=90054)
    edit = {"From_Account": "alice", "To_Account": "bob", "MsgKey": "1_2_3", "CloudCustomData": ""}
    assert (await client.modify_c2c_msg(edit)).code == 90054


async def test_non_admin_and_oversized_and_unparsable(
    start_emulator: EmulatorFactory, open_client: ClientFactory
) -> None:
    """A non-admin identifier gets 90009 (70403 on account APIs); > 8 KB 93000; bad JSON 90001."""
    running, client, key = await _seeded(start_emulator, open_client)
    assert (await client.account_import("carol")).ok
    carol = await open_client(running, identifier="carol")
    assert (await carol.modify_c2c_msg({"MsgKey": key})).code == 90009
    assert (await carol.account_import("dave")).code == 70403
    huge = {
        "From_Account": "alice",
        "To_Account": "bob",
        "MsgKey": key,
        "MsgBody": text_body("x" * 9000),
    }
    assert (await client.modify_c2c_msg(huge)).code == 93000
    assert (await client.call_raw("openim/modify_c2c_msg", b"{not json")).code == 90001
    assert (await client.call_raw("openim/modify_c2c_msg", b"")).code == 90001
    assert (await client.call("openim/no_such_api", {})).code == 60009


async def test_usersig_verdicts_map_to_codes(
    start_emulator: EmulatorFactory, open_client: ClientFactory
) -> None:
    """Expired 70001, unparsable 70003, wrong key 70009, identifier 70013, sdkappid 70014."""
    running = await start_emulator()
    cases = {
        usersig.generate(SDKAPPID, SECRET, ADMIN, 1, now=1_600_000_000): 70001,
        "garbage": 70003,
        usersig.generate(SDKAPPID, "wrong-key", ADMIN): 70009,
        usersig.generate(SDKAPPID, SECRET, "someone-else"): 70013,
        usersig.generate(SDKAPPID + 1, SECRET, ADMIN): 70014,
    }
    for sig, code in cases.items():
        client = await open_client(running, usersig=sig)
        reply = await client.account_check(["x"])
        assert (reply.code, reply.http_status) == (code, 200), sig
    wrong_app = await open_client(running, sdkappid=SDKAPPID + 1)
    assert (await wrong_app.account_check(["x"])).code == 60006


async def test_query_checks_and_content_type(start_emulator: EmulatorFactory) -> None:
    """random must be a uint32, contenttype json, usersig present; no Content-Type is fine."""
    running = await start_emulator()
    sig = usersig.generate(SDKAPPID, SECRET, ADMIN)
    base = f"{running.url}/v4/im_open_login_svc/account_import?sdkappid={SDKAPPID}"
    good = f"&identifier={ADMIN}&usersig={sig}&contenttype=json"
    body = b'{"UserID": "eve"}'
    async with aiohttp.ClientSession() as session:

        async def code(url: str) -> int:
            async with session.post(url, data=body) as response:
                assert response.status == 200
                return int((await response.json())["ErrorCode"])

        assert await code(base + good + "&random=4294967295") == 0
        assert await code(base + good + "&random=4294967296") == 60002
        assert await code(base + good + "&random=-1") == 60002
        assert await code(base + good.replace("json", "xml") + "&random=1") == 60002
        assert await code(base + f"&identifier={ADMIN}&contenttype=json&random=1") == 70002
        assert await code(base.split("?", maxsplit=1)[0] + "?" + good[1:] + "&random=1") == 60012


async def test_sendmsg_answers_a_seq_random_time_key(
    start_emulator: EmulatorFactory, open_client: ClientFactory
) -> None:
    """sendmsg's MsgKey is MsgSeq_MsgRandom_MsgTime (spec section 3)."""
    _, client, _ = await _seeded(start_emulator, open_client)
    reply = await client.sendmsg("alice", "bob", text_body("hi"), msg_random=77, msg_seq=5)
    assert reply.data["MsgKey"] == f"5_77_{reply.data['MsgTime']}"
    bad = await client.sendmsg("alice", "bob", text_body("hi"), msg_random=2**32)
    assert bad.code == 90005
    assert (await client.sendmsg("alice", "zed", text_body("hi"))).code == 90012


async def test_accounts(start_emulator: EmulatorFactory, open_client: ClientFactory) -> None:
    """account_import, multiaccount_import and account_check agree on who exists."""
    running = await start_emulator()
    client = await open_client(running)
    assert (await client.account_import("a1", nick="A")).ok
    multi = await client.multiaccount_import(["a2", "a3"])
    assert (multi.code, multi.data["FailAccounts"]) == (0, [])
    check = await client.account_check(["a1", "a3", "zz"])
    statuses = [item["AccountStatus"] for item in check.data["ResultItem"]]
    assert statuses == ["Imported", "Imported", "NotImported"]
    assert (await client.multiaccount_import([f"u{i}" for i in range(101)])).code == 70206


async def test_withdraw_marks_recalled(
    start_emulator: EmulatorFactory, open_client: ClientFactory
) -> None:
    """A recalled message stays in history with MsgFlagBits 8; a second recall is 20023."""
    _, client, key = await _seeded(start_emulator, open_client)
    assert (await client.admin_msgwithdraw("alice", "bob", key)).ok
    assert (await client.admin_msgwithdraw("alice", "bob", key)).code == 20023
    assert (await client.admin_msgwithdraw("alice", "bob", "9_9_9")).code == 20022
    page = await client.admin_getroammsg("bob", "alice", 0, 2**31, 10)
    assert [m["MsgFlagBits"] for m in page.data["MsgList"]] == [8]
