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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TRANSIENT_CODES = (20004, 20005, 91000, 90992, 20028)


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
    """The first this many requests (of any API) are answered with ``fail_first_code``."""
    fail_first_code: int = 20005

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply a partial update (the control endpoint's body); unknown names: ``KeyError``."""
        names = {f.name for f in dataclasses.fields(self)}
        for name, given in changes.items():
            if name not in names:
                raise KeyError(name)
            value = given
            if name in ("transient_codes", "latency_ms"):
                value = tuple(given)
            elif name == "key_codes":
                value = {str(k): int(v) for k, v in given.items()}
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
    _requests: int = 0

    def fate(self, api: str, body: bytes, msg_key: str | None, rate_code: int) -> Fate:
        """The fate of a request to ``api`` with ``body`` about ``msg_key`` (if any)."""
        f = self.faults
        self._requests += 1
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
        if self._requests <= f.fail_first:
            code = f.fail_first_code
        elif msg_key is not None and msg_key in f.key_codes:
            code = f.key_codes[msg_key]
        elif rng.random() < f.transient_rate:
            code = rng.choice(f.transient_codes)
        elif rng.random() < f.throttle_rate:
            code = rate_code
        return Fate(drop=drop, http_502=http_502, code=code, delay=delay)
