"""Fault injection, deterministic under a seed.

Each request's fate is drawn from a generator seeded with the seed, the API, a digest of the
request body and how many times that same request arrived before. So a given request meets the
same faults in every run with the same seed, whatever order concurrent requests arrive in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

DEFAULT_TRANSIENT_CODES = (20004, 20005, 91000, 90992, 20028)
MAX_DELAY_SECONDS: Final = 86400.0
"""Longest delay a knob may ask for."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"expected a number from {low:g} to {high:g}, got {_shown(value)}")
    return float(value)


def _integer(value: Any, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        shown = "an integer" if low is None else f"an integer >= {low}"
        raise ValueError(f"expected {shown}, got {_shown(value)}")
    return value


def _rate(value: Any) -> float:
    return _number(value, 0.0, 1.0)


def _codes(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"expected a non-empty array of codes, got {_shown(value)}")
    return tuple(_integer(code) for code in value)


def _range_ms(value: Any) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"expected [MIN, MAX] in milliseconds, got {_shown(value)}")
    low, high = (_number(v, 0.0, MAX_DELAY_SECONDS * 1000) for v in value)
    if low > high:
        raise ValueError(f"expected MIN <= MAX, got {_shown(value)}")
    return low, high


def _key_codes(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ValueError(f"expected an object of MsgKey: code, got {_shown(value)}")
    return {key: _integer(code) for key, code in value.items()}


_PARSERS: Final[Mapping[str, Callable[[Any], Any]]] = {
    "transient_rate": _rate,
    "transient_codes": _codes,
    "throttle_rate": _rate,
    "http_502_rate": _rate,
    "latency_ms": _range_ms,
    "slow_rate": _rate,
    "slow_seconds": lambda v: _number(v, 0.0, MAX_DELAY_SECONDS),
    "drop_rate": _rate,
    "key_codes": _key_codes,
    "fail_first": lambda v: _integer(v, 0),
    "fail_first_code": _integer,
}


@dataclass(slots=True)
class Faults:
    """The knobs. Rates are shares of requests (0 to 1); times are milliseconds or seconds."""

    transient_rate: float = 0.0
    """Share of requests answered with one of ``transient_codes``."""
    transient_codes: tuple[int, ...] = DEFAULT_TRANSIENT_CODES
    throttle_rate: float = 0.0
    """Share of requests answered with the rate-limit code, besides the real frequency limit."""
    http_502_rate: float = 0.0
    """Share of requests answered HTTP 502 with no envelope."""
    latency_ms: tuple[float, float] = (0.0, 0.0)
    """Every answer is delayed by a uniform draw from this range, in milliseconds."""
    slow_rate: float = 0.0
    """Share of requests whose answer is delayed by ``slow_seconds`` (after being carried out)."""
    slow_seconds: float = 60.0
    drop_rate: float = 0.0
    """Share of connections closed without an answer (after the request was carried out)."""
    key_codes: dict[str, int] = field(default_factory=dict)
    """MsgKey → ErrorCode answered to every request about that message."""
    fail_first: int = 0
    """The next this many requests (of any API) are answered with ``fail_first_code``; counts
    down as they arrive, so setting it at run time fails the requests that follow."""
    fail_first_code: int = 20005

    def update(self, changes: Any) -> None:
        """Apply a partial update (the control endpoint's parsed body), all or nothing.

        ``ValueError`` names the first unknown knob or ill-typed value; nothing changes then.
        """
        if not isinstance(changes, dict):
            raise ValueError(f"expected an object of knobs, got {_shown(changes)}")
        parsed = {}
        for name, given in changes.items():
            parser = _PARSERS.get(name)
            if parser is None:
                raise ValueError(f"unknown knob {_shown(name)}")
            try:
                parsed[name] = parser(given)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        for name, value in parsed.items():
            setattr(self, name, value)

    def as_json(self) -> dict[str, Any]:
        """The knobs as JSON."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class Fate:
    """What happens to one request."""

    drop: bool = False
    http_502: bool = False
    code: int | None = None
    delay: float = 0.0
    """Seconds before the answer goes out."""


@dataclass(slots=True)
class FaultInjector:
    """Draws each request's :class:`Fate`."""

    faults: Faults
    seed: int = 0
    _seen: Counter[tuple[str, bytes]] = field(default_factory=Counter)

    def fate(self, api: str, body: bytes, msg_key: str | None, rate_code: int) -> Fate:
        """The fate of a request to ``api`` with ``body`` about ``msg_key`` (if any)."""
        f = self.faults
        digest = hashlib.blake2b(body, digest_size=16).digest()
        occurrence = self._seen[(api, digest)]
        self._seen[(api, digest)] += 1
        rng = random.Random(f"{self.seed}|{api}|{digest.hex()}|{occurrence}")
        low, high = f.latency_ms
        delay = rng.uniform(low, high) / 1000 if high > 0 else 0.0
        if rng.random() < f.slow_rate:
            delay += f.slow_seconds
        drop = rng.random() < f.drop_rate
        http_502 = rng.random() < f.http_502_rate
        code: int | None = None
        if f.fail_first > 0:
            f.fail_first -= 1
            code = f.fail_first_code
        elif msg_key is not None and msg_key in f.key_codes:
            code = f.key_codes[msg_key]
        elif rng.random() < f.transient_rate:
            code = rng.choice(f.transient_codes)
        elif rng.random() < f.throttle_rate:
            code = rate_code
        return Fate(drop=drop, http_502=http_502, code=code, delay=delay)
