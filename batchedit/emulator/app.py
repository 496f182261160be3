"""The emulator's HTTP layer: request checks like the real service, throttling, faults, control.

Every API-level error is HTTP 200 with the envelope (spec section 1, "HTTP status semantics").
The control endpoints live under ``/__emulator/``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import orjson
from aiohttp import web

from batchedit.emulator.apis import Apis, Refusal
from batchedit.emulator.faults import FaultInjector, Faults
from batchedit.emulator.msgformat import depth
from batchedit.emulator.store import Store
from batchedit.emulator.traffic import Traffic
from batchedit.im import usersig
from batchedit.im.elements import MAX_BODY_BYTES
from batchedit.im.history import UINT32_MAX

MAX_DEPTH: Final = 32
"""Deepest nesting of arrays and objects a request body may have (answered 90001 beyond)."""


@dataclass(slots=True)
class EmulatorConfig:
    """How the emulator behaves. ``rate_limit`` is requests per second per API (``None``: off);
    ``retention_days`` is the roaming window (``None``: every message stays visible);
    ``edit_recalled`` says whether a recalled message may be modified (unverified)."""

    sdkappid: int
    secret_key: str = field(repr=False)
    admins: frozenset[str] = frozenset({"administrator"})
    rate_limit: int | None = 200
    rate_code: int = 60007
    unknown_msgkey_code: int = 20026
    seed: int = 0
    state_path: Path | None = None
    retention_days: float | None = 7.0
    edit_recalled: Literal["allow", "refuse"] = "allow"


def _uint(text: str, limit: int) -> int | None:
    """``text`` as a decimal integer in ``[0, limit]`` (ASCII digits only), else ``None``."""
    if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > len(str(limit)):
        return None
    value = int(text)
    return value if value <= limit else None


def _envelope(code: int, info: str, **fields: Any) -> web.Response:
    body = {"ActionStatus": "OK" if code == 0 else "FAIL", "ErrorCode": code, "ErrorInfo": info}
    body.update(fields)
    return web.Response(body=orjson.dumps(body), content_type="application/json")


@dataclass(slots=True)
class Emulator:
    """One emulated SDKAppID: its store, traffic counters and fault knobs."""

    config: EmulatorConfig
    store: Store = field(default_factory=Store)
    faults: Faults = field(default_factory=Faults)
    traffic: Traffic = field(default_factory=Traffic)
    clock: Callable[[], float] = time.time
    """Wall clock, UNIX seconds: UserSig expiry, sendmsg times, the roaming window."""
    monotonic: Callable[[], float] = time.monotonic
    """Clock of the per-second traffic windows (tests pass a virtual one)."""
    _injector: FaultInjector = field(init=False)
    _handlers: Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]] = field(init=False)

    def __post_init__(self) -> None:
        self._injector = FaultInjector(self.faults, self.config.seed)
        admin = min(self.config.admins)
        for account in self.config.admins:
            self.store.import_account(account)
        cfg = self.config
        apis = Apis(
            self.store,
            admin,
            cfg.unknown_msgkey_code,
            self.clock,
            cfg.retention_days,
            cfg.edit_recalled,
        )
        self._handlers = apis.table()

    def app(self) -> web.Application:
        """The aiohttp application serving the REST API and the control endpoints."""
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_get("/__emulator/stats", self._stats)
        app.router.add_post("/__emulator/stats/reset", self._reset_stats)
        app.router.add_get("/__emulator/faults", self._get_faults)
        app.router.add_post("/__emulator/faults", self._set_faults)
        app.router.add_get("/__emulator/state", self._get_state)
        app.router.add_post("/__emulator/save", self._save)
        app.router.add_route("*", "/v4/{service}/{command}", self._api)
        return app

    def save(self) -> Path | None:
        """Write the state file, if one is configured; return its path."""
        path = self.config.state_path
        if path is not None:
            self.store.save(path)
        return path

    def _check_request(self, request: web.Request, api: str) -> tuple[int, str] | None:
        query = request.query
        cfg = self.config
        if request.method != "POST":
            return 60002, "only POST is supported"
        if query.get("contenttype") != "json":
            return 60002, "contenttype must be json"
        if _uint(query.get("random", ""), UINT32_MAX) is None:
            return 60002, "random must be a uint32"
        if "sdkappid" not in query:
            return 60012, "sdkappid is missing from the URL"
        sdkappid = _uint(query["sdkappid"], 2**64 - 1)
        if sdkappid is None or sdkappid != cfg.sdkappid:
            return 60006, f"SDKAppID {query['sdkappid']!r} is invalid"
        identifier = query.get("identifier", "")
        if not identifier:
            return 60004, "identifier is missing from the URL"
        verdict = usersig.verify(
            query.get("usersig", ""), sdkappid, cfg.secret_key, identifier, int(self.clock())
        )
        if verdict is not usersig.SigVerdict.OK:
            return verdict.value, f"UserSig check failed: {verdict.name.lower()}"
        if identifier not in cfg.admins:
            code = 90009 if api.startswith("openim/") else 70403
            return code, "this API needs an App admin identifier"
        return None

    async def _api(self, request: web.Request) -> web.StreamResponse:
        api = f"{request.match_info['service']}/{request.match_info['command']}"
        raw = await request.read()
        traffic = self.traffic.of(api)
        admitted = traffic.arrive(self.monotonic(), self.config.rate_limit)
        body: Any = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = None
        msg_key = body.get("MsgKey") if isinstance(body, dict) else None
        key = msg_key if isinstance(msg_key, str) else None
        fate = self._injector.fate(api, raw, key, self.config.rate_code)
        if key is not None:
            traffic.enter(key)
        try:
            code, info, fields = self._outcome(request, api, raw, body, admitted, fate.code)
            traffic.codes[code] += 1
            response = _envelope(code, info, **fields)
            if fate.delay:
                await asyncio.sleep(fate.delay)
        finally:
            if key is not None:
                traffic.leave(key)
        if fate.drop:
            # Carried out, but the client never hears back: the hard case for a retrying client.
            if request.transport is not None:
                request.transport.close()
            traffic.http_statuses[0] += 1
            return response
        if fate.http_502:
            traffic.http_statuses[502] += 1
            return web.Response(status=502, text="502 Bad Gateway")
        traffic.http_statuses[200] += 1
        return response

    def _outcome(
        self,
        request: web.Request,
        api: str,
        raw: bytes,
        body: Any,
        admitted: bool,
        fault_code: int | None,
    ) -> tuple[int, str, dict[str, Any]]:
        if not admitted:
            return self.config.rate_code, "REST API call frequency over limit", {}
        problem = self._check_request(request, api)
        if problem is not None:
            return problem[0], problem[1], {}
        handler = self._handlers.get(api)
        if handler is None:
            return 60009, f"unknown API {api}", {}
        if fault_code is not None:
            return fault_code, "injected fault", {}
        if len(raw) > MAX_BODY_BYTES:
            return 93000, "JSON packet is larger than 8 KB", {}
        if not isinstance(body, dict):
            return 90001, "Fail to Parse json data of body, Please check it", {}
        if depth(body) > MAX_DEPTH:
            return 90001, f"JSON nests deeper than {MAX_DEPTH} levels", {}
        try:
            fields = handler(body)
        except Refusal as refusal:
            return refusal.code, refusal.info, {}
        return 0, fields.pop("ErrorInfo", ""), fields

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.traffic.as_json(), dumps=lambda o: orjson.dumps(o).decode())

    async def _reset_stats(self, request: web.Request) -> web.Response:
        self.traffic.apis.clear()
        return web.json_response({})

    async def _get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.as_json())

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            self.faults.update(orjson.loads(await request.read()))
        except ValueError as exc:
            return web.json_response({"error": f"bad fault setting: {exc}"}, status=400)
        return web.json_response(self.faults.as_json())

    async def _get_state(self, request: web.Request) -> web.Response:
        text = b"".join(line + b"\n" for line in self.store.dump_lines())
        return web.Response(body=text, content_type="application/x-ndjson")

    async def _save(self, request: web.Request) -> web.Response:
        try:
            path = self.save()
        except OSError as exc:
            return web.json_response({"error": f"cannot save: {exc.strerror}"}, status=503)
        if path is None:
            return web.json_response({"error": "started without --state"}, status=400)
        return web.json_response({"saved": str(path)})
