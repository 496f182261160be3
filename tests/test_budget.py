"""The shared budget against a real redis-server: window, pacing, turns, shared cuts, failures.

Each limiter has its own connection, as separate processes would. Assertions are on the slots
Redis hands out (its own clock), never on when the client happened to run, so a busy machine
changes how long a test takes, not its answer.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

import pytest
import redis.asyncio as aioredis

from batchedit.budget import RedisLimiter, redact_url
from batchedit.im.errors import ConfigError
from batchedit.ratelimit import BudgetLost, open_limiters
from tests.conftest import RedisServer, free_port

StartRedis = Callable[[], RedisServer]
Limiters = Callable[..., RedisLimiter]
KEY = "batchedit:budget:{1400000000:openim/modify_c2c_msg}"


@pytest.fixture
async def limiters(redis_server: StartRedis) -> AsyncIterator[Limiters]:
    """Limiters on one budget in a fresh Redis, each with its own connection like a process."""
    server = redis_server()
    async with AsyncExitStack() as stack:

        def make(rate: float = 100, **tuning: float) -> RedisLimiter:
            client = aioredis.Redis.from_url(server.url)
            stack.push_async_callback(client.aclose)
            return RedisLimiter(client, KEY, rate, where=server.url, **tuning)

        yield make


def _micros(slots: list[float]) -> list[int]:
    return sorted(round(slot * 1e6) for slot in slots)


def _max_in_window(slots: list[int], window: int) -> int:
    """Most slots in any half-open window (t - window, t], microseconds."""
    return max(i + 1 - bisect.bisect_right(slots, t - window) for i, t in enumerate(slots))


async def _take(limiter: RedisLimiter, until: Callable[[], bool], into: list[float]) -> None:
    while not until():
        into.append(await limiter.acquire())


async def test_processes_sharing_a_budget_never_exceed_it_and_are_paced(
    limiters: Limiters,
) -> None:
    """Three limiters with two workers each: no window of 1.005 s holds more than the rate, and
    no three grants of all of them fall within window / rate (on time they are exactly that far
    apart; a grant given late lets the next one catch up by at most that much)."""
    shared = [limiters() for _ in range(3)]
    slots: list[float] = []
    await asyncio.gather(
        *(_take(lim, lambda: len(slots) >= 150, slots) for lim in shared for _ in range(2))
    )
    micros = _micros(slots)
    assert _max_in_window(micros, 1_005_000) <= 100
    assert min(b - a for a, b in zip(micros, micros[2:], strict=False)) >= 10_050


async def test_a_process_started_as_another_stops_honours_its_window(limiters: Limiters) -> None:
    """A limiter with a connection of its own (a run resumed right after a crash) still finds
    the slots the stopped one took in Redis: its first waits for the oldest to leave the window,
    and no window of both together holds more than the rate."""
    stopped = limiters(rate=10)
    before = [await stopped.acquire() for _ in range(10)]
    resumed = limiters(rate=10)
    resumed.follow(None)  # nothing to do: Redis keeps the window itself
    after = [await resumed.acquire() for _ in range(5)]
    slots = _micros(before + after)
    assert _max_in_window(slots, 1_005_000) <= 10
    assert min(_micros(after)) >= min(_micros(before)) + 1_005_000


async def test_a_request_that_leaves_late_counts_from_when_it_left(limiters: Limiters) -> None:
    """A request that leaves well after its slot (a new connection, a busy loop) is counted
    from when Redis heard it left, for every process: the grant that would share a window with
    it waits a window after that, not a window after its slot."""
    first, other = limiters(rate=5), limiters(rate=5)
    late = await first.acquire()
    await asyncio.sleep(0.3)
    first.departed(late)
    await first.settle()
    after = [await other.acquire() for _ in range(5)]
    assert _micros(after)[4] >= round(late * 1e6) + 300_000 + 1_005_000


async def test_processes_that_all_have_work_take_turns(limiters: Limiters) -> None:
    """Four limiters asking all the time each get a fair share (exact turns on an idle machine;
    the bound leaves room for a busy one)."""
    shared = [limiters() for _ in range(4)]
    got: list[list[float]] = [[] for _ in shared]
    total = 120

    def done() -> bool:
        return sum(map(len, got)) >= total

    await asyncio.gather(*(_take(lim, done, mine) for lim, mine in zip(shared, got, strict=True)))
    assert min(map(len, got)) >= total // 4 // 2


async def test_one_process_cut_slows_every_process(limiters: Limiters) -> None:
    """A throttle signal one process brings cuts the shared rate (at its next grant); another
    process then runs at the cut rate: five grants span at least three cut intervals."""
    first, second = limiters(recovery=0.0), limiters(recovery=0.0)
    first.throttled(await first.acquire())
    assert second.rate() == 100
    await second.acquire()
    assert second.rate() == 100
    await first.acquire()
    assert (first.stats().throttled, first.stats().cuts) == (1, 1)
    slots = _micros([await second.acquire() for _ in range(5)])
    assert second.rate() == pytest.approx(90)
    assert second.stats().lowest == pytest.approx(90)
    assert slots[-1] - slots[0] >= 3 * 11_166


async def test_signals_about_slots_reserved_before_a_cut_cut_nothing(limiters: Limiters) -> None:
    """Only a request whose slot was reserved after the last cut proves the cut rate too high,
    whichever process made the cut."""
    first, second = limiters(recovery=0.0), limiters(recovery=0.0)
    early = await second.acquire()
    first.throttled(await first.acquire())
    await first.acquire()
    second.throttled(early)
    late = await second.acquire()
    assert (second.stats().throttled, second.stats().cuts) == (1, 0)
    second.throttled(late)
    await second.acquire()
    assert second.stats().cuts == 1
    assert second.rate() == pytest.approx(81)


async def test_losing_redis_stops_every_later_grant(
    redis_server: StartRedis,
) -> None:
    """Once Redis is gone, acquire raises BudgetLost, at once for every later caller too."""
    server = redis_server()
    async with open_limiters(100, 1.005, server.url, 1400000000) as made:
        limiter = made("openim/modify_c2c_msg")
        assert limiter is not None
        await limiter.acquire()
        server.kill()
        with pytest.raises(BudgetLost, match=r"lost the shared request budget at redis://127"):
            await limiter.acquire()
        with pytest.raises(BudgetLost):
            await asyncio.wait_for(limiter.acquire(), 1)


async def test_unreachable_redis_is_a_config_error_without_the_password() -> None:
    """No Redis at the URL: a ConfigError that names the place, password masked."""
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(ConfigError, match=r"cannot reach the shared request budget") as caught:
        async with open_limiters(100, 1.005, url, 1400000000):
            pass
    assert "redis://:***@127.0.0.1:" in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("rate", "url", "message"),
    [
        (100.0, "http://127.0.0.1:1/0", "--budget http://127.0.0.1:1/0: "),
        (None, "redis://127.0.0.1:1/0", "--budget needs a rate"),
    ],
)
async def test_a_budget_that_cannot_be_shared_is_a_config_error(
    rate: float | None, url: str, message: str
) -> None:
    """A URL that is not Redis's, or no rate to share, is refused before anything is sent."""
    with pytest.raises(ConfigError, match=message):
        async with open_limiters(rate, 1.005, url, 1400000000):
            pass


async def test_without_a_budget_each_api_gets_its_own_limiter() -> None:
    """The default: a fresh in-process limiter per API, and none without a rate."""
    async with open_limiters(200, 1.005) as made:
        assert made("openim/modify_c2c_msg") is not made("openim/admin_getroammsg")
    async with open_limiters(None, 1.005) as made:
        assert made("openim/modify_c2c_msg") is None


def test_redact_url_masks_only_the_password() -> None:
    """Printed URLs keep host, port, user and database but never the password."""
    assert redact_url("redis://u:pw@h:6379/2") == "redis://u:***@h:6379/2"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
