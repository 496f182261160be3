"""The limiter on a virtual clock: never over the limit in any window, paced, adaptive, in order."""

from __future__ import annotations

import asyncio
import bisect
import itertools

import pytest

from batchedit.ratelimit import AdaptiveLimiter
from batchedit.sender import RunState
from tests.vclock import run_virtual


async def _take(limiter: AdaptiveLimiter) -> float:
    """A grant whose request leaves at once."""
    granted = await limiter.acquire()
    limiter.departed(granted)
    return granted


async def _grant_times(limiter: AdaptiveLimiter, count: int) -> list[float]:
    """Ask for ``count`` grants as fast as they come."""
    return [await _take(limiter) for _ in range(count)]


def _grants(count: int, rate: float, lateness: float = 0.0, **options: float) -> list[float]:
    """Grant times of a fresh limiter asked for ``count`` grants, on a virtual clock."""

    async def take() -> list[float]:
        return await _grant_times(AdaptiveLimiter(rate, **options), count)

    return run_virtual(take(), lateness=lateness)


def _max_in_window(times: list[float], window: float = 1.0) -> int:
    """Most grants in any half-open window (t - window, t], as the emulator counts arrivals."""
    return max(i + 1 - bisect.bisect_right(times, t - window) for i, t in enumerate(times))


def _achieved(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0])


@pytest.mark.parametrize("rate", [1, 7, 100, 200, 333.3])
def test_never_more_than_rate_in_any_second(rate: float) -> None:
    """Even from a cold start no 1-second window holds more than the rate (a full bucket's 2x)."""
    times = _grants(int(rate * 5) + 3, rate, window=1.0)
    assert _max_in_window(times) <= int(rate)


def test_concurrent_acquirers_never_overrun_even_through_cuts() -> None:
    """A hundred workers asking at once, with a cut every half second: no window of 1.005 s
    holds more than the rate."""

    async def body() -> list[float]:
        limiter = AdaptiveLimiter(200)
        times: list[float] = []

        async def worker() -> None:
            while len(times) < 3000:
                times.append(await _take(limiter))
                if len(times) % 100 == 0:
                    limiter.throttled(times[-1])

        await asyncio.gather(*(worker() for _ in range(100)))
        return sorted(times)

    assert _max_in_window(run_virtual(body()), 1.005) <= 200


def test_margin_absorbs_arrival_jitter() -> None:
    """With the default 5 ms margin, grants shifted by up to 4 ms still fit the server's window."""
    times = _grants(2000, 200)
    jittered = sorted(t + (0.004 if i % 200 == 0 else 0.0) for i, t in enumerate(times))
    assert _max_in_window(jittered) <= 200


def test_late_wakeups_cost_little_and_never_overrun() -> None:
    """Waking up to 1 ms late at every timer (as epoll does): still at least 99.3 % of the rate,
    and no window of 1.005 s holds more than the rate."""
    times = _grants(12_000, 200, lateness=0.001)
    assert _achieved(times) >= 0.993 * 200
    assert _max_in_window(times, 1.005) <= 200


