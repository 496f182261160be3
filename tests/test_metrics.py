"""Prometheus metrics: what a run counts, in a registry of its own, served over loopback HTTP
and scraped while a real run works against the emulator."""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from batchedit.cli import main
from batchedit.cli_output import METRICS_MISSING
from batchedit.emulator import Store
from batchedit.metrics import MetricsObserver, serve_metrics
from batchedit.outcomes import Outcome, Status
from batchedit.progress import Progress
from batchedit.ratelimit import RateStats
from tests.conftest import EmulatorProcess, cli_env
from tests.helpers import seed_messages, write_edits

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

OK = ("batchedit_edits_total", frozenset({("outcome", "ok"), ("code", "0")}))
"""The sample of edits that ended ok with ErrorCode 0."""


def _samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback only
        return _samples(response.read().decode())


def _outcome(line: int, status: Status, code: int | None, attempts: int) -> Outcome:
    return Outcome(line, "0", status, "a", "b", "k", code=code, attempts=attempts, latency=0.02)


def test_outcomes_and_progress_become_metrics() -> None:
    """Edits by outcome and ErrorCode, retries, latency; from the progress: done, total, in
    flight, waiting to retry, the rate in force, and the limiter's throttled replies and cuts as
    counters that only grow."""
    metrics = MetricsObserver(total=10)
    metrics.outcome(_outcome(1, Status.OK, 0, 3))
    metrics.outcome(_outcome(2, Status.FAILED, 20026, 1))
    metrics.outcome(_outcome(3, Status.FAILED, 20026, 1))
    metrics.outcome(_outcome(4, Status.INVALID, None, 0))
    counts = {"ok": 1, "failed": 2, "invalid": 1, "retrying": 2}
    for throttled, cuts in ((4, 1), (6, 2), (6, 2)):
        stats = RateStats(200.0, throttled, cuts, 162.0)
        metrics.tick(Progress(4, counts, rate=162.0, in_flight=7, limits=stats))
    samples = _samples(generate_latest(metrics.registry).decode())
    assert _value(samples, "batchedit_edits_total", outcome="ok", code="0") == 1
    assert _value(samples, "batchedit_edits_total", outcome="failed", code="20026") == 2
    assert _value(samples, "batchedit_edits_total", outcome="invalid", code="none") == 1
    assert _value(samples, "batchedit_retries_total") == 2
    assert _value(samples, "batchedit_request_latency_seconds_count") == 3
    assert _value(samples, "batchedit_done") == 4
    assert _value(samples, "batchedit_total") == 10
    assert _value(samples, "batchedit_in_flight") == 7
    assert _value(samples, "batchedit_waiting_to_retry") == 2
    assert _value(samples, "batchedit_rate_in_force") == 162
    assert _value(samples, "batchedit_throttled_replies_total") == 6
    assert _value(samples, "batchedit_throttle_cuts_total") == 2


def test_each_run_has_a_registry_of_its_own() -> None:
    """Two observers in one process neither clash nor share counts."""
    first, second = MetricsObserver(), MetricsObserver()
    first.outcome(_outcome(1, Status.OK, 0, 1))
    assert _samples(generate_latest(first.registry).decode())[OK] == 1
    assert OK not in _samples(generate_latest(second.registry).decode())


def test_served_over_loopback_while_the_block_lasts() -> None:
    """serve_metrics binds 127.0.0.1 (port 0: a free one), answers a real GET, and stops."""
    metrics = MetricsObserver(total=3)
    with serve_metrics(metrics.registry, "127.0.0.1", 0) as port:
        url = f"http://127.0.0.1:{port}/metrics"
        assert _value(_scrape(url), "batchedit_total") == 3
    with pytest.raises(urllib.error.URLError):
        _scrape(url)


def _runner() -> CliRunner:
    return CliRunner(env={"TIM_SECRET_KEY": None, "TIM_SDKAPPID": None, "TIM_BASE_URL": None})


