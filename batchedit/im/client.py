"""The IM REST client: one ``aiohttp.ClientSession``, every answer a :class:`Reply` value.

A call never raises for anything the network or the server does: HTTP errors, timeouts, dropped
connections and garbage bodies become a ``Reply`` with ``code=None`` (spec section 1, "HTTP status
semantics"). The UserSig never leaves this module except inside the request URL; wherever a URL
is shown it goes through :func:`redact`.
"""

from __future__ import annotations

import asyncio
import functools
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp.connector import Connection
from aiohttp.tracing import Trace
from yarl import URL

from batchedit.im.auth import SigSource
from batchedit.im.errors import ConfigError, ErrorClass, classify

REGIONS: Final[Mapping[str, str]] = {
    "china": "console.tim.qq.com",
    "singapore": "adminapisgp.im.qcloud.com",
    "seoul": "adminapikr.im.qcloud.com",
    "tokyo": "adminapijpn.im.qcloud.com",
    "frankfurt": "adminapiger.im.qcloud.com",
    "mumbai": "adminapiind.im.qcloud.com",
    "silicon-valley": "adminapiusa.im.qcloud.com",
    "jakarta": "adminapiidn.im.qcloud.com",
}
"""Region name → primary REST domain (spec section 1, "Regional domains")."""

_JSON_HEADERS: Final = {"Content-Type": "application/json"}
_SECRET_PARAM = re.compile(r"(usersig(?:=|%3d))[^&\s'\"]*", re.IGNORECASE)
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
MAX_ANSWER_BYTES: Final = 2 * 1024 * 1024
"""A larger answer is an error. A full ``admin_getroammsg`` page (100 messages of at most 8 KB)
stays under 1 MiB."""
MAX_INFO_CHARS: Final = 1000
"""Network text (``ErrorInfo``, a connection error) is cut to this many characters."""
_COUNTERPARTS: Final = {"*": "*+-", "-": "-/_", "_": "_="}
"""What a UserSig character (URL-safe base64: ``*-_`` for ``+/=``) may be echoed as: itself, its
standard base64 character, or its RFC 4648 URL-safe one."""


def _spelled(char: str) -> str:
    """A pattern for ``char`` of a secret as an echo may write it: itself or a counterpart, as
    is or percent-encoded (hex in either case, once or twice)."""
    options = []
    for same in _COUNTERPARTS.get(char, char):
        quoted = "".join(f"%(?:25)?{byte:02x}" for byte in same.encode())
        options.append(f"{re.escape(same)}|(?i:{quoted})")
    return "|".join(options)


@functools.lru_cache(maxsize=64)
def _echoed(secret: str) -> re.Pattern[str]:
    """The ways a secret may be written back: as is; URL-quoted (in either case, or twice); in
    standard or RFC 4648 URL-safe base64 (a UserSig is Tencent's URL-safe base64 that a server
    may echo converted), with or without its ``_`` padding; wrapped over lines. Worked out once
    per secret, not per answer."""
    body = secret.rstrip("_") or secret
    padding = len(secret) - len(body)
    chars = [f"(?:{_spelled(char)})" for char in body]
    chars += [f"(?:\\s*+(?:{_spelled('_')}))?"] * padding
    return re.compile("\\s*+".join(chars[: len(body)]) + "".join(chars[len(body) :]))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each of ``secrets`` and every ``usersig=...`` query value replaced by
    ``<redacted>``. A secret is also found URL-quoted, in other base64 alphabets and wrapped
    over lines (see :func:`_echoed`)."""
    for secret in secrets:
        if secret:
            text = _echoed(secret).sub("<redacted>", text)
    return _SECRET_PARAM.sub(r"\1<redacted>", text)


def network_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Text that came from the network, safe to log and print: redacted (see :func:`redact`),
    control and bidi characters escaped, cut to :data:`MAX_INFO_CHARS`."""
    if (
        len(text) <= MAX_INFO_CHARS
        and text.isascii()
        and text.isprintable()
        and "usersig" not in text.lower()
        and not any(_echoed(secret).search(text) for secret in secrets if secret)
    ):
        return text  # the usual short answer ("succeed"): nothing to redact, escape or cut
    text = _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], redact(text, secrets))
    if len(text) > MAX_INFO_CHARS:
        text = f"{text[:MAX_INFO_CHARS]}... ({len(text) - MAX_INFO_CHARS} more characters)"
    return text


