"""Fast paths give what the exact paths give: reading in blocks the lines, digests and resume
decisions of reading one line at a time, however the bytes arrive; the results log's column check
falls back to the row check on anything odd; an answer's short text skips redaction only when
redaction would change nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import tempfile
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from yarl import URL

from batchedit.feed import DRY_RUN, dry_outcome
from batchedit.im.auth import Secret, SigSource
from batchedit.im.client import _UNPRINTABLE, MAX_INFO_CHARS, ImClient, network_text, redact
from batchedit.im.errors import ConfigError
from batchedit.jsonlog import LogDamaged
from batchedit.outcomes import EDIT_OUTCOMES, VERIFY_OUTCOMES, Outcome, Outcomes, Status
from batchedit.progress import Progress
from batchedit.reader import BATCH, LineReader
from batchedit.records import (
    MAX_LINE_BYTES,
    READ_BYTES,
    TOO_LONG,
    Done,
    InvalidRecord,
    line_digest,
    parse_line,
    read_batches,
    read_line_blocks,
    read_lines,
    read_records,
)
from batchedit.results import ResumeIndex, _entry, _refuse_another_commands
from batchedit.runner import RunConfig, run_batch

BOM = b"\xef\xbb\xbf"


class Trickle(io.RawIOBase):
    """A raw stream that hands over at most ``step`` bytes a read, as a slow pipe would."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(self._step, len(buffer), len(self._data))
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


def one_at_a_time(data: bytes) -> list[bytes]:
    """The lines as the line-by-line reader gave them (its rules, written out)."""
    lines = []
    for number, raw in enumerate(
        data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"), 1
    ):
        line = TOO_LONG if len(raw) > MAX_LINE_BYTES else raw
        if line is not TOO_LONG and number == 1 and line.startswith(BOM):
            line = line[len(BOM) :]
        lines.append(line)
    ended = data.endswith(b"\n")
    stripped = []
    for i, line in enumerate(lines):
        has_lf = i < len(lines) - 1 or ended
        stripped.append(
            line[:-1] if has_lf and line is not TOO_LONG and line.endswith(b"\r") else line
        )
    return [] if data == b"" else stripped


@given(
    st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"{}", BOM, b"\xff"]), max_size=40),
    st.integers(1, 7),
)
def test_blocks_of_any_size_give_the_lines_of_one_at_a_time(parts: list[bytes], step: int) -> None:
    """Whatever the bytes and however few arrive per read, the lines (CR of CRLF, BOM of line 1
    removed) are those of reading one line at a time."""
    data = b"".join(parts)
    stream = io.BufferedReader(Trickle(data, step), 4)
    assert [raw for _, raw in read_lines(stream)] == one_at_a_time(data)


def test_a_long_line_across_many_reads_is_one_too_long_line() -> None:
    """A line over the limit arriving in small pieces is given once as TOO_LONG, and the lines
    around it, CRLF split between two reads included, are whole."""
    data = b"x\r\n" + b"y" * (MAX_LINE_BYTES + 10) + b"\r\nz\r\n" + b"w" * (MAX_LINE_BYTES + 1)
    stream = io.BufferedReader(Trickle(data, 1000), 8)
    assert list(read_lines(stream)) == [(1, b"x"), (2, TOO_LONG), (3, b"z"), (4, TOO_LONG)]
    assert list(read_lines(io.BytesIO(b"y" * MAX_LINE_BYTES))) == [(1, b"y" * MAX_LINE_BYTES)]


def test_closed_early_the_stream_is_left_at_the_first_line_not_given() -> None:
    """A reader that stops takes no line with it: the stream is back at the start of the first
    line it did not give, so the lines left can be counted (a last line without newline, or one
    over the limit, too)."""
    for tail in (b"last", b"z" * (MAX_LINE_BYTES + 5)):
        data = b"a\nb\n" + tail
        stream = io.BufferedReader(io.BytesIO(data), 8)
        blocks = read_line_blocks(stream)
        first, given = next(blocks)
        blocks.close()
        assert (first, b"".join(line + b"\n" for line in given) + stream.read()) == (1, data)


