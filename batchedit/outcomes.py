"""Outcomes as values: one per input line, and the summary that folds them."""

from __future__ import annotations

import enum
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from batchedit.ratelimit import RateStats


class Status(enum.Enum):
    """The final outcome of a line."""

    OK = "ok"
    FAILED = "failed"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one input line.

    ``code`` is the last ``ErrorCode`` (``None`` when there was no server answer or nothing was
    sent); ``latency`` is the last attempt's round trip in seconds.
    """

    line: int
    digest: str
    status: Status
    from_account: str | None
    to_account: str | None
    msg_key: str | None
    code: int | None = None
    info: str = ""
    attempts: int = 0
    latency: float = 0.0
    note: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The results-log line (field names are a contract; see the README)."""
        row: dict[str, Any] = {
            "line": self.line,
            "MsgKey": self.msg_key,
            "From_Account": self.from_account,
            "To_Account": self.to_account,
            "outcome": self.status.value,
            "ErrorCode": self.code,
            "ErrorInfo": self.info,
            "attempts": self.attempts,
            "latency_ms": round(self.latency * 1000, 1),
            "hash": self.digest,
        }
        if self.note is not None:
            row["note"] = self.note
        return row


class LatencyHistogram:
    """Percentiles in flat memory: log-spaced buckets 2 % wide, from 0.1 ms up."""

    _BASE = 1.02
    _START = 1e-4

    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()
        self.count = 0

    def add(self, seconds: float) -> None:
        """Count one latency."""
        index = 0 if seconds <= self._START else int(math.log(seconds / self._START, self._BASE))
        self._buckets[index] += 1
        self.count += 1

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0-100) in seconds, to within 2 %; 0 when empty."""
        if not self.count:
            return 0.0
        rank = math.ceil(p / 100 * self.count)
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                return float(self._START * self._BASE ** (index + 0.5))
        return 0.0  # pragma: no cover - the loop always reaches rank


@dataclass(slots=True)
class Summary:
    """The fold of a run's outcomes, plus how the run ended."""

    statuses: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    attempts: int = 0
    reads: int = 0
    """``admin_getroammsg`` requests made for before-images."""
    sent_records: int = 0
    skipped: int = 0
    elapsed: float = 0.0
    first_send: float | None = None
    last_send: float | None = None
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    rate: RateStats | None = None
    stopped: str | None = None
    """``None`` for a complete run; else ``fatal``, ``breaker``, ``budget`` or ``interrupted``."""
    reason: str = ""
    dry_run: bool = False

    def add(self, outcome: Outcome) -> None:
        """Fold one outcome in."""
        self.statuses[outcome.status.value] += 1
        if outcome.status is not Status.INVALID:
            self.codes["none" if outcome.code is None else str(outcome.code)] += 1
        if outcome.attempts:
            self.attempts += outcome.attempts
            self.sent_records += 1
            self.latency.add(outcome.latency)

    def sent_at(self, when: float) -> None:
        """Note an HTTP attempt at ``when`` (monotonic seconds), for the achieved rate."""
        if self.first_send is None:
            self.first_send = when
        self.last_send = when

    @property
    def retries(self) -> int:
        """Attempts beyond the first of each record."""
        return self.attempts - self.sent_records

    @property
    def achieved_rate(self) -> float:
        """Requests per second between the first and the last request sent."""
        if self.first_send is None or self.last_send is None or self.attempts < 2:
            return 0.0
        span = self.last_send - self.first_send
        return (self.attempts - 1) / span if span > 0 else 0.0

    @property
    def total(self) -> int:
        """Lines that reached a final outcome in this run."""
        return sum(self.statuses.values())

    @property
    def all_ok(self) -> bool:
        """Every line of this run (and every skipped one) ended ``ok``."""
        return self.stopped is None and self.statuses["failed"] + self.statuses["invalid"] == 0

    def as_json(self) -> dict[str, Any]:
        """``--summary-json``."""
        rate = self.rate
        return {
            "outcomes": {s.value: self.statuses[s.value] for s in Status},
            "error_codes": dict(sorted(self.codes.items())),
            "skipped_by_resume": self.skipped,
            "attempts": self.attempts,
            "retries": self.retries,
            "history_reads": self.reads,
            "elapsed_s": round(self.elapsed, 3),
            "achieved_rate": round(self.achieved_rate, 2),
            "latency_ms": {
                f"p{p}": round(self.latency.percentile(p) * 1000, 1) for p in (50, 95, 99)
            },
            "rate": None
            if rate is None
            else {
                "target": rate.target,
                "throttled_replies": rate.throttled,
                "cuts": rate.cuts,
                "lowest": round(rate.lowest, 2),
            },
            "stopped": self.stopped,
            "reason": self.reason,
            "dry_run": self.dry_run,
        }

    def render(self) -> str:
        """The human summary printed at the end of a run."""
        data = self.as_json()
        outcomes = data["outcomes"]
        lines = [
            "batchedit summary" + (" (dry run: nothing sent)" if self.dry_run else ""),
            f"  outcomes: ok {outcomes['ok']}, failed {outcomes['failed']}, "
            f"invalid {outcomes['invalid']}"
            + (f"; skipped (already done) {self.skipped}" if self.skipped else ""),
        ]
        if self.codes:
            codes = ", ".join(f"{code}: {n}" for code, n in data["error_codes"].items())
            lines.append(f"  by ErrorCode: {codes}")
        if not self.dry_run:
            lat = data["latency_ms"]
            lines.append(
                f"  requests: {self.attempts} ({self.retries} retries) in {self.elapsed:.1f} s, "
                f"achieved {self.achieved_rate:.1f} req/s"
            )
            lines.append(
                f"  latency: p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms"
            )
            if self.reads:
                lines.append(f"  before-images: {self.reads} admin_getroammsg requests")
            if self.rate is not None and self.rate.throttled:
                lines.append(
                    f"  rate adapted: {self.rate.throttled} throttled replies, "
                    f"{self.rate.cuts} cuts, lowest {self.rate.lowest:.1f} of "
                    f"{self.rate.target:g} req/s"
                )
        if self.stopped is not None:
            lines.append(f"  STOPPED ({self.stopped}): {self.reason}")
        return "\n".join(lines)
