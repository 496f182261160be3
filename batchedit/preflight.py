"""What a run checks and says before its first request.

The run-file rules: no two of a run's files (its input, RESULTS, BACKUP, ``--summary-json``) may
be one file, compared by device and inode, so a hard link or a symlink counts as the same file;
a RESULTS that already holds outcomes is continued only with ``--resume`` (a plain rerun would send
every edit again); one BACKUP per run, so a BACKUP that is not empty is continued only with
``--resume``; and every output can be written. A run that breaks a rule is refused with a
:class:`ConfigError` before anything is sent or written.

Then one start line says where the run sends, as whom, what, and how fast, with a warning first
when the rate is above the documented limit.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Final

from yarl import URL

from batchedit.im.auth import SigSource
from batchedit.im.errors import ConfigError

DOCUMENTED_RATE: Final = 200.0
"""The service's documented limit per API, in requests per second (spec sections 2 and 3)."""

Identity = tuple[int, int] | Path
"""A file's (device, inode) when it exists, else its absolute path with symlinks resolved."""

_BLOCK: Final = 1 << 20


def identity(path: Path) -> Identity:
    """What makes ``path`` the file it is: (device, inode), or its resolved path if it is new."""
    try:
        found = path.stat()
    except OSError:
        return path.resolve()
    return (found.st_dev, found.st_ino)


def stream_identity(stream: IO[bytes]) -> Identity | None:
    """The (device, inode) behind an open stream (a file, or stdin redirected from one)."""
    try:
        found = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return (found.st_dev, found.st_ino)


def check_distinct(files: Sequence[tuple[str, Path | Identity | None]]) -> None:
    """Refuse when two of ``files`` (role, path or identity; ``None`` for absent) are one file."""
    seen: list[tuple[str, Identity, str]] = []
    for role, file in files:
        if file is None:
            continue
        key = identity(file) if isinstance(file, Path) else file
        shown = str(file) if isinstance(file, Path) else ""
        for other_role, other_key, other_shown in seen:
            if key == other_key:
                where = shown or other_shown
                raise ConfigError(
                    f"{other_role} and {role} are the same file{f' ({where})' if where else ''}; "
                    "give each a file of its own"
                )
        seen.append((role, key, shown))


def check_writable(role: str, path: Path) -> None:
    """Refuse an output that cannot be written: a directory, a missing directory, no permission."""
    if path.is_dir():
        raise ConfigError(f"cannot write {role} {path}: it is a directory")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise ConfigError(f"cannot write {role} {path}: no directory {parent}")
    if not os.access(path if path.exists() else parent, os.W_OK):
        raise ConfigError(f"cannot write {role} {path}: permission denied")


def _holds_data(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def check_run_files(
    source: IO[bytes] | Path,
    *,
    input_role: str,
    results: Path | None,
    backup: Path | None,
    summary_json: Path | None,
    resume: bool,
) -> None:
    """Apply the run-file rules to a run about to start (see the module docstring).

    ``source`` is the run's input, as the stream it reads or the file it was made from (undo's
    BACKUP); ``results`` and ``backup`` are ``None`` when the run writes none (a dry run).
    """
    source_id = source if isinstance(source, Path) else stream_identity(source)
    # An undo's input is a BACKUP too: then the one it writes is named by its option.
    backup_role = "--backup" if input_role == "BACKUP" else "BACKUP"
    check_distinct(
        [
            (input_role, source_id),
            ("RESULTS", results),
            (backup_role, backup),
            ("--summary-json", summary_json),
        ]
    )
    if results is not None and not resume and _holds_data(results):
        raise ConfigError(
            f"RESULTS {results} already holds the outcomes of an earlier run; add --resume to "
            "continue that run, or give a new results file"
        )
    if backup is not None and not resume and _holds_data(backup):
        raise ConfigError(
            f"BACKUP {backup} is not empty: one backup per run; give a new backup file, or add "
            "--resume to continue the run that wrote it"
        )
    for role, path in (("RESULTS", results), ("BACKUP", backup), ("--summary-json", summary_json)):
        if path is not None:
            check_writable(role, path)


def check_plan_files(source: Path, output: Path, role: str = "PAIRS") -> None:
    """Refuse a plan whose edit file (or its ``.partial``) is the file it reads (``role``:
    PAIRS, or the callback archive), or cannot be written."""
    partial = output.with_name(output.name + ".partial")
    check_distinct([(role, source), ("--output", output)])
    check_distinct([(role, source), ("--output's .partial file", partial)])
    check_writable("--output", output)


def start_lines(
    endpoint: str, sig: SigSource, source: str, rate: float | None, concurrency: int
) -> list[str]:
    """What a run prints before its first request: a rate warning if due, then the start line.

    ``rate`` is requests per second (``None`` or 0: no limit); the endpoint is shown without its
    scheme, the host with any port and path.
    """
    url = URL(endpoint)
    port = f":{url.explicit_port}" if url.explicit_port is not None else ""
    where = f"{url.host}{port}{url.path.rstrip('/')}"
    lines = []
    if not rate:
        lines.append(
            f"warning: no rate limit; the documented limit is {DOCUMENTED_RATE:g} requests per "
            "second per API, and the service answers the excess with 60007"
        )
    elif rate > DOCUMENTED_RATE:
        lines.append(
            f"warning: --rate {rate:g} is above the documented limit of {DOCUMENTED_RATE:g} "
            "requests per second per API; the service answers the excess with 60007"
        )
    lines.append(
        f"start: endpoint {where}, SDKAppID {sig.sdkappid}, admin {sig.identifier}, "
        f"input {source}, rate {f'{rate:g}/s' if rate else 'unlimited'}, "
        f"concurrency {concurrency}"
    )
    return lines


def count_rest(stream: IO[bytes]) -> int | None:
    """How many lines are left to read in ``stream`` (reading them), or ``None`` for a pipe or
    terminal, which cannot be read to the end without waiting on whoever writes it."""
    try:
        if not stream.seekable():
            return None
    except (OSError, ValueError):
        return None
    lines = 0
    last = b"\n"
    while block := stream.read(_BLOCK):
        lines += block.count(b"\n")
        last = block[-1:]
    return lines + (last != b"\n")