def _results_row(line: int, raw: bytes, outcome: str = "ok") -> bytes:
    row = {
        "line": line,
        "MsgKey": "k",
        "outcome": outcome,
        "ErrorCode": 0,
        "hash": line_digest(raw),
    }
    return orjson.dumps(row) + b"\n"


def test_finished_lines_come_as_runs_and_redone_ones_as_records() -> None:
    """With an index, each run of finished lines comes as one Done; a changed line is parsed."""
    lines = [
        b'{"From_Account":"a","To_Account":"b","MsgKey":"k%d","CloudCustomData":"x"}' % i
        for i in range(6)
    ]
    log = b"".join(_results_row(i + 1, raw) for i, raw in enumerate(lines) if i != 3)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "results.jsonl"
        path.write_bytes(log)
        index = ResumeIndex.load(path)
    data = b"\n".join(lines) + b"\n"
    batches = read_batches(io.BytesIO(data), parse_line, index.done_among)
    entries = [entry for _, batch in batches for entry in batch]
    assert [type(e).__name__ for e in entries] == ["Done", "EditRecord", "Done"]
    first, last = entries[0], entries[2]
    assert isinstance(first, Done)
    assert isinstance(last, Done)
    assert (first.line, len(first.raws), last.line, len(last.raws)) == (1, 3, 5, 2)
    assert entries[1].line == 4


def _load_row_by_row(path: Path, codes: dict[str, int], command: str) -> ResumeIndex | str:
    """The index as reading the log one row at a time makes it (every row checked alone), or
    the refusal (its type and message)."""
    index = ResumeIndex()
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        entry = _entry(raw, codes)
        if isinstance(entry, str):
            try:
                _refuse_another_commands(path, raw, command)
            except ConfigError as exc:
                return f"ConfigError: {exc}"
            return f"LogDamaged: {LogDamaged(path, number, f'not a results row ({entry})')}"
        index._set(*entry)
    return index


_HASHES = ["0123456789abcdef", "fedcba9876543210", "00000000000000ff"]
_ODD: list[list[tuple[str, object]]] = [
    [],
    [("line", 0)],
    [("line", True)],
    [("line", 1.0)],
    [("line", 2**63)],
    [("outcome", "done")],
    [("outcome", "match")],
    [("outcome", "conflict")],
    [("hash", "0123456789ABCDEF")],
    [("hash", "0x23456789abcdef")],
    [("hash", " 123456789abcdef")],
    [("hash", "0123456789abcde")],
    [("hash", 123)],
    [("hash", "0123456789abcd"), ("hash", "0123456789abcdef01")],  # 32 hex digits in all
    [("hash", "01 23 456789abcd")] * 8,  # 7 bytes each: 8 rows give 7 digests
    [("at", 946684799.9)],
    [("at", 4102444800.0)],
    [("at", True)],
    [("at", "1795000000")],
    [("latency_ms", -0.1)],
    [("latency_ms", 86_400_000.0)],
    [("latency_ms", False)],
    [("latency_ms", None)],
]
"""Fields made odd, in successive rows: some still pass the row check (an upper-case hash),
most not."""


@pytest.mark.parametrize("odd", _ODD)
@settings(max_examples=20)
@given(st.data(), st.sampled_from([EDIT_OUTCOMES, VERIFY_OUTCOMES]))
def test_the_column_check_agrees_with_the_row_check(
    odd: list[tuple[str, object]], data: st.DataObject, outcomes: Outcomes
) -> None:
    """The results log read a block at a time (column checks, falling back to rows on anything
    odd: an upper-case or prefixed hash, an ``at`` or ``latency_ms`` out of range, a row of
    another command) gives the index, or the refusal, that row-by-row reading gives."""
    codes = outcomes.resume_codes()
    row = st.fixed_dictionaries(
        {
            "line": st.integers(1, 40),
            "outcome": st.sampled_from(list(codes)),
            "hash": st.sampled_from(_HASHES),
        },
        optional={
            "at": st.sampled_from([946684800.0, 1795000000, 1795000000.5, 4102444799.9]),
            "latency_ms": st.sampled_from([0, 3.5, 86_399_999.9]),
        },
    )
    rows = data.draw(st.lists(row, min_size=len(odd) or 1, max_size=30))
    at = data.draw(st.integers(0, len(rows) - 1))
    for offset, (name, value) in enumerate(odd):
        rows[(at + offset) % len(rows)][name] = value
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "results.jsonl"
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        expected = _load_row_by_row(path, codes, outcomes.command)
        if isinstance(expected, str):
            with pytest.raises(ConfigError) as refused:
                ResumeIndex.load(path, codes, outcomes.command)
            assert f"{type(refused.value).__name__}: {refused.value}" == expected
            return
        index = ResumeIndex.load(path, codes, outcomes.command)
    for line in range(42):
        for digest in _HASHES:
            assert index.is_done(line, digest) == expected.is_done(line, digest)
    assert len(index) == len(expected)
    assert index.invalid_among(0, 42) == expected.invalid_among(0, 42)


