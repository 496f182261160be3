"""Outcomes as values: one per input line, and the summary that folds them."""

from __future__ import annotations

import enum
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from batchedit.ratelimit import RateStats


class Status(enum.Enum):
    """The final outcome of a line."""

    OK = "ok"
    FAILED = "failed"
    INVALID = "invalid"
    CONFLICT = "conflict"
    """``undo``: the message changed since the run wrote it; nothing was sent."""
    MATCH = "match"
    """``verify``: the message reads as the line says."""
    MISMATCH = "mismatch"
    """``verify``: some field the line sets reads otherwise."""
    MISSING = "missing"
    """``verify``: no such message."""

    @property
    def good(self) -> bool:
        """Whether a line that ended so needs nothing more (``ok``, ``match``)."""
        return self is Status.OK or self is Status.MATCH


@dataclass(frozen=True, slots=True)
class Outcomes:
    """The outcomes one command gives its lines, in the order it shows them (the good one
    first), and, for a dry run, each one shown with its name."""

    shown: tuple[Status, ...]
    dry: tuple[tuple[Status, str], ...] = ()
    command: str = "run"
    """The command that gives them."""

    @property
    def good(self) -> Status:
        """The outcome of a line that needs nothing more."""
        return self.shown[0]

    def resume_codes(self) -> dict[str, int]:
        """What ``--resume`` makes of each outcome: 1 done, 2 done but never applied
        (``invalid``), 0 to do again."""
        return {s.value: 1 if s.good else 2 if s is Status.INVALID else 0 for s in self.shown}


EDIT_OUTCOMES: Final = Outcomes(
    (Status.OK, Status.FAILED, Status.INVALID),
    ((Status.OK, "valid"), (Status.INVALID, "invalid")),
    "run",
)
"""``run``'s outcomes."""
UNDO_OUTCOMES: Final = Outcomes(
    (Status.OK, Status.CONFLICT, Status.FAILED, Status.INVALID),
    (
        (Status.OK, "would restore"),
        (Status.CONFLICT, "conflict"),
        (Status.FAILED, "failed"),
        (Status.INVALID, "invalid"),
    ),
    "undo",
)
"""``undo``'s outcomes."""
VERIFY_OUTCOMES: Final = Outcomes(
    (Status.MATCH, Status.MISMATCH, Status.MISSING, Status.FAILED, Status.INVALID),
    command="verify",
)
"""``verify``'s outcomes."""

AT_RANGE: Final = (946_684_800.0, 4_102_444_800.0)
"""The UNIX seconds a results row's ``at`` lies in: from 2000 up to 2100. A row outside was
not written by a run."""
LATENCY_MS_LIMIT: Final = 86_400_000.0
"""A results row's ``latency_ms`` is below this (a day): no attempt lasts so long."""


def commands_giving(outcome: str) -> tuple[str, ...]:
    """The commands whose lines may end with ``outcome`` (a results row's ``outcome``)."""
    return tuple(
        outcomes.command
        for outcomes in (EDIT_OUTCOMES, UNDO_OUTCOMES, VERIFY_OUTCOMES)
        if any(status.value == outcome for status in outcomes.shown)
    )


