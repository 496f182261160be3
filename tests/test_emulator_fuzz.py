"""Fuzzing the emulator over loopback: no query string, body or fault setting makes it answer
HTTP 500, every API answer is an envelope, and its state stays savable."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from batchedit.emulator import Emulator, EmulatorConfig, Faults, Message
from batchedit.emulator.msgformat import FORMATS
from batchedit.im import usersig
from tests.helpers import ADMIN, SDKAPPID, SECRET, text_body

APIS = (
    "openim/modify_c2c_msg",
    "openim/admin_getroammsg",
    "openim/sendmsg",
    "openim/admin_msgwithdraw",
    "im_open_login_svc/account_import",
    "im_open_login_svc/multiaccount_import",
    "im_open_login_svc/account_check",
)
FUZZ = settings(max_examples=300)


class Served:
    """An emulator served on 127.0.0.1 from this thread's own event loop, for sync fuzzing."""

    def __init__(self, runner: asyncio.Runner, emulator: Emulator) -> None:
        self.runner = runner
        self.emulator = emulator
        self.server = TestServer(emulator.app(), host="127.0.0.1")
        self.session: aiohttp.ClientSession | None = None
        self.sig = usersig.generate(SDKAPPID, SECRET, ADMIN)

    async def start(self) -> None:
        await self.server.start_server()
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        await self.server.close()

    def send(self, method: str, path_and_query: str, body: bytes) -> tuple[int, bytes]:
        """One request with an already-encoded path and query; its status and body."""
        url = URL(f"{str(self.server.make_url('')).rstrip('/')}{path_and_query}", encoded=True)

        async def go() -> tuple[int, bytes]:
            assert self.session is not None
            async with self.session.request(method, url, data=body) as response:
                return response.status, await response.read()

        return self.runner.run(go())

    def good_query(self) -> dict[str, str]:
        """The query parameters of a request that passes every check."""
        return {
            "sdkappid": str(SDKAPPID),
            "identifier": ADMIN,
            "usersig": self.sig,
            "random": "7",
            "contenttype": "json",
        }

    def api(self, api: str, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` to ``api`` with a good query."""
        query = "&".join(f"{name}={value}" for name, value in self.good_query().items())
        return self.send("POST", f"/v4/{api}?{query}", body)


@contextmanager
def served(**config: Any) -> Iterator[Served]:
    """A fresh emulator with alice, bob and a message between them, served until the end."""
    settings = {"rate_limit": None, "retention_days": None, **config}
    emulator = Emulator(EmulatorConfig(sdkappid=SDKAPPID, secret_key=SECRET, **settings))
    for user in ("alice", "bob"):
        emulator.store.import_account(user)
    emulator.store.add(Message("alice", "bob", 1, 2, 1_790_000_000, text_body("hi")))
    with asyncio.Runner() as runner:
        serving = Served(runner, emulator)
        runner.run(serving.start())
        try:
            yield serving
        finally:
            runner.run(serving.stop())


def _assert_envelope(status: int, body: bytes) -> None:
    assert status == 200, body[:200]
    answer = orjson.loads(body)
    assert isinstance(answer["ErrorCode"], int)
    assert answer["ActionStatus"] == ("OK" if answer["ErrorCode"] == 0 else "FAIL")


# Query values: digits of every script, huge digit runs, any text, raw escapes.
_digits = st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=12)
_query_value = st.one_of(
    _digits.map(quote),
    st.integers(0, 10**30).map(str),
    st.integers(4300, 4400).map(lambda n: "9" * n),  # past what int() converts
    st.text(max_size=30).map(lambda t: quote(t, safe="")),
    st.text("%0123456789abcdefXYZ-_.*", max_size=12),
    st.sampled_from(["json", "", str(SDKAPPID), ADMIN, "4294967295", "4294967296"]),
)
_query_name = st.sampled_from(
    ["sdkappid", "identifier", "usersig", "random", "contenttype", "x", ""]
)


def test_no_query_string_gets_500() -> None:
    """Any query string, any method, on any API path: an envelope over HTTP 200 (or the HTTP
    parser's 400 for a request line over 8 KB), never 500."""
    with served() as serving:

        @given(
            changes=st.lists(st.tuples(_query_name, st.none() | _query_value), max_size=4),
            api=st.sampled_from([*APIS, "openim/nope", "x/y"]),
            method=st.sampled_from(["POST", "POST", "GET", "PUT"]),
        )
        @FUZZ
        def check(changes: list[tuple[str, str | None]], api: str, method: str) -> None:
            query = serving.good_query()
            for name, value in changes:  # a good query, some of it replaced or left out
                if value is None:
                    query.pop(name, None)
                else:
                    query[name] = value
            target = f"/v4/{api}?" + "&".join(f"{name}={value}" for name, value in query.items())
            status, body = serving.send(method, target, b'{"CheckItem": [{"UserID": "x"}]}')
            if status == 400:
                assert len(target) > 8000, body[:200]
            else:
                _assert_envelope(status, body)

        check()


_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
_json = st.recursive(
    _scalar,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_account = st.one_of(st.sampled_from(["alice", "bob", "nobody", ""]), _json)
_field_names = sorted(
    {name for required, optional in FORMATS.values() for name in (*required, *optional)}
)
_element = st.fixed_dictionaries(
    {},
    optional={
        "MsgType": st.one_of(st.sampled_from([*FORMATS, "TIMNopeElem"]), _json),
        "MsgContent": st.one_of(st.dictionaries(st.sampled_from(_field_names), _json), _json),
    },
)
_body = st.fixed_dictionaries(
    {},
    optional={
        "From_Account": _account,
        "To_Account": _account,
        "Operator_Account": _account,
        "Peer_Account": _account,
        "MsgKey": st.one_of(st.sampled_from(["1_2_1790000000", "1_2_3", "x", ""]), _json),
        "LastMsgKey": st.one_of(st.just("1_2_1790000000"), _json),
        "MsgBody": st.one_of(st.lists(_element, max_size=3), _json),
        "CloudCustomData": _json,
        "MaxCnt": st.one_of(st.integers(-5, 2**64 - 1), _json),
        "MinTime": st.one_of(st.integers(-(2**63), 2**64 - 1), _json),
        "MaxTime": st.one_of(st.integers(-(2**63), 2**64 - 1), _json),
        "MsgRandom": st.one_of(st.integers(-1, 2**33), _json),
        "MsgSeq": st.one_of(st.integers(-1, 2**33), _json),
        "MsgTimeStamp": st.one_of(st.integers(-1, 2**33), _json),
        "SyncOtherMachine": st.one_of(st.sampled_from([1, 2]), _json),
        "UserID": st.one_of(st.text(max_size=40), _json),
        "Nick": _json,
        "AccountList": _json,
        "Accounts": _json,
        "CheckItem": st.one_of(st.lists(st.fixed_dictionaries({"UserID": _json})), _json),
    },
)


def _deep(levels: int) -> bytes:
    return (
        b'{"From_Account": "alice", "To_Account": "bob", "MsgKey": "1_2_1790000000", '
        b'"MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "t", "X": '
        + b"[" * levels
        + b"1"
        + b"]" * levels
        + b"}}]}"
    )


def test_no_body_gets_500_and_state_stays_savable() -> None:
    """Any body to any API: an envelope over HTTP 200, and the state can still be saved."""
    with served() as serving:

        @given(
            api=st.sampled_from(APIS),
            raw=st.one_of(
                _body.map(orjson.dumps),
                _json.map(orjson.dumps),
                st.integers(0, 1100).map(_deep),
                st.binary(max_size=64),
            ),
        )
        @FUZZ
        def check(api: str, raw: bytes) -> None:
            _assert_envelope(*serving.api(api, raw))
            assert b"".join(serving.emulator.store.dump_lines())

        check()
        status, _ = serving.send("GET", "/__emulator/state", b"")
        assert status == 200


_knob_value = st.one_of(
    _json,
    st.floats(0, 1),
    st.lists(st.integers(0, 100_000), min_size=1, max_size=3),
    st.dictionaries(st.sampled_from(["1_2_1790000000", "x"]), st.integers(0, 99_999)),
)


def test_no_fault_setting_gets_500_or_breaks_later_requests() -> None:
    """Any body to /__emulator/faults is applied (200) or refused (400); the APIs go on
    answering either way (delays and drops switched off to keep the check quick)."""
    defaults = orjson.loads(orjson.dumps(Faults().as_json()))
    edit = (
        b'{"From_Account": "alice", "To_Account": "bob", "MsgKey": "1_2_1790000000", '
        b'"CloudCustomData": "x"}'
    )
    with served() as serving:

        @given(
            knobs=st.dictionaries(
                st.sampled_from([*Faults.__dataclass_fields__, "nope"]), _knob_value, max_size=4
            ).map(orjson.dumps)
            | st.binary(max_size=32)
        )
        @FUZZ
        def check(knobs: bytes) -> None:
            serving.emulator.faults.update(defaults)
            status, _ = serving.send("POST", "/__emulator/faults", knobs)
            assert status in (200, 400)
            serving.emulator.faults.update({"latency_ms": [0, 0], "slow_rate": 0, "drop_rate": 0})
            status, body = serving.api("openim/modify_c2c_msg", edit)
            if status != 502:
                _assert_envelope(status, body)
            assert serving.send("GET", "/__emulator/faults", b"")[0] == 200

        check()
