"""The lines a long command writes to stderr: plain text, or one JSON object per line.

Every line has an event name (``start``, ``progress``, ``invalid``, ``summary``, ``error``...)
and a message, the text a person reads; JSON lines add the time and the event's own fields. On a
terminal, in text mode, a live status line may be drawn and redrawn in place; any other line
clears it first. Notes the library logs on the ``batchedit`` logger (a torn log row cut off on
reopen, a stop signal) become lines of the console while :meth:`Console.capture_logging` is in
force, so JSON mode covers them too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import orjson

LOGGER = "batchedit"
"""The logger the library's notes go to (level WARNING; ``extra={"event": ...}`` names them)."""

_CLEAR = "\r\x1b[2K"
"""Back to the start of the row and erase it (a live line, or the ``^C`` a terminal echoed)."""


def log_note(message: str, event: str = "notice") -> None:
    """Tell the user something they should know but need not act on, as a ``batchedit`` log
    record (a console shows it as an ``event`` line; with no handler set up, Python prints the
    message to stderr)."""
    logging.getLogger(LOGGER).warning(message, extra={"event": event})


class Console:
    """Writes lines to ``stream``: text, or JSON objects (``json=True``) of the form
    ``{"time": ISO 8601 UTC, "event": ..., "message": ..., **fields}``.

    ``now`` gives the wall-clock time in seconds since the epoch (for JSON lines). Lines may come
    from several threads; each is written whole. A stream that fails (a terminal gone after
    SIGHUP, a closed pipe) is not written to any more: the run goes on, and its results log
    remains its record.
    """

    def __init__(
        self, stream: TextIO, *, json: bool = False, now: Callable[[], float] = time.time
    ) -> None:
        self.json = json
        self._stream = stream
        self._now = now
        self._lock = threading.Lock()
        self._drawn = False
        self._failed = False
        try:
            self.terminal = stream.isatty()
        except (OSError, ValueError):
            self.terminal = False

    def line(self, event: str, message: str, **fields: Any) -> None:
        """Write one line: ``message`` in text mode, the JSON object in JSON mode."""
        if self.json:
            stamp = dt.datetime.fromtimestamp(self._now(), dt.UTC).isoformat(
                timespec="milliseconds"
            )
            record = {"time": stamp.replace("+00:00", "Z"), "event": event, "message": message}
            text = orjson.dumps({**record, **fields}, default=str).decode()
        else:
            text = message
        prefix = _CLEAR if self.terminal and not self.json else ""
        with self._lock:
            self._drawn = False
            self._write(f"{prefix}{text}\n")

    def status(self, text: str) -> None:
        """Draw ``text`` as the live line, in place of the last one (text mode on a terminal;
        the caller keeps it within :meth:`width`)."""
        with self._lock:
            self._drawn = True
            self._write(_CLEAR + text)

    def keep_status(self) -> None:
        """End the live line, if one is drawn, so that it stays on screen above what follows."""
        with self._lock:
            if self._drawn:
                self._drawn = False
                self._write("\n")

    def _write(self, text: str) -> None:
        if self._failed:
            return
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # ValueError: the stream was closed
            self._failed = True

    def width(self) -> int:
        """The terminal's width in columns (``COLUMNS`` if set, else the terminal's, else 80)."""
        if not os.environ.get("COLUMNS"):
            with contextlib.suppress(AttributeError, OSError, ValueError):
                return os.get_terminal_size(self._stream.fileno()).columns
        return shutil.get_terminal_size().columns

    @contextlib.contextmanager
    def capture_logging(self) -> Iterator[None]:
        """Inside the block, write the ``batchedit`` logger's records as lines of this console."""
        logger = logging.getLogger(LOGGER)
        handler = _Handler(self)
        logger.addHandler(handler)
        try:
            yield
        finally:
            logger.removeHandler(handler)


class _Handler(logging.Handler):
    def __init__(self, console: Console) -> None:
        super().__init__(logging.INFO)
        self._console = console

    def emit(self, record: logging.LogRecord) -> None:
        self._console.line(getattr(record, "event", "notice"), record.getMessage())
