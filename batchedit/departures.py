"""When this run's requests left, kept next to the results log, so that a run resumed right after a
crash knows what its predecessor sent in its last second (``RESULTS.departures``).

The service counts every request in its sliding second, whichever process sent it. A run killed
with SIGKILL and resumed within a second would otherwise start with an empty window while the
server's still holds up to ``--rate`` requests of the killed run. So each request's departure is
written here before the request is written to its connection: one ``pwrite`` of one 64-byte line
(``<unix time> <api>``, padded) into a ring of slots per API, about 2 µs, with no ``fsync``. A
process killed at any moment cannot lose a line (the kernel holds it, and an aligned 64-byte write
never tears), so the file always holds every departure of the last window; only a crash of the
whole machine could, and a machine that restarts takes longer than a window.

At its start a run reads the file and counts, for each API, the departures of the last window in
its own limiter (:meth:`~batchedit.ratelimit.Limiter.follow`); with no file beside a results log
that already holds outcomes (a run of an older batchedit, or a file removed), what was sent is not
known, and the first request waits one window. Times are the wall clock, the one clock two
processes share; a clock stepped back makes a departure look recent (a longer wait, at most one
window), never older.
"""

from __future__ import annotations

import asyncio
import math
import os
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from batchedit.im.errors import ConfigError
from batchedit.ratelimit import BudgetLost, Limiter, RateStats

LINE = 64
"""Bytes per slot: a line ``<unix time, 6 decimals> <api>`` padded with spaces."""

_BLANK = b" " * (LINE - 1) + b"\n"
_LARGEST = 64 * 1024 * 1024
"""A larger file is not one of ours (at 200/s a run's rings take 25 KB per API)."""


def _write(fd: int, data: bytes, offset: int) -> None:
    """All of ``data`` at ``offset``; raises ``OSError`` (a short write is retried, so a full
    disk or a file size limit shows as its error)."""
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def departures_of(results: Path) -> Path:
    """Where the departures of the run writing ``results`` are kept."""
    return results.with_name(results.name + ".departures")


def _parse(data: bytes) -> dict[str, list[float]] | None:
    """Departure times per API, or ``None`` when ``data`` is not a departures file (blank lines,
    or zeros a crash of the machine may leave, are fine)."""
    found: dict[str, list[float]] = {}
    for line in data.replace(b"\0", b" ").splitlines():
        fields = line.split()
        if not fields:
            continue
        try:
            at = float(fields[0])
            api = fields[1].decode("ascii")
        except (IndexError, ValueError):
            return None
        if len(fields) != 2 or not math.isfinite(at):
            return None
        found.setdefault(api, []).append(at)
    return found