@pytest.mark.parametrize("before", [5, 5000])
@pytest.mark.parametrize(
    ("row", "why"),
    [
        (b'{"line":true,"outcome":"ok","hash":"0123456789abcdef"}', "line: must be"),
        (b'{"line":2,"outcome":"done","hash":"0123456789abcdef"}', "outcome: must be"),
        (b'{"line":2,"outcome":"ok","hash":"0123456789abcdeg"}', "hash: must be"),
        (b'{"line":2,"outcome":"ok"}', "hash: must be"),
        (b'{"line":2,"outcome":"ok","hash":"0123456789abcdef","at":1}', "at: must be"),
        (b'{"line":2,"outcome":"ok","hash":"0123456789abcdef","latency_ms":-1}', "latency_ms"),
        (b"[2]", "not a JSON object"),
    ],
)
def test_an_odd_row_among_good_ones_is_named_by_its_line(
    tmp_path: Path, row: bytes, why: str, before: int
) -> None:
    """A damaged row among good ones (in the first block read, or a later one) stops the load
    naming its own line and fault."""
    good = _results_row(1, b"x")
    path = tmp_path / "results.jsonl"
    path.write_bytes(good * before + row + b"\n" + good)
    with pytest.raises(LogDamaged, match=f"line {before + 1}: not a results row \\({why}"):
        ResumeIndex.load(path)


def test_a_row_of_another_command_in_a_later_block_names_that_command(tmp_path: Path) -> None:
    """A verify row deep in what looks like a run's results log (past the first block) is still
    refused as another command's log, not read as damage."""
    path = tmp_path / "results.jsonl"
    verify_row = b'{"line":9000,"outcome":"mismatch","hash":"0123456789abcdef"}\n'
    path.write_bytes(_results_row(1, b"x") * 5000 + verify_row)
    with pytest.raises(ConfigError, match="is the results log of a `verify`, not of a `run`"):
        ResumeIndex.load(path)


async def test_an_unread_reader_holds_about_one_batch_of_lines(tmp_path: Path) -> None:
    """However many lines a Done holds, a reader whose batches are not taken stops after about
    one batch of lines (memory stays flat on a resume where every line is done)."""
    lines = [b'{"n":%06d}' % i for i in range(100_000)]
    results = tmp_path / "results.jsonl"
    results.write_bytes(b"".join(_results_row(i + 1, raw) for i, raw in enumerate(lines)))
    index = ResumeIndex.load(results)
    source = io.BytesIO(b"\n".join(lines) + b"\n")
    async with LineReader(source, parse_line, index.done_among) as reader:
        for _ in range(1000):  # until it waits for room (a bounded wait, never a timed assert)
            if reader.lines_read >= BATCH:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        # The lines waiting, and the block read meanwhile (one read's worth).
        block = READ_BYTES // (len(lines[0]) + 1) + 1
        assert BATCH <= reader.lines_read < BATCH + 2 * block < len(lines)
        batch = await reader.batch()
        assert batch is not None
        assert all(isinstance(entry, Done) for entry in batch)


def _network_text_the_long_way(text: str, secrets: set[str]) -> str:
    text = _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], redact(text, secrets))
    if len(text) > MAX_INFO_CHARS:
        text = f"{text[:MAX_INFO_CHARS]}... ({len(text) - MAX_INFO_CHARS} more characters)"
    return text