def resolve_endpoint(region: str | None = None, base_url: str | None = None) -> str:
    """The base URL from a region name or an explicit URL.

    An explicit URL keeps its path (a reverse proxy at ``https://proxy.example.com/tim`` gets
    ``/tim/v4/...``); one with credentials, a query, a fragment or a ``v4`` path segment is
    refused rather than cut, since requests would not go where it says.
    """
    if base_url:
        url = URL(base_url)
        if url.user is not None or url.password is not None:
            raise ConfigError("base URL must not hold credentials (user:password@)")
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(
                f"base URL must look like https://host[:port], got {redact(base_url)!r}"
            )
        if url.query_string or url.fragment or "v4" in url.parts:
            raise ConfigError(
                f"base URL must be https://host[:port][/path] without /v4, a query or a fragment "
                f"(batchedit adds /v4/... itself), got {redact(base_url)!r}"
            )
        return str(url).rstrip("/")
    if region:
        host = REGIONS.get(region.lower())
        if host is None:
            raise ConfigError(f"unknown region {region!r}; known: {', '.join(REGIONS)}")
        return f"https://{host}"
    raise ConfigError("no endpoint: set TIM_REGION (or --region) or TIM_BASE_URL (or --base-url)")


ROAM: Final = "openim/admin_getroammsg"
MODIFY: Final = "openim/modify_c2c_msg"

Caller = Callable[[str, Mapping[str, Any]], Awaitable["Reply"]]
"""Anything that sends a body to an API and returns the answer: ``ImClient.call``, or a wrapper
that adds rate limiting and retries."""