class DepartureLog:
    """The departures file of one run: what the predecessor left in it, and a ring per API.

    Open it before the run takes the lock on its results log and anything is sent
    (:meth:`open`); it reads the predecessor's departures when the first limiter asks, after the
    lock is held, so a predecessor that was still running cannot add any afterwards.
    """

    def __init__(self, path: Path, fd: int, known: bool, clock: Callable[[], float]) -> None:
        self.path = path
        self._fd = fd
        self._known = known
        self._clock = clock
        self._before: dict[str, list[float]] | None = None
        self._end = 0

    @classmethod
    def open(cls, results: Path, clock: Callable[[], float] = time.time) -> DepartureLog:
        """The departures file beside ``results``, created if missing.

        Raises :class:`ConfigError` when it cannot be opened, or when something else is in its
        place (so that nothing of the user's is ever written over). ``clock`` is the wall clock.
        """
        path = departures_of(results)
        try:
            held = results.stat().st_size > 0
        except FileNotFoundError:
            held = False
        except OSError as exc:
            raise ConfigError(f"cannot read {results} ({exc.strerror or exc})") from None
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(
                f"cannot open {path}, where batchedit records when requests left "
                f"({exc.strerror or exc}); it must be a writable regular file beside RESULTS"
            ) from None
        try:
            info = os.fstat(fd)
            if (
                not stat.S_ISREG(info.st_mode)
                or info.st_size > _LARGEST
                or _parse(os.pread(fd, info.st_size, 0)) is None
            ):
                raise ConfigError(
                    f"{path} is in the way: batchedit records when requests left there, and it "
                    "holds something else; move it away"
                )
        except OSError as exc:
            os.close(fd)
            raise ConfigError(f"cannot read {path} ({exc.strerror or exc})") from None
        except ConfigError:
            os.close(fd)
            raise
        # Empty beside outcomes: left by an older batchedit or a run without a limit, or the
        # file was deleted. Beside no outcomes nothing was sent.
        return cls(path, fd, known=info.st_size > 0 or not held, clock=clock)

    def before(self, api: str, window: float) -> list[float] | None:
        """Seconds ago that the predecessor's requests to ``api`` left, for those of the last
        ``window`` seconds; ``None`` when that is not known. Raises ``OSError``."""
        if self._before is None:
            self._before = self._read(window)
        if not self._known:
            return None
        now = self._clock()
        ages = (max(0.0, now - at) for at in self._before.get(api, ()))
        return [age for age in ages if age < window]

    def _read(self, window: float) -> dict[str, list[float]]:
        """What the file holds; the rings go after it, or, when all of it is older than a window
        (no run will need it again), over it."""
        size = os.fstat(self._fd).st_size
        before = _parse(os.pread(self._fd, size, 0)) or {}
        cutoff = self._clock() - window
        if all(at <= cutoff for times in before.values() for at in times):
            os.ftruncate(self._fd, 0)
            size = 0
        self._end = -(-size // LINE) * LINE
        return before

    def ring(self, api: str, slots: int) -> Ring:
        """A ring of ``slots`` lines for ``api`` after the existing ones, blank at first (so a
        full disk shows now, not while sending). Raises ``OSError``."""
        if not api.isascii() or " " in api or len(api) > LINE - 20:
            raise ValueError(f"API name unfit for a departures line: {api!r}")
        start = self._end
        _write(self._fd, _BLANK * slots, start)
        self._end += slots * LINE
        return Ring(self._fd, api, start, slots, self._clock)

    def forget(self) -> None:
        """This run sends without a limit and records nothing: empty the file, so that the next
        run knows it does not know what was sent. Raises :class:`ConfigError`."""
        try:
            os.ftruncate(self._fd, 0)
        except OSError as exc:
            raise ConfigError(f"cannot empty {self.path} ({exc.strerror or exc})") from None

    def close(self) -> None:
        """Close the file (it stays for the next run)."""
        os.close(self._fd)


class Ring:
    """Where one API's departures are written, each over the oldest."""

    __slots__ = ("_api", "_clock", "_fd", "_next", "_slots", "_start")

    def __init__(
        self, fd: int, api: str, start: int, slots: int, clock: Callable[[], float]
    ) -> None:
        self._fd = fd
        self._api = api
        self._start = start
        self._slots = slots
        self._next = 0
        self._clock = clock

    def record(self) -> None:
        """A request leaves now. Raises ``OSError``."""
        line = f"{self._clock():.6f} {self._api}".encode().ljust(LINE - 1) + b"\n"
        _write(self._fd, line, self._start + self._next * LINE)
        self._next = (self._next + 1) % self._slots


class Recorded:
    """A :class:`~batchedit.ratelimit.Limiter` whose requests' departures are written to a
    :class:`DepartureLog`, and which follows the predecessor's before its first grant.

    A departures file that cannot be written (a full disk, say) stops the run: from then on
    :meth:`acquire` raises :class:`~batchedit.ratelimit.BudgetLost`.
    """

    def __init__(self, limiter: Limiter, log: DepartureLog, api: str, window: float) -> None:
        self._limiter = limiter
        self._log = log
        self._api = api
        self._window = window
        self._ring: Ring | None = None
        self._lost: str | None = None

    async def acquire(self) -> float:
        """The inner limiter's grant, after following the predecessor on the first call."""
        if self._ring is None and self._lost is None:
            try:
                ages = self._log.before(self._api, self._window)
                # Two windows of slots: a window holds at most a rate of requests counted from
                # their grants, and the departures of the latest window are among them or later.
                self._ring = self._log.ring(self._api, 2 * math.ceil(self._limiter.rate()) + 2)
            except OSError as exc:
                self._lose(exc)
            else:
                now = asyncio.get_running_loop().time()
                self._limiter.follow(None if ages is None else [now - age for age in ages])
        if self._lost is not None:
            raise BudgetLost(self._lost)
        return await self._limiter.acquire()

    def _lose(self, exc: OSError) -> None:
        self._lost = (
            f"cannot record when requests left in {self._log.path} ({exc.strerror or exc}), so a "
            "run resumed after a crash could not keep the rate"
        )

    def departed(self, granted_at: float) -> None:
        """Write the departure down, then tell the inner limiter."""
        if self._ring is not None and self._lost is None:
            try:
                self._ring.record()
            except OSError as exc:
                self._lose(exc)
        self._limiter.departed(granted_at)

    def follow(self, sent: Sequence[float] | None) -> None:
        """Passed on to the inner limiter."""
        self._limiter.follow(sent)

    def throttled(self, granted_at: float) -> None:
        """Passed on to the inner limiter."""
        self._limiter.throttled(granted_at)

    def rate(self) -> float:
        """The inner limiter's rate in force, in requests per second."""
        return self._limiter.rate()

    def stats(self) -> RateStats:
        """The inner limiter's counters."""
        return self._limiter.stats()
