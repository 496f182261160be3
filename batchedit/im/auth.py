"""Credentials: the secret key, and the UserSig made from it and renewed before it expires."""

from __future__ import annotations

import os
import string
import time
from collections.abc import Callable
from pathlib import Path

from batchedit.im import usersig
from batchedit.im.errors import ConfigError


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or a traceback's locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself; pass it on, never print it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


def read_secret_key(secret_key_file: Path | None) -> Secret | None:
    """The secret key from ``--secret-key-file`` or else ``TIM_SECRET_KEY``; ``None`` if neither."""
    if secret_key_file is not None:
        try:
            text = secret_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the secret key file: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"the secret key file {secret_key_file} is not UTF-8 text") from None
        if not text:
            raise ConfigError(f"the secret key file {secret_key_file} is empty")
        return Secret(text)
    value = os.environ.get("TIM_SECRET_KEY", "").strip()
    return Secret(value) if value else None


USERSIG_ALPHABET = frozenset(string.ascii_letters + string.digits + "*-_")
"""Every character a UserSig can hold: base64 with ``+/=`` written ``*-_`` (spec section 9)."""


class SigSource:
    """Hands out the UserSig for the admin identifier.

    With a secret key, a sig valid for ``expire`` seconds (default 2 days) is made on first use and
    made again once less than a quarter of its validity is left, so a long run never sends one that
    is about to expire. With a ready-made UserSig (``TIM_USERSIG``) that sig is used as is and
    cannot be renewed.
    """

    def __init__(
        self,
        sdkappid: int,
        identifier: str,
        *,
        secret_key: Secret | None = None,
        fixed_usersig: Secret | None = None,
        expire: int = 2 * 86400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (secret_key is None) == (fixed_usersig is None):
            raise ConfigError("give either a secret key or a ready-made UserSig, not both or none")
        if fixed_usersig is not None and not set(fixed_usersig.reveal()) <= USERSIG_ALPHABET:
            raise ConfigError(
                "the ready-made UserSig (TIM_USERSIG) holds characters no UserSig has (only "
                "A-Z a-z 0-9 * - _): check how it was copied"
            )
        self.sdkappid = sdkappid
        self.identifier = identifier
        self._key = secret_key
        self._fixed = fixed_usersig
        self._expire = expire
        self._clock = clock
        self._sig: str | None = None
        self._renew_at = 0.0
        self.generation = 0
        """How many sigs were made so far; tells an answer to an old sig from one to a new."""

    def current(self) -> str:
        """The UserSig to send now."""
        if self._fixed is not None:
            return self._fixed.reveal()
        now = self._clock()
        if self._sig is None or now >= self._renew_at:
            return self._make(now)
        return self._sig

    def regenerate(self) -> bool:
        """Make a fresh sig at once (after a 70001); ``False`` when the sig is not ours to renew."""
        if self._key is None:
            return False
        self._make(self._clock())
        return True

    def _make(self, now: float) -> str:
        key = self._key.reveal() if self._key is not None else ""
        self._sig = usersig.generate(self.sdkappid, key, self.identifier, self._expire, int(now))
        self._renew_at = now + self._expire * 0.75
        self.generation += 1
        return self._sig

    def __repr__(self) -> str:
        kind = "secret key" if self._key is not None else "fixed UserSig"
        return f"SigSource(sdkappid={self.sdkappid}, identifier={self.identifier!r}, {kind})"
