"""``batchedit verify``: read back every message an edit file targets, and say whether it reads
as the file says.

A verify is a run (:func:`~batchedit.runner.run_batch`: the same reader, order, resume, results
log, rate and retries) whose action on each valid line is a read with ``admin_getroammsg``
instead of an edit. Each line ends ``match``, ``mismatch`` (naming the fields that differ),
``missing`` (no such message), ``failed`` (could not be read) or ``invalid``. Several lines for
one message are all judged against the last one: that is what the message should read after a
run of the file. Only the fields a line sets are compared (an empty ``CloudCustomData`` counts
as none, as the service shows it).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any, Final

import orjson

from batchedit.backup import differing_fields
from batchedit.edits import Action, Wiring, outcome_of
from batchedit.im.client import ROAM, Caller, Reply
from batchedit.im.errors import ApiError, ConfigError
from batchedit.im.history import find_message
from batchedit.outcomes import VERIFY_OUTCOMES, Outcome, Outcomes, Status
from batchedit.ratelimit import Limiter
from batchedit.records import EditRecord, MessageId, parse_line, read_records
from batchedit.sender import RunState, Sender, Track

_MIN_BITS: Final = 1 << 16
_MAX_BITS: Final = 1 << 34


class LastLines:
    """The last valid line of each message of an edit file that has more than one.

    Found in one pass before the run, in little memory: a bitmap of one bit per two bytes of
    the file marks the messages seen; a message met again (or whose bit another one set, a few
    per cent of them) is kept with its latest line's number and content. A message not kept
    has one line.
    """

    def __init__(self) -> None:
        self._later: dict[MessageId, tuple[int, bytes]] = {}

    @classmethod
    def scan(cls, stream: IO[bytes], stopping: Callable[[], bool]) -> LastLines:
        """Read ``stream`` to its end (stopping early if ``stopping()``), then go back to where
        it was. Raises :class:`ConfigError` for a stream that cannot go back (a pipe)."""
        try:
            seekable = stream.seekable()
        except (OSError, ValueError):
            seekable = False
        if not seekable:
            raise ConfigError("verify reads EDITS twice, so it must be a file, not a pipe")
        index = cls()
        try:
            index._read(stream, stopping)
        except OSError as exc:
            raise ConfigError(f"cannot read the input: {exc.strerror or exc}") from None
        return index

    def _read(self, stream: IO[bytes], stopping: Callable[[], bool]) -> None:
        start = stream.tell()
        try:
            bits = min(max(stream.seek(0, io.SEEK_END) // 2, _MIN_BITS), _MAX_BITS)
            stream.seek(start)
            seen = bytearray((bits + 7) // 8)
            for number, raw, message in _valid_lines(stream):
                if stopping():
                    break
                byte, bit = divmod(hash(message) % bits, 8)
                if seen[byte] >> bit & 1:
                    self._later[message] = (number, raw)
                else:
                    seen[byte] |= 1 << bit
        finally:
            stream.seek(start)

    def last(self, item: EditRecord) -> EditRecord:
        """The last valid line of ``item``'s message (``item`` itself if it is that line)."""
        later = self._later.get(item.message)
        if later is None or later[0] <= item.line:
            return item
        record = parse_line(*later)
        return record if isinstance(record, EditRecord) else item


def _valid_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes, MessageId]]:
    """Each valid line's number, content (the compact request body, which parses back to the
    same record) and message."""
    for entry in read_records(stream):
        if isinstance(entry, EditRecord):
            yield entry.line, entry.body, entry.message


def _counting(sender: Sender, track: Track) -> Caller:
    """A caller through ``sender`` whose attempts (of every page) add up in ``track``."""

    async def call(api: str, body: Mapping[str, Any]) -> Reply:
        page = Track()
        await sender.send(api, orjson.dumps(body), page)
        track.attempts += page.attempts
        track.throttled += page.throttled
        track.timed_out = track.timed_out or page.timed_out
        if page.last is None:
            return Reply(None, "not sent: the run is stopping", http_status=None)
        track.last = page.last
        return page.last

    return call


class ReadBack:
    """``verify``: each valid line's message is read back and compared with the line (with the
    last line for that message, when there are several)."""

    def __init__(self) -> None:
        self._lines = LastLines()
        self._reader: Sender | None = None
        self._state: RunState | None = None

    @property
    def outcomes(self) -> Outcomes:
        """match, mismatch, missing, failed, invalid."""
        return VERIFY_OUTCOMES

    @property
    def reads_on_dry_run(self) -> bool:
        """A dry run of a verify only checks the lines."""
        return False

    async def open(self, source: IO[bytes], wiring: Wiring) -> tuple[Action, Limiter | None]:
        """Find each message's last line, then hand out the read-back action."""
        if wiring.backup is not None:
            raise ConfigError("verify writes no backup")
        state = self._state = wiring.state
        self._lines = await asyncio.to_thread(LastLines.scan, source, lambda: state.stopping)
        self._reader = wiring.senders.sender(ROAM, wiring.summary.sent_at)
        return self._check, self._reader.limiter

    async def _check(self, item: EditRecord, track: Track) -> Outcome | None:
        if self._reader is None or self._state is None:
            raise RuntimeError("ReadBack used before open()")
        last = self._lines.last(item)
        try:
            message = await find_message(
                _counting(self._reader, track), item.from_account, item.to_account, item.msg_key
            )
        except ValueError as exc:
            return outcome_of(item, Status.FAILED, info=f"cannot be read back: {exc}")
        except ApiError as exc:
            if self._state.stopping:
                return None
            info = f"not read back ({exc})"
            return outcome_of(item, Status.FAILED, code=exc.code, info=info, **track.counts())
        judged = None if last is item else f"judged by line {last.line}, the last for its message"
        latency = track.last.latency if track.last is not None else 0.0
        common: dict[str, Any] = {"code": 0, "latency": latency, "note": judged}
        if message is None:
            info = (
                f"no message {item.msg_key} from {item.from_account} to {item.to_account} "
                "in its second"
            )
            return outcome_of(item, Status.MISSING, info=info, **common, **track.counts())
        differ = differing_fields(last.fields, message)
        if not differ:
            return outcome_of(item, Status.MATCH, **common, **track.counts())
        verb = "differs" if len(differ) == 1 else "differ"
        whose = "the line" if last is item else f"line {last.line}"
        info = f"{' and '.join(differ)} {verb} from what {whose} sets"
        return outcome_of(
            item, Status.MISMATCH, info=info, fields=differ, **common, **track.counts()
        )