@given(
    st.lists(
        st.sampled_from(
            [
                "succeed",
                "usersig",
                "UserSig=",
                "%2A",
                "%",
                "a",
                "b",
                "a*b",
                "a+b",
                "\x00",
                "\u202e",
                "é",
                "x" * 400,
            ]
        ),
        max_size=6,
    ).map("".join),
    st.sets(st.sampled_from(["a*b", "xxxx", "s3cr3t"]), max_size=2),
)
@example("echo a%2Ab", {"a*b"})
@example("echo a+b", {"a*b"})
@example("echo USERSIG=a", set())
@example("echo s3cr3t", {"s3cr3t"})
@example("e\u202echo", set())
def test_network_text_takes_a_short_cut_only_when_it_changes_nothing(
    text: str, secrets: set[str]
) -> None:
    """An answer's text comes out as redaction, escaping and cutting make it, whether or not the
    short cut for plain short text was taken."""
    assert network_text(text, secrets) == _network_text_the_long_way(text, secrets)


class _Collect:
    """An observer that keeps every outcome."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def outcome(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def notice(self, line: str) -> None:
        """Not needed here."""

    def tick(self, progress: Progress) -> None:
        """Not needed here."""


async def test_a_dry_run_gives_each_line_what_its_record_would_give() -> None:
    """A dry run's outcomes, made as the lines are read, are its records' verdicts in file order:
    each line's digest and identity, valid lines noted as not sent, invalid ones with their
    reason."""
    corpus = Path(__file__).parent / "data" / "bad_input.jsonl"
    seen = _Collect()
    with corpus.open("rb") as source:
        await run_batch(source, RunConfig(dry_run=True), observer=seen)
    with corpus.open("rb") as source:
        items = list(read_records(source))
    identity = [(o.line, o.digest, o.from_account, o.to_account, o.msg_key) for o in seen.outcomes]
    assert identity == [(i.line, i.digest, i.from_account, i.to_account, i.msg_key) for i in items]
    verdicts = [(o.status, o.info or o.note) for o in seen.outcomes]
    assert verdicts == [
        (Status.INVALID, i.reason) if isinstance(i, InvalidRecord) else (Status.OK, DRY_RUN)
        for i in items
    ]


def test_a_dry_runs_valid_outcome_is_the_one_the_dataclass_makes() -> None:
    """A dry run's outcome for a valid line, set slot by slot for speed, equals in every field
    the Outcome the constructor makes, is stamped with the time it was made, and is frozen."""
    raw = b'{"From_Account":"a","To_Account":"b","MsgKey":"k","CloudCustomData":"x"}'
    before = time.time()
    made = dry_outcome(7, raw, line_digest(raw))
    after = time.time()
    assert made == Outcome(7, line_digest(raw), Status.OK, "a", "b", "k", note=DRY_RUN, at=made.at)
    assert made.at is not None
    assert before <= made.at <= after
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.line = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:8080",
        "https://[::1]:8443/tim",
        "https://user:pw@proxy.example.com/a%20b/",
        "https://adminapisgp.im.qcloud.com",
    ],
)
def test_a_request_url_built_onto_its_api_url_is_the_whole_url_parsed(endpoint: str) -> None:
    """A request's URL, built onto its API's URL parsed once, is the URL its whole text parses
    to: path prefix, IPv6 host, user info and the query (UserSig, random) kept as written."""
    sig = SigSource(1400000000, "admin istrator", fixed_usersig=Secret("eJx*-_abc"))
    client = ImClient(endpoint, sig)
    for api in ("openim/modify_c2c_msg", "openim/admin_getroammsg", "openim/modify_c2c_msg"):
        url = client._url(api)
        whole = URL(f"{endpoint.rstrip('/')}/v4/{api}?{url.raw_query_string}", encoded=True)
        assert (url, str(url)) == (whole, str(whole))
        assert url.raw_query_string.startswith(
            "sdkappid=1400000000&identifier=admin%20istrator&usersig=eJx*-_abc&random="
        )
