"""Retry policy as data: how often, how long, and how long to wait in between."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to give up on a record, and the backoff between attempts.

    ``max_attempts`` bounds attempts that failed for transient reasons (default 6, the first
    included); answers that only said "too many requests" are bounded separately by
    ``max_throttled`` (default 50), since the run's rate adapts to them instead. ``max_seconds``
    bounds the time spent on one record (default 120). Waits are exponential with full jitter:
    uniform in ``[0, min(cap, base * 2**n)]`` seconds (defaults 0.2 and 10). :meth:`zero_wait`
    is the test mode.
    """

    max_attempts: int = 6
    max_throttled: int = 50
    max_seconds: float = 120.0
    base: float = 0.2
    cap: float = 10.0

    @classmethod
    def zero_wait(cls, max_attempts: int = 6) -> RetryPolicy:
        """No waiting between attempts (tests)."""
        return cls(max_attempts=max_attempts, base=0.0, cap=0.0)

    def backoff(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1-based)."""
        ceiling = min(self.cap, self.base * 2 ** (failures - 1))
        return (rng or random).uniform(0.0, ceiling) if ceiling > 0 else 0.0