def roam_query(
    operator: str,
    peer: str,
    min_time: int,
    max_time: int,
    max_cnt: int = 100,
    last_msg_key: str | None = None,
) -> dict[str, Any]:
    """The ``admin_getroammsg`` request body (spec section 3, current field names)."""
    body: dict[str, Any] = {
        "Operator_Account": operator,
        "Peer_Account": peer,
        "MaxCnt": max_cnt,
        "MinTime": min_time,
        "MaxTime": max_time,
    }
    if last_msg_key is not None:
        body["LastMsgKey"] = last_msg_key
    return body


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer to one HTTP attempt.

    ``code`` is the envelope's ``ErrorCode``, or ``None`` when there was no envelope; ``info`` is
    ``ErrorInfo`` or our description of what went wrong; ``latency`` is in seconds. ``reached``
    is ``False`` when no connection could be made (so the request never left); ``timed_out``
    when no answer came in time (so the request may still be carried out later).
    """

    code: int | None
    info: str
    data: Mapping[str, Any] = field(default_factory=dict)
    http_status: int | None = 200
    latency: float = 0.0
    reached: bool = True
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """Whether the server answered ``ErrorCode`` 0."""
        return self.code == 0

    @property
    def error_class(self) -> ErrorClass:
        """What the answer means for a retrying caller (see :mod:`batchedit.im.errors`)."""
        return classify(self.code, self.http_status)


@dataclass(frozen=True, slots=True)
class RoamMessage:
    """One item of an ``admin_getroammsg`` ``MsgList`` (spec section 3)."""

    from_account: str
    to_account: str
    msg_seq: int
    msg_random: int
    msg_timestamp: int
    msg_key: str
    flag_bits: int
    body: list[Any]
    cloud_custom_data: str | None
    is_peer_read: int

    @property
    def recalled(self) -> bool:
        """``MsgFlagBits == 8``: the message was recalled."""
        return self.flag_bits == 8

    @classmethod
    def from_json(cls, item: Any) -> RoamMessage:
        """Build from one ``MsgList`` element; ``ValueError`` names what is wrong with it."""
        if not isinstance(item, dict):
            raise ValueError("a MsgList item is not an object")
        for name in ("From_Account", "To_Account", "MsgKey"):
            if not isinstance(item.get(name), str):
                raise ValueError(f"a MsgList item's {name} is not a string")
        body = item.get("MsgBody", [])
        if not isinstance(body, list):
            raise ValueError("a MsgList item's MsgBody is not an array")
        ccd = item.get("CloudCustomData")
        return cls(
            from_account=item["From_Account"],
            to_account=item["To_Account"],
            msg_seq=_whole(item, "MsgSeq"),
            msg_random=_whole(item, "MsgRandom"),
            msg_timestamp=_whole(item, "MsgTimeStamp"),
            msg_key=item["MsgKey"],
            flag_bits=_whole(item, "MsgFlagBits", 0),
            body=body,
            cloud_custom_data=ccd if isinstance(ccd, str) else None,
            is_peer_read=_whole(item, "IsPeerRead", 0),
        )


def _whole(item: Mapping[str, Any], name: str, default: int | None = None) -> int:
    value = item.get(name, default)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 30:
        return int(value)
    raise ValueError(f"a MsgList item's {name} is not a whole number")


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes | None:
    """The body, or ``None`` when it is over :data:`MAX_ANSWER_BYTES` (read no further)."""
    length = response.content_length
    if length is not None and length > MAX_ANSWER_BYTES:
        return None
    if length is not None and "Content-Encoding" not in response.headers:
        return await response.read()
    # Chunked or compressed (Content-Length counts the compressed bytes): count as it comes.
    chunks = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


_ON_DEPARTURE: ContextVar[Callable[[], None] | None] = ContextVar("on_departure", default=None)
"""The ``on_departure`` of the :meth:`ImClient.call_raw` running in this task, until it is told."""


class _Connector(aiohttp.TCPConnector):
    """A connector that tells the request it connects (see :meth:`ImClient.call_raw`) when it
    leaves: once it has its connection, new or reused, just before its bytes are written.

    aiohttp (on Python 3.11) writes a request's headers and body from a task of its own that it
    starts right after connecting, so its first step runs in the loop's next round, after
    whatever else is ready by then. The notice is queued just before that task, so it runs just
    before the write, not a busy round earlier: a request never counts as gone before it is.
    """

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature, overridden
    ) -> Connection:
        # aiohttp connects in the task that called session.post, so the variable is the caller's.
        connection = await super().connect(req, traces, timeout)
        on_departure = _ON_DEPARTURE.get()
        if on_departure is not None:
            _ON_DEPARTURE.set(None)
            asyncio.get_running_loop().call_soon(on_departure)
        return connection


class ImClient:
    """An async context manager over one keep-alive ``ClientSession`` to one IM endpoint.

    ``timeout`` is seconds per HTTP attempt (the server's own limit is 3 s, spec section 1);
    ``max_connections`` bounds open connections (0: no bound); ``ssl_context`` says whom to trust
    over https (see :func:`batchedit.im.tls.client_context`; ``None``: the system's CAs). Create it
    inside the running loop.
    """

    def __init__(
        self,
        endpoint: str,
        sig: SigSource,
        *,
        timeout: float = 10.0,
        max_connections: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.sig = sig
        self.timeout = timeout
        self._max_connections = max_connections
        self._ssl = ssl_context
        self._identifier = quote(sig.identifier, safe="")
        self._sigs: set[str] = set()
        """Every UserSig sent so far: redacted wherever an answer repeats one."""
        self._api_urls: dict[str, URL] = {}
        """Each API's URL without its query, parsed once."""
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ImClient:
        # Long keep-alive: a new connection costs a handshake, and a request that waits for one
        # reaches the server late, squeezing the requests behind it into the same second.
        connector = _Connector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=60,
            ssl=self._ssl or True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            raise_for_status=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def __repr__(self) -> str:
        return f"ImClient({self.endpoint!r}, {self.sig!r})"

    def _url(self, api: str) -> URL:
        # The UserSig alphabet (A-Za-z0-9*-_) needs no escaping (spec section 1, "URL shape").
        sig = self.sig.current()
        self._sigs.add(sig)
        # Built onto the API's URL, parsed once: parsing each new 300-character URL (each has
        # its own random) cost about 2 µs per request.
        base = self._api_urls.get(api)
        if base is None:
            base = self._api_urls[api] = URL(f"{self.endpoint}/v4/{api}", encoded=True)
        return URL.build(
            scheme=base.scheme,
            authority=base.raw_authority,
            path=base.raw_path,
            query_string=f"sdkappid={self.sig.sdkappid}&identifier={self._identifier}"
            f"&usersig={sig}&random={random.getrandbits(32)}&contenttype=json",
            encoded=True,
        )

    async def call(self, api: str, body: Mapping[str, Any]) -> Reply:
        """POST ``body`` to ``v4/<api>`` (e.g. ``openim/modify_c2c_msg``) and return the answer."""
        return await self.call_raw(api, orjson.dumps(body))

    async def call_raw(
        self, api: str, payload: bytes, on_departure: Callable[[], None] | None = None
    ) -> Reply:
        """As :meth:`call`, with the JSON body already encoded.

        Every text of the answer that reaches ``Reply.info`` passes :func:`network_text`: a
        proxy that echoes the request URL cannot leak the UserSig. An answer over
        :data:`MAX_ANSWER_BYTES` is an error without an envelope. ``on_departure()`` is called
        once the request has its connection, just before it is written (not at all if it never
        gets one); it must not raise.
        """
        if self._session is None:
            raise RuntimeError("ImClient used outside 'async with'")
        told = _ON_DEPARTURE.set(on_departure)
        try:
            return await self._post(self._session, api, payload)
        finally:
            _ON_DEPARTURE.reset(told)

    async def _post(self, session: aiohttp.ClientSession, api: str, payload: bytes) -> Reply:
        start = time.perf_counter()
        try:
            async with session.post(
                self._url(api), data=payload, headers=_JSON_HEADERS
            ) as response:
                status = response.status
                raw = await _read_bounded(response)
        except TimeoutError:
            info = f"no answer within {self.timeout:g} s"
            return Reply(None, info, {}, None, self._since(start), timed_out=True)
        except aiohttp.ClientConnectorError as exc:
            info = redact(f"{type(exc).__name__}: {exc}")
            return Reply(None, info, {}, None, self._since(start), reached=False)
        except aiohttp.ClientError as exc:
            info = network_text(f"{type(exc).__name__}: {exc}", self._sigs)
            return Reply(None, info, {}, None, self._since(start))
        latency = self._since(start)
        if raw is None:
            info = f"answer larger than {MAX_ANSWER_BYTES // 1024 // 1024} MiB, not read"
            return Reply(None, info, {}, status, latency)
        if status != 200:
            return Reply(None, f"HTTP {status}", {}, status, latency)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return Reply(None, "answer is not JSON", {}, status, latency)
        code = data.get("ErrorCode") if isinstance(data, dict) else None
        if not isinstance(code, int) or isinstance(code, bool):
            return Reply(None, "answer has no ErrorCode", {}, status, latency)
        info = network_text(str(data.get("ErrorInfo", "")), self._sigs)
        return Reply(code, info, data, status, latency)

    @staticmethod
    def _since(start: float) -> float:
        return time.perf_counter() - start

    async def modify_c2c_msg(self, edit: Mapping[str, Any]) -> Reply:
        """``openim/modify_c2c_msg``: overwrite MsgBody and/or CloudCustomData (section 2)."""
        return await self.call(MODIFY, edit)

    async def admin_getroammsg(
        self,
        operator: str,
        peer: str,
        min_time: int,
        max_time: int,
        max_cnt: int = 100,
        last_msg_key: str | None = None,
    ) -> Reply:
        """``openim/admin_getroammsg``: one page of a conversation's history (section 3)."""
        body = roam_query(operator, peer, min_time, max_time, max_cnt, last_msg_key)
        return await self.call(ROAM, body)

    async def sendmsg(
        self,
        from_account: str,
        to_account: str,
        msg_body: Sequence[Mapping[str, Any]],
        *,
        cloud_custom_data: str | None = None,
        msg_random: int | None = None,
        msg_seq: int | None = None,
        msg_timestamp: int | None = None,
        sync_other_machine: int | None = None,
    ) -> Reply:
        """``openim/sendmsg`` (section 4); the reply carries ``MsgTime`` and ``MsgKey``."""
        body: dict[str, Any] = {
            "From_Account": from_account,
            "To_Account": to_account,
            "MsgRandom": random.getrandbits(32) if msg_random is None else msg_random,
            "MsgBody": list(msg_body),
        }
        optional = {
            "CloudCustomData": cloud_custom_data,
            "MsgSeq": msg_seq,
            "MsgTimeStamp": msg_timestamp,
            "SyncOtherMachine": sync_other_machine,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return await self.call("openim/sendmsg", body)

    async def admin_msgwithdraw(self, from_account: str, to_account: str, msg_key: str) -> Reply:
        """``openim/admin_msgwithdraw``: recall a message (section 5)."""
        body = {"From_Account": from_account, "To_Account": to_account, "MsgKey": msg_key}
        return await self.call("openim/admin_msgwithdraw", body)

    async def account_import(
        self, user_id: str, nick: str | None = None, face_url: str | None = None
    ) -> Reply:
        """``im_open_login_svc/account_import`` (section 6)."""
        body = {"UserID": user_id, "Nick": nick, "FaceUrl": face_url}
        return await self.call(
            "im_open_login_svc/account_import", {k: v for k, v in body.items() if v is not None}
        )

    async def multiaccount_import(self, user_ids: Sequence[str]) -> Reply:
        """``im_open_login_svc/multiaccount_import``, at most 100 accounts (section 6)."""
        body = {"AccountList": [{"UserID": user_id} for user_id in user_ids]}
        return await self.call("im_open_login_svc/multiaccount_import", body)

    async def account_check(self, user_ids: Sequence[str]) -> Reply:
        """``im_open_login_svc/account_check``, at most 100 accounts (section 6)."""
        body = {"CheckItem": [{"UserID": user_id} for user_id in user_ids]}
        return await self.call("im_open_login_svc/account_check", body)