def outcomes_of(statuses: Counter[str]) -> Outcomes:
    """The outcomes of the command whose lines ended so: ``verify``'s, ``undo``'s or ``run``'s."""
    for outcomes in (VERIFY_OUTCOMES, UNDO_OUTCOMES):
        if any(statuses[s.value] for s in outcomes.shown if s not in EDIT_OUTCOMES.shown):
            return outcomes
    return EDIT_OUTCOMES


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one input line.

    ``code`` is the last ``ErrorCode`` (``None`` when there was no server answer or nothing was
    sent); ``latency`` is the last attempt's round trip in seconds; ``throttled`` counts the
    attempts refused for the rate (60007 and friends); ``at`` is when the outcome was reached,
    in UNIX seconds (``None`` for a row read back from a log written before it was recorded);
    ``fields`` names the fields a ``mismatch`` or ``conflict`` is about.
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
    throttled: int = 0
    at: float | None = field(default_factory=time.time)
    fields: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The results-log line (field names are a contract; see the README)."""
        row: dict[str, Any] = {
            "line": self.line,
            "MsgKey": self.msg_key,
            "From_Account": self.from_account,
            "To_Account": self.to_account,
            "outcome": self.status._value_,  # the plain attribute: ``value`` is a slow descriptor
            "ErrorCode": self.code,
            "ErrorInfo": self.info,
            "attempts": self.attempts,
            "latency_ms": round(self.latency * 1000, 1),
            "hash": self.digest,
        }
        if self.at is not None:
            row["at"] = round(self.at, 3)
        if self.throttled:
            row["throttled"] = self.throttled
        if self.note is not None:
            row["note"] = self.note
        if self.fields:
            row["fields"] = list(self.fields)
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
    """``admin_getroammsg`` requests made for before-images and undo's checks."""
    sent_records: int = 0
    skipped: int = 0
    """Lines ``--resume`` skipped because an earlier run finished them (ok or invalid)."""
    skipped_invalid: int = 0
    """Of ``skipped``, the lines whose earlier outcome was ``invalid``: never applied."""
    elapsed: float = 0.0
    first_send: float | None = None
    last_send: float | None = None
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    rate: RateStats | None = None
    unrecorded: int = 0
    """Outcomes the results log could not take (it failed; ``--resume`` redoes those lines)."""
    stopped: str | None = None
    """``None`` for a complete run; else ``fatal``, ``breaker``, ``budget`` or ``interrupted``."""
    reason: str = ""
    unsent: int = 0
    """Lines a stopped run left without an outcome; ``--resume`` sends them."""
    unsent_after: int | None = None
    """Set when the input could not be read to its end (a pipe): the last line read, after
    which every line was left unsent too."""
    dry_run: bool = False
    outcomes: Outcomes = EDIT_OUTCOMES
    """The command's outcomes, as it shows them."""

    def add(self, outcome: Outcome) -> None:
        """Fold one outcome in."""
        # ``_value_``: the plain attribute (``value`` is a slow descriptor in Python 3.11).
        self.statuses[outcome.status._value_] += 1
        if outcome.status is not Status.INVALID and not self.dry_run:
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
        """Every line's final outcome is good (``ok``, ``match``): those of this run, and those
        it skipped."""
        good = sum(self.statuses[s.value] for s in Status if s.good)
        return self.stopped is None and self.total == good and not self.skipped_invalid

    @property
    def shown(self) -> tuple[Status, ...]:
        """The outcomes to show: the command's, then any other that some line has."""
        shown = self.outcomes.shown
        return shown + tuple(s for s in Status if s not in shown and self.statuses[s.value])

    def as_json(self) -> dict[str, Any]:
        """``--summary-json``."""
        rate = self.rate
        return {
            "outcomes": {s.value: self.statuses[s.value] for s in self.shown},
            "error_codes": dict(sorted(self.codes.items())),
            "skipped_by_resume": self.skipped,
            "skipped_by_earlier_outcome": {
                self.outcomes.good.value: self.skipped - self.skipped_invalid,
                "invalid": self.skipped_invalid,
            },
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
            "not_in_results": self.unrecorded,
            "stopped": self.stopped,
            "reason": self.reason,
            "never_sent": self.unsent,
            "never_sent_after_line": self.unsent_after,
            "dry_run": self.dry_run,
        }

    def render(self) -> str:
        """The human summary printed at the end of a run."""
        data = self.as_json()
        # A dry run only checks: its lines are named for what they would be (valid, not ok).
        names = self.outcomes.dry if self.dry_run else tuple((s, s.value) for s in self.shown)
        counts = ", ".join(f"{name} {self.statuses[s.value]}" for s, name in names)
        if self.skipped:
            counts += (
                f"; skipped (done before): {self.outcomes.good.value} "
                f"{self.skipped - self.skipped_invalid}, invalid {self.skipped_invalid}"
            )
        nothing = "nothing sent" if not self.reads else "no edit sent"
        lines = [
            "batchedit summary" + (f" (dry run: {nothing})" if self.dry_run else ""),
            f"  outcomes: {counts}",
        ]
        if self.codes:
            codes = ", ".join(f"{code}: {n}" for code, n in data["error_codes"].items())
            lines.append(f"  by ErrorCode: {codes}")
        if not self.dry_run:
            lat = data["latency_ms"]
            timing = (
                f" in {self.elapsed:.1f} s"
                + (f", achieved {self.achieved_rate:.1f} req/s" if self.achieved_rate else "")
                if self.elapsed
                else ""
            )
            lines.append(
                f"  requests: {self.attempts} ({self.retries} retries){timing}"
                if self.attempts
                else "  requests: none sent"
            )
            if self.latency.count:
                lines.append(
                    f"  latency: p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms"
                )
            if self.rate is not None and self.rate.throttled:
                lines.append(
                    f"  rate adapted: {self.rate.throttled} throttled replies, "
                    f"{self.rate.cuts} cuts, lowest {self.rate.lowest:.1f} of "
                    f"{self.rate.target:g} req/s"
                )
        if self.reads:
            lines.append(f"  history reads: {self.reads} admin_getroammsg requests")
        if self.unrecorded:
            lines.append(
                f"  NOT IN THE RESULTS LOG: {self.unrecorded} of the outcomes above (--resume "
                "redoes those lines)"
            )
        if self.stopped is not None:
            lines.append(f"  STOPPED ({self.stopped}): {self.reason}")
            if not self.dry_run:
                lines.append(self._unsent_line())
        return "\n".join(lines)

    def _unsent_line(self) -> str:
        rest = (
            f", and every line after line {self.unsent_after} (not read)"
            if self.unsent_after is not None
            else ""
        )
        return (
            f"  never sent: {self.unsent} lines{rest}; run the same command with --resume "
            "to continue"
        )
