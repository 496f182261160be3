"""Prometheus metrics of one run or plan, served over HTTP while it works.

Needs the ``prometheus-client`` package (``pip install 'batchedit[metrics]'``). Every
:class:`MetricsObserver` has a registry of its own, not the process-wide one, so two runs in one
process (tests, a library caller) never share or clash over a metric.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from batchedit.outcomes import Outcome
from batchedit.progress import Progress


class MetricsObserver:
    """An observer that counts what it is told in Prometheus metrics of :attr:`registry`.

    ``batchedit_edits_total{outcome, code}``: lines that reached a final outcome, by outcome
    (ok, failed, invalid) and ErrorCode (``none``: no answer, or an invalid line);
    ``batchedit_retries_total``: attempts beyond each line's first; ``batchedit_request_latency_
    seconds``: the round trip of each line's last attempt; from the periodic progress:
    ``batchedit_done`` and ``batchedit_total`` (lines, or a plan's conversations),
    ``batchedit_in_flight``, ``batchedit_waiting_to_retry``, ``batchedit_rate_in_force`` (requests
    per second), ``batchedit_throttled_replies_total`` and ``batchedit_throttle_cuts_total``.
    """

    def __init__(self, total: int | None = None) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self._edits = Counter(
            "batchedit_edits",
            "Lines that reached a final outcome, by outcome and ErrorCode (none: no answer).",
            ["outcome", "code"],
            registry=registry,
        )
        self._retries = Counter(
            "batchedit_retries", "Attempts beyond the first of each line.", registry=registry
        )
        self._latency = Histogram(
            "batchedit_request_latency_seconds",
            "Round trip of each line's last attempt, in seconds.",
            registry=registry,
        )
        self._done = Gauge(
            "batchedit_done",
            "Lines (or conversations) finished, skipped ones too.",
            registry=registry,
        )
        self._total = Gauge(
            "batchedit_total", "Lines (or conversations) to do, if known.", registry=registry
        )
        self._in_flight = Gauge(
            "batchedit_in_flight",
            "Lines being worked on now: waiting for the rate limit, in a request or backing "
            "off (at most --concurrency).",
            registry=registry,
        )
        self._retrying = Gauge(
            "batchedit_waiting_to_retry",
            "Requests waiting out a backoff before their next attempt.",
            registry=registry,
        )
        self._rate = Gauge(
            "batchedit_rate_in_force",
            "The request rate the limiter allows now, in requests per second (0: no limit).",
            registry=registry,
        )
        self._throttled = Counter(
            "batchedit_throttled_replies",
            "Replies that refused a request for the rate (60007 and kin).",
            registry=registry,
        )
        self._cuts = Counter(
            "batchedit_throttle_cuts",
            "Times the limiter cut its rate after throttled replies.",
            registry=registry,
        )
        self._seen_throttled = 0
        self._seen_cuts = 0
        if total is not None:
            self._total.set(total)

    def outcome(self, outcome: Outcome) -> None:
        """Count a final outcome, its retries and its last attempt's latency."""
        code = "none" if outcome.code is None else str(outcome.code)
        self._edits.labels(outcome.status.value, code).inc()
        if outcome.attempts:
            self._retries.inc(outcome.attempts - 1)
            self._latency.observe(outcome.latency)

    def notice(self, line: str) -> None:
        """Notices are not metrics."""

    def tick(self, progress: Progress) -> None:
        """Take the progress snapshot's gauges and the limiter's counters."""
        self._done.set(progress.done)
        self._rate.set(progress.rate or 0)
        self._retrying.set(progress.counts.get("retrying", 0))
        if progress.in_flight is not None:
            self._in_flight.set(progress.in_flight)
        limits = progress.limits
        if limits is not None:
            self._throttled.inc(max(0, limits.throttled - self._seen_throttled))
            self._cuts.inc(max(0, limits.cuts - self._seen_cuts))
            self._seen_throttled = max(self._seen_throttled, limits.throttled)
            self._seen_cuts = max(self._seen_cuts, limits.cuts)


@contextlib.contextmanager
def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> Iterator[int]:
    """Serve ``registry`` at ``http://HOST:PORT/metrics`` (any path answers) from a thread of
    its own, inside the block; yields the port (``port`` 0: a free one). Raises ``OSError``
    when the address cannot be bound."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
