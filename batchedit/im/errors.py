"""What each Tencent IM error code means for a bulk edit: one table, one lookup.

The table follows spec section 8 ("Classification summary for the bulk-edit tool") and the
``modify_c2c_msg`` table of section 2. Codes that the spec does not list are permanent for the
record: an unknown answer is never retried blindly, and never stops a run on its own.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final


class ErrorClass(enum.Enum):
    """How the pipeline reacts to an answer."""

    OK = "ok"
    TRANSIENT = "transient"
    """Retry the record with exponential backoff."""
    RATE_LIMITED = "rate_limited"
    """Slow the whole run down, then retry the record."""
    SIG_EXPIRED = "sig_expired"
    """Regenerate the UserSig once, then retry."""
    FATAL = "fatal"
    """Stop the run: credentials, permissions or the app itself are wrong."""
    PERMANENT = "permanent"
    """This record cannot succeed; record it and go on."""


_T = ErrorClass.TRANSIENT
_R = ErrorClass.RATE_LIMITED
_S = ErrorClass.SIG_EXPIRED
_F = ErrorClass.FATAL
_P = ErrorClass.PERMANENT

CODE_CLASSES: Final[Mapping[int, ErrorClass]] = {
    0: ErrorClass.OK,
    # Rate limiting (section 8, public codes).
    60007: _R,
    60011: _R,
    60018: _R,
    60019: _R,
    # Transient, server-internal.
    20004: _T,
    20005: _T,
    20018: _T,
    20028: _T,  # concurrent modification conflict, "try again"
    60008: _T,
    60013: _T,
    60014: _T,
    70169: _T,
    70202: _T,
    70500: _T,
    80003: _T,
    90992: _T,
    90994: _T,
    90995: _T,
    91000: _T,
    # UserSig expired or invalidated: a fresh one fixes it.
    70001: _S,
    70052: _S,
    # UserSig, identity and permission problems that a fresh sig from the same key cannot fix.
    20002: _F,
    60004: _F,
    60005: _F,
    60010: _F,
    70002: _F,
    70003: _F,
    70005: _F,
    70009: _F,
    70013: _F,
    70014: _F,
    70016: _F,
    70020: _F,
    # Section 8 files 70050 under rate limiting "though it signals a bad UserSig": the lock
    # comes from repeated failed sig checks, so retrying renews it. Stop; let the user fix the key.
    70050: _F,
    70051: _F,
    70114: _F,
    70403: _F,
    90009: _F,
    # The request URL itself is wrong, so every request of the run fails the same way.
    60002: _F,
    60009: _F,
    60012: _F,
    # The app itself cannot serve the run.
    60006: _F,
    60016: _F,
    60017: _F,
    60020: _F,
    60021: _F,
    # Request and data errors of one record.
    20001: _P,
    20003: _P,
    20006: _P,
    20022: _P,
    20023: _P,
    20026: _P,
    60003: _P,
    60015: _P,
    70107: _P,
    70402: _P,
    80001: _P,
    80002: _P,
    80004: _P,
    90001: _P,
    90002: _P,
    90003: _P,
    90005: _P,
    90006: _P,
    90007: _P,
    90008: _P,
    90010: _P,
    90012: _P,
    90048: _P,
    90054: _P,
    93000: _P,
}


def classify(code: int | None, http_status: int | None = 200) -> ErrorClass:
    """Classify an answer.

    ``code`` is the body's ``ErrorCode``, or ``None`` when no JSON envelope came back (HTTP error,
    timeout, dropped connection, garbage body). HTTP 429 is treated as rate limiting (the spec
    says it is undocumented but possible). Any other 4xx means the request cannot succeed as
    sent (typically a wrong base URL answering 404): fatal, since every request would get the
    same. 5xx, timeouts, dropped connections and garbage bodies are transient.
    """
    if code is None:
        if http_status == 429:
            return _R
        return _F if http_status is not None and 400 <= http_status < 500 else _T
    return CODE_CLASSES.get(code, _P)


class ImError(Exception):
    """Base of every error raised on purpose (batchedit re-exports it as ``BatchEditError``).

    Its message is safe to show: it never holds a secret key or a UserSig.
    """


class ConfigError(ImError):
    """The run cannot start: a setting is missing or wrong. Nothing was sent."""


class ApiError(ImError):
    """A call that the caller cannot continue without failed."""

    def __init__(self, api: str, code: int | None, info: str) -> None:
        self.api = api
        self.code = code
        self.info = info
        shown = "no answer" if code is None else f"ErrorCode {code}"
        super().__init__(f"{api}: {shown}: {info}")


FATAL_HINTS: Final[Mapping[int, str]] = {
    20002: "the UserSig is invalid: check TIM_SDKAPPID, TIM_ADMIN and the secret key",
    60002: "the server cannot parse the request URL: check the base URL (scheme and host only)",
    60009: "the server knows no such API path: check the base URL (scheme and host only)",
    60012: "the SDKAppID did not reach the server: check the base URL and any proxy in between",
    60004: "identifier or UserSig wrong: check TIM_ADMIN and the secret key",
    60005: "identifier or UserSig wrong: check TIM_ADMIN and the secret key",
    60006: "the SDKAppID is invalid: check TIM_SDKAPPID and the region",
    60010: "the identifier is not an App admin: set TIM_ADMIN to an admin account (console)",
    60016: "the SDKAppID is disabled",
    60017: "requests are disabled for this app",
    60020: "the Pro package has expired or is not active yet",
    60021: "this machine's IP is not allowed: check the console's IP allowlist",
    70001: "the UserSig stays expired after a fresh one: check this machine's clock",
    70002: "the UserSig is empty",
    70003: "the UserSig cannot be parsed: it may be truncated (check TIM_USERSIG)",
    70005: "the UserSig is invalid",
    70009: "the UserSig does not verify: the secret key belongs to another app",
    70013: "the UserSig was made for another identifier than TIM_ADMIN",
    70014: "the UserSig was made for another SDKAppID than TIM_SDKAPPID",
    70016: "no key for this SDKAppID here: check the SDKAppID against the region",
    70020: "SDKAppID not found here: check the SDKAppID against the region",
    70050: "locked after too many failed UserSig checks: fix the key, wait a minute",
    70052: "the UserSig was invalidated and could not be renewed (TIM_USERSIG is fixed)",
    70403: "the identifier is not an App admin: set TIM_ADMIN to an admin account (console)",
    90009: "the identifier is not an App admin: set TIM_ADMIN to an admin account (console)",
}
"""What to fix when a code stops the run."""


def fatal_reason(code: int | None, info: str) -> str:
    """The message shown when ``code`` stops the run: the code, the server's words, the fix.

    ``code`` ``None`` is an HTTP error without an envelope; ``info`` then names the status.
    """
    if code is None:
        return f"{info} from the server: it is not the IM REST API; check the base URL or region"
    hint = FATAL_HINTS.get(code, "see the ErrorCode in the Tencent IM error code list")
    return f"ErrorCode {code} ({info}): {hint}"
