"""The limiter on a virtual clock: never over the limit in any window, paced, adaptive."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random

import pytest

from batchedit.ratelimit import AdaptiveLimiter


def _grant_times(limiter: AdaptiveLimiter, count: int, start: float = 0.0) -> list[float]:
    """Ask for ``count`` grants as fast as allowed, advancing a virtual clock by the waits."""
    now = start
    times: list[float] = []
    while len(times) < count:
        wait = limiter.reserve(now)
        if wait:
            now += wait
        else:
            times.append(now)
    return times


def _max_in_window(times: list[float], window: float = 1.0) -> int:
    """Most grants in any half-open window (t - window, t], as the emulator counts arrivals."""
    return max(i + 1 - bisect.bisect_right(times, t - window) for i, t in enumerate(times))


@pytest.mark.parametrize("rate", [1, 7, 100, 200, 333.3])
def test_never_more_than_rate_in_any_second(rate: float) -> None:
    """Even from a cold start no 1-second window holds more than the rate (aiolimiter's 2x)."""
    limiter = AdaptiveLimiter(rate, window=1.0)
    times = _grant_times(limiter, int(rate * 5) + 3)
    assert _max_in_window(times) <= int(rate)


def test_margin_absorbs_arrival_jitter() -> None:
    """With the default 4 ms margin, grants shifted by up to 4 ms still fit the server's window."""
    limiter = AdaptiveLimiter(200)
    times = _grant_times(limiter, 2000)
    jittered = sorted(t + (0.004 if i % 200 == 0 else 0.0) for i, t in enumerate(times))
    assert _max_in_window(jittered) <= 200


def test_late_wakeups_cost_little_and_never_overrun() -> None:
    """Waking up to 1 ms late at every wait (as epoll does): still at least 99.4 % of the rate,
    and no window of 1.005 s holds more than the rate."""
    rng = random.Random(5)
    limiter = AdaptiveLimiter(200)
    now = 0.0
    times: list[float] = []
    while len(times) < 12_000:
        wait = limiter.reserve(now)
        if wait:
            now += wait + rng.uniform(0, 0.001)
        else:
            times.append(now)
    assert (len(times) - 1) / (times[-1] - times[0]) >= 0.994 * 200
    assert _max_in_window(times, 1.005) <= 200


def test_sustains_the_rate() -> None:
    """Grants are paced 1/rate apart and the long-run rate stays within 0.5 % of the target."""
    limiter = AdaptiveLimiter(200)
    times = _grant_times(limiter, 12_000)
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert achieved >= 0.995 * 200
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    assert gaps[len(gaps) // 2] == pytest.approx(1.005 / 200)


def test_throttle_cuts_then_recovers() -> None:
    """A throttle signal cuts the rate by 10 %; it climbs back 10 % of the target per second."""
    now = [10.0]
    limiter = AdaptiveLimiter(100, clock=lambda: now[0])
    limiter.throttled(granted_at=9.9)
    assert limiter.rate(10.0) == pytest.approx(90)
    assert limiter.rate(10.5) == pytest.approx(95)
    assert limiter.rate(20.0) == pytest.approx(100)
    stats = limiter.stats()
    assert (stats.throttled, stats.cuts) == (1, 1)
    assert stats.lowest == pytest.approx(90)


def test_answers_to_requests_from_before_a_cut_do_not_cut_again() -> None:
    """Only a request granted after the last cut proves the new rate too high."""
    now = [10.0]
    limiter = AdaptiveLimiter(100, clock=lambda: now[0])
    limiter.throttled(granted_at=9.0)
    limiter.throttled(granted_at=9.5)
    now[0] = 10.2
    limiter.throttled(granted_at=10.1)
    stats = limiter.stats()
    assert (stats.throttled, stats.cuts) == (3, 2)


def test_rate_never_falls_below_the_floor() -> None:
    """Repeated throttling stops at a twentieth of the target."""
    now = [0.0]
    limiter = AdaptiveLimiter(200, clock=lambda: now[0])
    for step in range(50):
        now[0] = step * 0.001
        limiter.throttled(granted_at=now[0])
    assert limiter.rate(now[0]) == pytest.approx(10, abs=0.1)


async def test_acquire_serves_waiters_in_order() -> None:
    """Concurrent acquirers are granted first come, first served."""
    limiter = AdaptiveLimiter(1000)
    order: list[int] = []

    async def take(i: int) -> None:
        await limiter.acquire()
        order.append(i)

    await asyncio.gather(*(take(i) for i in range(20)))
    assert order == list(range(20))


def test_rate_must_be_positive() -> None:
    """A zero rate is a programming error (the CLI maps --rate 0 to no limiter at all)."""
    with pytest.raises(ValueError, match="positive"):
        AdaptiveLimiter(0)
