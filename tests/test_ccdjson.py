"""JSON edits of CloudCustomData that change the key they name and not one other byte."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchedit.ccdjson import JsonEditError, delete_key, rename_key, set_value

SPACED = '{ "tag" : "x",\n\t"n": 1.50, "s": "caf\\u00e9", "o": {"tag": 1e3} }'


def test_each_edit_changes_only_its_key() -> None:
    """Rename, set and delete splice the text: spacing, number spelling and escapes stay."""
    assert rename_key(SPACED, ("tag",), "label") == SPACED.replace('"tag" :', '"label" :')
    assert set_value(SPACED, ("n",), "2") == SPACED.replace("1.50", "2")
    assert set_value(SPACED, ("o", "tag"), '"y"') == SPACED.replace("1e3", '"y"')
    assert delete_key(SPACED, ("s",)) == SPACED.replace('"s": "caf\\u00e9", ', "")
    assert delete_key(SPACED, ("o",)) == SPACED.replace(', "o": {"tag": 1e3}', "")
    assert delete_key('{"a": 1}', ("a",)) == "{}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a":1}', '{"a":1,"v":2}'),
        ('{"a": 1, "b": 2}', '{"a": 1, "b": 2, "v": 2}'),
        ('{\n  "a": 1\n}', '{\n  "a": 1,\n  "v": 2\n}'),
        ("{}", '{"v":2}'),
        (' {"a": {}} ', ' {"a": {}, "v": 2} '),
    ],
)
def test_a_new_key_goes_last_in_the_objects_own_style(text: str, expected: str) -> None:
    """A key that is not there yet is added after the last one, with the object's separators."""
    assert set_value(text, ("v",), "2") == expected


def test_set_creates_missing_objects_and_leaves_an_equal_value_alone() -> None:
    """Setting a.b.c where a is missing adds the nested objects; an equal value changes nothing,
    though 1 and 1.0 and true differ."""
    assert set_value('{"x":0}', ("a", "b", "c"), "1") == '{"x":0,"a":{"b":{"c":1}}}'
    assert set_value('{"v": 2.0}', ("v",), "2") == '{"v": 2}'
    assert set_value('{"v": 2}', ("v",), "2") == '{"v": 2}'
    assert set_value('{"v": true}', ("v",), "1") == '{"v": 1}'


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: set_value(t, ("a", "b"), "1"), "a holds no object to set a key in"),
        (lambda t: rename_key(t, ("a",), "c"), "cannot rename a: c exists"),
        (lambda t: set_value(t, ("d",), "1"), "d is given 2 times"),
    ],
)
def test_edits_that_cannot_be_made_say_why(edit: Any, message: str) -> None:
    """A path through a non-object, a rename onto an existing key and a duplicate key on the
    path are refused with the path named."""
    with pytest.raises(JsonEditError, match=message):
        edit('{"a": 1, "c": 2, "d": 3, "d": 4}')


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("plain text", "not JSON (Expecting value)"),
        ("[1, 2]", "not a JSON object, got array"),
        ('{"a": NaN}', "not JSON (NaN is not JSON)"),
        ('"{}"', "not a JSON object, got string"),
    ],
)
def test_text_that_is_not_a_json_object_is_refused(text: str, reason: str) -> None:
    """Only a JSON object is edited; anything else is refused saying what it is."""
    with pytest.raises(JsonEditError) as caught:
        set_value(text, ("a",), "1")
    assert str(caught.value) == reason


def test_missing_keys_are_nothing_to_rename_or_delete() -> None:
    """Renaming or deleting a key that is not there (or under a non-object) changes nothing."""
    for path in [("x",), ("a", "x"), ("x", "y")]:
        assert rename_key('{"a": 1}', path, "z") == '{"a": 1}'
        assert delete_key('{"a": 1}', path) == '{"a": 1}'


KEYS = st.sampled_from(["a", "b", "tag", "v", "é", 'q"'])
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6,
)
STYLES = st.sampled_from([(None, (",", ":")), (None, (", ", ": ")), (2, (",", ": "))])


@given(st.dictionaries(KEYS, VALUES, min_size=1, max_size=5), KEYS, VALUES, STYLES, st.booleans())
def test_edits_undo_exactly(
    data: dict[str, Any], key: str, value: Any, style: Any, ascii_only: bool
) -> None:
    """For any object in any layout: the edit means what it says, and undoing it gives back
    the original text byte for byte (so no other byte moved)."""
    indent, separators = style
    text = json.dumps(data, indent=indent, separators=separators, ensure_ascii=ascii_only)
    new = json.dumps(value)
    changed = set_value(text, (key,), new)
    assert json.loads(changed) == {**data, key: value}
    assert list(json.loads(changed)) == list({**data, key: value})
    if key not in data:
        assert delete_key(changed, (key,)) == text
    first = next(iter(data))
    if key not in data and (first.isascii() or not ascii_only):  # a new key is written in UTF-8
        renamed = rename_key(text, (first,), key)
        assert list(json.loads(renamed)) == [key if k == first else k for k in data]
        assert rename_key(renamed, (key,), first) == text