def test_sustains_the_rate_evenly() -> None:
    """Grants are paced window/rate apart from the very first (no burst at a cold start), and the
    long-run rate stays within 0.5 % of the target."""
    times = _grants(12_000, 200)
    assert _achieved(times) >= 0.995 * 200
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert sorted(gaps)[len(gaps) // 2] == pytest.approx(1.005 / 200, rel=1e-5)
    assert min(gaps) == pytest.approx(1.005 / 200, rel=1e-5)


def test_idle_spell_turns_into_two_grants_back_to_back_at_most() -> None:
    """After a pause, the bucket's headroom lets two grants through at once, then pacing resumes."""

    async def body() -> list[float]:
        limiter = AdaptiveLimiter(200)
        await _grant_times(limiter, 50)
        await asyncio.sleep(3)
        return await _grant_times(limiter, 5)

    after = run_virtual(body())
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert gaps[0] < 1e-6
    assert gaps[1:] == pytest.approx([1.005 / 200] * 3, rel=1e-5)


def test_throttle_cuts_then_recovers() -> None:
    """A throttle signal cuts the rate by 10 %; it climbs back 10 % of the target per second."""

    async def body() -> None:
        limiter = AdaptiveLimiter(100)
        limiter.throttled(granted_at=9.9)
        assert limiter.rate() == pytest.approx(90)
        assert limiter.rate(10.5) == pytest.approx(95)
        assert limiter.rate(20.0) == pytest.approx(100)
        stats = limiter.stats()
        assert (stats.throttled, stats.cuts) == (1, 1)
        assert stats.lowest == pytest.approx(90)

    run_virtual(body(), start=10.0)


def test_pacing_follows_the_cut_and_the_recovery() -> None:
    """After a cut to half the rate, the window drains below the new cap first; then, once the
    bucket's headroom is spent, each grant follows the previous one by window / (rate in force)
    as the rate recovers; ten seconds later the full pace is back; no window holds more than the
    target."""

    async def body() -> tuple[AdaptiveLimiter, list[float], list[float], list[float]]:
        limiter = AdaptiveLimiter(200, cut=0.5, recovery=0.05)
        before = await _grant_times(limiter, 400)
        limiter.throttled(before[-1])
        cut = await _grant_times(limiter, 50)
        await asyncio.sleep(max(0.0, before[-1] + 10 - asyncio.get_running_loop().time()))
        return limiter, before, cut, await _grant_times(limiter, 400)

    limiter, before, cut, recovered = run_virtual(body())
    assert cut[0] - before[-1] == pytest.approx(0.5, abs=0.01)
    for earlier, later in itertools.pairwise(cut[3:]):
        assert later - earlier == pytest.approx(1.005 / limiter.rate(earlier), rel=0.01)
    assert limiter.rate(cut[-1]) < 110
    assert _achieved(recovered[10:]) == pytest.approx(200 / 1.005, rel=0.001)
    assert _max_in_window(before + cut + recovered, 1.005) <= 200


def test_deepest_cut_is_paced_through_a_two_token_bucket() -> None:
    """At the floor a request costs twenty tokens, taken a token at a time: still paced at the
    floor rate, never refused by aiolimiter."""

    async def body() -> list[float]:
        limiter = AdaptiveLimiter(200, recovery=0.0)
        loop = asyncio.get_running_loop()
        for _ in range(40):
            limiter.throttled(loop.time())
        assert limiter.rate() == pytest.approx(10)
        return await _grant_times(limiter, 30)

    times = run_virtual(body())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[5:] == pytest.approx([1.005 / 10] * len(gaps[5:]), rel=0.02)


def test_answers_to_requests_from_before_a_cut_do_not_cut_again() -> None:
    """Only a request granted after the last cut proves the new rate too high."""

    async def body() -> None:
        limiter = AdaptiveLimiter(100)
        limiter.throttled(granted_at=9.0)
        limiter.throttled(granted_at=9.5)
        await asyncio.sleep(0.2)
        limiter.throttled(granted_at=10.1)
        stats = limiter.stats()
        assert (stats.throttled, stats.cuts) == (3, 2)

    run_virtual(body(), start=10.0)


def test_rate_never_falls_below_the_floor() -> None:
    """Repeated throttling stops at a twentieth of the target."""

    async def body() -> None:
        limiter = AdaptiveLimiter(200)
        loop = asyncio.get_running_loop()
        for _ in range(50):
            await asyncio.sleep(0.001)
            limiter.throttled(granted_at=loop.time())
        assert limiter.rate() == pytest.approx(10, abs=0.1)

    run_virtual(body())


def test_acquire_serves_waiters_in_order_during_a_recovery() -> None:
    """Acquirers are granted first come, first served while the rate recovers from a cut, though
    each later one asks aiolimiter for fewer tokens (its own queue serves smaller amounts first,
    and a newcomer that fits skips the queue)."""

    async def body() -> list[int]:
        limiter = AdaptiveLimiter(100, cut=0.5, recovery=0.5)
        limiter.throttled(asyncio.get_running_loop().time())
        order: list[int] = []

        async def take(i: int) -> None:
            await asyncio.sleep(i * 0.002)
            await _take(limiter)
            order.append(i)

        await asyncio.gather(*(take(i) for i in range(40)))
        return order

    assert run_virtual(body()) == list(range(40))


def test_a_cancelled_waiter_does_not_stall_the_others() -> None:
    """A worker cancelled while it waits for a grant leaves the queue; the rest go on in order."""

    async def body() -> list[int]:
        limiter = AdaptiveLimiter(100)
        order: list[int] = []

        async def take(i: int) -> None:
            await _take(limiter)
            order.append(i)

        tasks = [asyncio.create_task(take(i)) for i in range(10)]
        await asyncio.sleep(0.015)
        tasks[4].cancel()
        tasks[5].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return order

    assert run_virtual(body()) == [0, 1, 2, 3, 6, 7, 8, 9]


def test_rate_must_be_positive() -> None:
    """A zero rate is a programming error (the CLI maps --rate 0 to no limiter at all)."""
    with pytest.raises(ValueError, match="positive"):
        AdaptiveLimiter(0)


def _departures(lateness: list[float], rate: float, count: int) -> list[float]:
    """Departure times of ``count`` requests at ``rate``, each leaving ``lateness[i]`` seconds
    after its grant (0 past the list), with up to 100 in flight, on a virtual clock."""

    async def body() -> list[float]:
        limiter = AdaptiveLimiter(rate)
        left: list[float] = []
        loop = asyncio.get_running_loop()

        async def send(i: int) -> None:
            granted = await limiter.acquire()
            await asyncio.sleep(lateness[i] if i < len(lateness) else 0.0)
            limiter.departed(granted)
            left.append(loop.time())

        tasks = []
        for i in range(count):
            tasks.append(asyncio.create_task(send(i)))
            await asyncio.sleep(0)
            if len(tasks) >= 100:
                await tasks.pop(0)
        await asyncio.gather(*tasks)
        return sorted(left)

    return run_virtual(body())


def test_requests_that_leave_late_are_counted_from_when_they_left() -> None:
    """The first 40 requests wait 25 ms for new connections, the rest leave at once: still no
    second of departures holds more than the rate (counted from their grants, some would)."""
    left = _departures([0.025] * 40, 200, 1200)
    assert _max_in_window(left) <= 200


def test_a_request_slow_to_leave_counts_in_every_window_until_it_leaves() -> None:
    """A request that takes 2.5 s to get its connection is counted all that time: when it does
    leave, the window it lands in still holds no more than the rate."""
    left = _departures([2.5], 10, 60)
    assert _max_in_window(left) <= 10


def test_a_limit_of_requests_all_waiting_to_leave_holds_the_next_grant() -> None:
    """With the rate's worth of requests granted and none gone yet, the next grant waits for one
    to leave, then for that one to leave the window."""

    async def body() -> float:
        limiter = AdaptiveLimiter(3)
        loop = asyncio.get_running_loop()
        granted = [await limiter.acquire() for _ in range(3)]
        waiter = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(5)
        assert not waiter.done()
        limiter.departed(granted[0])
        left = loop.time()
        return await waiter - left

    assert run_virtual(body()) == pytest.approx(1.005, abs=1e-6)


def test_a_predecessors_last_second_is_honoured() -> None:
    """A resumed run that follows a predecessor's 200 requests of the last second sends its
    first only as the oldest of them leaves the window, and no window of both runs together
    holds more than the rate."""

    async def body() -> tuple[list[float], list[float]]:
        limiter = AdaptiveLimiter(200)
        now = asyncio.get_running_loop().time()
        before = [now - 1.0 + i * 0.005 for i in range(200)]
        limiter.follow(before)
        return before, await _grant_times(limiter, 400)

    before, after = run_virtual(body(), start=100.0)
    assert after[0] == pytest.approx(before[0] + 1.005, abs=1e-6)
    assert _max_in_window(before + after, 1.005) <= 200


def test_an_unknown_predecessor_is_assumed_to_have_spent_the_window() -> None:
    """When what the predecessor sent is not known, the first grant waits one whole window."""

    async def body() -> float:
        limiter = AdaptiveLimiter(200)
        start = asyncio.get_running_loop().time()
        limiter.follow(None)
        return await _take(limiter) - start

    assert run_virtual(body()) == pytest.approx(1.005, abs=1e-6)


def test_a_stop_gives_up_the_waits_for_a_grant_and_leaves_the_limiter_whole() -> None:
    """Twenty workers queued at 5 requests per second: a stop ends every wait at once (no more
    grants, no virtual time passes), a caller's own cancel still stands, and the limiter then
    grants as if the given-up waits had never been."""

    async def body() -> tuple[list[float | None], float, float, bool, list[float]]:
        loop = asyncio.get_running_loop()
        limiter = AdaptiveLimiter(5.0)
        state = RunState()

        async def worker() -> float | None:
            granted = await state.grant(limiter)
            if granted is not None:
                limiter.departed(granted)
            return granted

        workers = [asyncio.create_task(worker()) for _ in range(20)]
        cancelled = asyncio.create_task(worker())
        await asyncio.sleep(1.0)
        cancelled.cancel()  # a second Ctrl-C: not the stop's to swallow
        await asyncio.sleep(0)
        stopped_at = loop.time()
        state.stop("interrupted", "test")
        got = list(await asyncio.gather(*workers))
        ended_at = loop.time()
        was_cancelled = cancelled.cancelled()
        after = await _grant_times(limiter, 3)
        return got, stopped_at, ended_at, was_cancelled, after

    got, stopped_at, ended_at, was_cancelled, after = run_virtual(body())
    granted = [at for at in got if at is not None]
    assert len(granted) == 5  # the first second's: 1.005 / 5 s apart from t = 0
    assert got[len(granted) :] == [None] * (20 - len(granted))
    assert ended_at - stopped_at < 0.001
    assert was_cancelled
    # Paced on from the last grant: the given-up waits took nothing from the bucket.
    assert after[0] - granted[-1] == pytest.approx(0.201, abs=0.002)
    assert all(b - a == pytest.approx(0.201, abs=0.002) for a, b in itertools.pairwise(after))
