"""Reading and validating edit records: every line one item, bad lines named with line and field."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchedit.records import EditRecord, InvalidRecord, parse_line, read_records

CORPUS = Path(__file__).parent / "data" / "bad_input.jsonl"

EXPECTED_INVALID = {
    3: "line 3: Msgbody: unknown field (did you mean 'MsgBody'?); nothing of this record is sent",
    4: "line 4: malformed JSON: unexpected end of data: line 1 column 26 (char 25)",
    5: "line 5: blank line",
    6: "line 6: not valid UTF-8 (byte 21)",
    7: "line 7: To_Account: required",
    8: "line 8: From_Account: must be a non-empty string",
    9: "line 9: MsgBody: must be an array of elements",
    10: "line 10: MsgBody[0].MsgType: unknown MsgType 'TIMHoloElem'",
    11: "line 11: MsgBody[0].MsgContent.Text: required by TIMTextElem",
    12: "line 12: MsgBody[0].MsgContent.Text: must be a string",
    13: "line 13: MsgBody[1]: a message may hold at most one TIMCustomElem",
    14: "line 14: CloudCustomData: must be a string",
    15: "line 15: MsgBody, CloudCustomData: give at least one",
    16: "line 16: request body is 9132 bytes, over the 8 KB limit",
    17: "line 17: expected a JSON object, got array",
    18: "line 18: longer than 65536 bytes, not read",
    21: "line 21: MsgBody: must not be empty",
}
VALID_LINES = [1, 2, 19, 20, 22]


def test_corpus_reasons_name_line_and_field() -> None:
    """Each defect of the corpus gets its own exact, line-numbered reason."""
    with CORPUS.open("rb") as stream:
        items = list(read_records(stream))
    assert [item.line for item in items] == list(range(1, 23))
    invalid = {i.line: i.reason for i in items if isinstance(i, InvalidRecord)}
    assert invalid == EXPECTED_INVALID
    valid = [i for i in items if isinstance(i, EditRecord)]
    assert [i.line for i in valid] == VALID_LINES


def test_bom_and_crlf_do_not_reach_the_record() -> None:
    """A UTF-8 BOM on line 1 and CRLF endings are stripped; the hash ignores the line ending."""
    items = list(read_records(io.BytesIO(b'\xef\xbb\xbf{"a":1}\r\n{"a":1}\n')))
    assert items[0].digest == items[1].digest


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b"[]", "array"),
        (b"null", "null"),
        (b'"x"', "string"),
        (b"5", "number"),
        (b"1.5", "number"),
        (b"true", "boolean"),
    ],
)
def test_a_line_that_is_not_an_object_names_its_json_type(line: bytes, kind: str) -> None:
    """A line holding a JSON value other than an object is named by JSON's word for it."""
    item = parse_line(4, line)
    assert isinstance(item, InvalidRecord)
    assert item.reason == f"line 4: expected a JSON object, got {kind}"


def test_invalid_records_keep_what_identity_they_have() -> None:
    """An invalid record with readable identity fields carries them into the results."""
    item = parse_line(9, b'{"From_Account":"a","To_Account":"b","MsgKey":"k","Msgbody":[]}')
    assert isinstance(item, InvalidRecord)
    assert (item.from_account, item.to_account, item.msg_key) == ("a", "b", "k")


def test_valid_record_body_round_trips() -> None:
    """A valid record's request body is its fields, compactly re-encoded."""
    raw = b'{"From_Account": "a", "To_Account": "b", "MsgKey": "1_2_3", "CloudCustomData": "x"}'
    item = parse_line(1, raw)
    assert isinstance(item, EditRecord)
    assert (
        item.body == b'{"From_Account":"a","To_Account":"b","MsgKey":"1_2_3","CloudCustomData":"x"}'
    )
    assert item.message == ("a", "b", "1_2_3")


@given(st.lists(st.binary(max_size=200).filter(lambda b: b"\n" not in b), max_size=30))
def test_any_bytes_give_one_item_per_line(lines: list[bytes]) -> None:
    """Whatever the bytes, the reader never raises and yields exactly one item per line."""
    data = b"\n".join(lines) + (b"\n" if lines else b"")
    items = list(read_records(io.BytesIO(data)))
    assert [i.line for i in items] == list(range(1, len(lines) + 1))


@given(
    st.dictionaries(
        st.sampled_from(["From_Account", "To_Account", "MsgKey", "MsgBody", "CloudCustomData"]),
        st.one_of(st.text(max_size=8), st.integers(), st.none(), st.lists(st.integers())),
    )
)
def test_any_object_is_either_valid_or_explained(fields: dict[str, object]) -> None:
    """Every JSON object is either sendable or invalid with a reason naming a field."""
    item = parse_line(1, json.dumps(fields).encode())
    if isinstance(item, InvalidRecord):
        assert item.reason.startswith("line 1: ")
    else:
        assert isinstance(item.fields["MsgKey"], str)
