"""UserSig (TLSSigAPIv2, ``"TLS.ver": "2.0"``): generation and verification.

The algorithm is spec section 9: HMAC-SHA256 over a fixed string, wrapped in a small JSON document,
zlib-compressed and encoded in a URL-safe base64 variant (``+``→``*``, ``/``→``-``, ``=``→``_``).
Verification never raises on garbage: every failure is a :class:`SigVerdict`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
import time
import zlib
from dataclasses import dataclass

DEFAULT_EXPIRE = 180 * 86400
"""Validity of a generated UserSig in seconds when none is given (180 days, as the console)."""

_TO_URL = str.maketrans("+/=", "*-_")
_FROM_URL = str.maketrans("*-_", "+/=")


class SigVerdict(enum.Enum):
    """The result of checking a UserSig, with the error code the real service answers for it."""

    OK = 0
    EMPTY = 70002
    EXPIRED = 70001
    MALFORMED = 70003
    BAD_SIGNATURE = 70009
    IDENTIFIER_MISMATCH = 70013
    SDKAPPID_MISMATCH = 70014


@dataclass(frozen=True, slots=True)
class SigDocument:
    """The decoded JSON document inside a UserSig."""

    identifier: str
    sdkappid: int
    time: int
    expire: int
    sig: str

    @property
    def expires_at(self) -> int:
        """UNIX second after which the UserSig is expired."""
        return self.time + self.expire


def _hmac(key: str, identifier: str, sdkappid: int, curr_time: int, expire: int) -> str:
    content = (
        f"TLS.identifier:{identifier}\n"
        f"TLS.sdkappid:{sdkappid}\n"
        f"TLS.time:{curr_time}\n"
        f"TLS.expire:{expire}\n"
    )
    digest = hmac.new(key.encode("utf-8"), content.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def generate(
    sdkappid: int,
    key: str,
    identifier: str,
    expire: int = DEFAULT_EXPIRE,
    now: int | None = None,
) -> str:
    """A UserSig for ``identifier``, valid ``expire`` seconds from ``now`` (UNIX seconds)."""
    curr_time = int(time.time()) if now is None else now
    document = {
        "TLS.ver": "2.0",
        "TLS.identifier": identifier,
        "TLS.sdkappid": sdkappid,
        "TLS.expire": expire,
        "TLS.time": curr_time,
        "TLS.sig": _hmac(key, identifier, sdkappid, curr_time, expire),
    }
    compressed = zlib.compress(json.dumps(document).encode("utf-8"))
    return base64.b64encode(compressed).decode("ascii").translate(_TO_URL)


def decode(usersig: str) -> SigDocument | None:
    """Decode a UserSig's document without checking it; ``None`` when it is not a UserSig at all."""
    try:
        raw = base64.b64decode(usersig.translate(_FROM_URL).encode("ascii"), validate=True)
        document = json.loads(zlib.decompress(raw))
    except (binascii.Error, UnicodeError, ValueError, zlib.error, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    identifier = document.get("TLS.identifier")
    sig = document.get("TLS.sig")
    numbers = [document.get(name) for name in ("TLS.sdkappid", "TLS.time", "TLS.expire")]
    ints = [n for n in numbers if isinstance(n, int) and not isinstance(n, bool)]
    if not isinstance(identifier, str) or not isinstance(sig, str) or len(ints) != 3:
        return None
    if "TLS.userbuf" in document:
        # IM sigs carry no userbuf; one with it is a TRTC PrivateMapKey, not a UserSig.
        return None
    sdkappid, curr_time, expire = ints
    return SigDocument(identifier, sdkappid, curr_time, expire, sig)


def verify(
    usersig: str,
    sdkappid: int,
    key: str,
    identifier: str,
    now: int | None = None,
) -> SigVerdict:
    """Check ``usersig`` as the server does (spec section 9, "Verification"), in the same order."""
    if not usersig:
        return SigVerdict.EMPTY
    document = decode(usersig)
    if document is None:
        return SigVerdict.MALFORMED
    if document.sdkappid != sdkappid:
        return SigVerdict.SDKAPPID_MISMATCH
    if document.identifier != identifier:
        return SigVerdict.IDENTIFIER_MISMATCH
    curr_time = int(time.time()) if now is None else now
    if curr_time > document.expires_at:
        return SigVerdict.EXPIRED
    expected = _hmac(key, document.identifier, document.sdkappid, document.time, document.expire)
    if not hmac.compare_digest(expected.encode("ascii"), document.sig.encode("utf-8")):
        return SigVerdict.BAD_SIGNATURE
    return SigVerdict.OK