def test_a_remote_metrics_host_needs_consent(tmp_path: Path) -> None:
    """--metrics-host that is not loopback is refused (exit 2) unless --metrics-allow-remote."""
    edits = write_edits(tmp_path / "e.jsonl", [])
    args = ["run", str(edits), "--dry-run", "--metrics-port", "0", "--metrics-host", "0.0.0.0"]  # noqa: S104 - refused, never bound
    result = _runner().invoke(main, args)
    assert result.exit_code == 2
    assert "--metrics-host 0.0.0.0 is not a loopback address: pass --metrics-allow-remote" in (
        result.output
    )


def test_a_busy_metrics_port_is_a_configuration_error(tmp_path: Path) -> None:
    """A port something else holds: exit 2 naming it, nothing run."""
    edits = write_edits(tmp_path / "e.jsonl", [{"From_Account": "a"}])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = _runner().invoke(
            main, ["run", str(edits), "--dry-run", "--metrics-port", str(port)]
        )
    assert result.exit_code == 2
    assert f"Error: cannot serve metrics on 127.0.0.1:{port}: Address already in use" in (
        result.output
    )
    assert "summary" not in result.output


def test_metrics_without_prometheus_client_say_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the optional package, --metrics-port exits 2 with the pip command to run."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # makes the import fail
    monkeypatch.delitem(sys.modules, "batchedit.metrics")
    edits = write_edits(tmp_path / "e.jsonl", [])
    result = _runner().invoke(main, ["run", str(edits), "--dry-run", "--metrics-port", "0"])
    assert result.exit_code == 2
    assert result.output == f"Error: {METRICS_MISSING}\n"


def _json_line(process: subprocess.Popen[bytes], timeout: float = 60.0) -> dict[str, object]:
    assert process.stderr is not None
    ready, _, _ = select.select([process.stderr], [], [], timeout)
    assert ready, f"the run said nothing within {timeout:g} s"
    row: dict[str, object] = orjson.loads(process.stderr.readline())
    return row


def test_a_run_is_scraped_while_it_works(
    tmp_path: Path, emulator_process: Callable[..., EmulatorProcess]
) -> None:
    """A real run against the emulator serves its metrics on 127.0.0.1: a GET during the run
    sees the edits so far by outcome and ErrorCode, the rate in force and the total; every
    stderr line is JSON, a stop signal's note included."""
    store = Store()
    store.import_account("administrator")
    targets = seed_messages(store, 300)
    store.save(tmp_path / "seed.jsonl")
    missing = [{**targets[0], "MsgKey": f"9_{i}_1700000000"} for i in range(3)]
    edits = write_edits(
        tmp_path / "edits.jsonl", [{**t, "CloudCustomData": "x"} for t in [*missing, *targets]]
    )
    emulator = emulator_process(state=tmp_path / "seed.jsonl")
    # 303 edits at 20 per second take 15 s at least: the scrape comes long before the end.
    command = [sys.executable, "-m", "batchedit", "run", str(edits), "--results",
               str(tmp_path / "r.jsonl"), "--rate", "20", "--metrics-port", "0",
               "--log-format", "json", "--progress-every", "0.5"]  # fmt: skip
    process = subprocess.Popen(
        command, env=cli_env(emulator.url), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        first = _json_line(process)
        assert first["event"] == "metrics"
        url = str(first["url"])
        assert url.startswith("http://127.0.0.1:")
        deadline = time.monotonic() + 60
        while True:
            samples = _scrape(url)
            if samples.get(OK, 0) >= 10:
                break
            assert time.monotonic() < deadline, "no edits counted within 60 s"
            time.sleep(0.1)
        assert _value(samples, "batchedit_edits_total", outcome="failed", code="20026") == 3
        assert _value(samples, "batchedit_total") == 303
        assert _value(samples, "batchedit_rate_in_force") == 20
        assert _value(samples, "batchedit_request_latency_seconds_count") >= 13
        assert 0 < _value(samples, "batchedit_done") < 303
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=20)
    assert process.returncode == 130
    rows = [orjson.loads(line) for line in stderr.splitlines()]
    events = [row["event"] for row in rows]
    assert events[0] == "start"
    assert "signal" in events
    assert events[-1] == "summary"
    assert rows[-1]["summary"]["stopped"] == "interrupted"
