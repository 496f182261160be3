"""The built-in plan rules: each reads only its own fields, and refuses what it cannot do."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchedit.im.client import RoamMessage
from batchedit.im.errors import ConfigError
from batchedit.pairs import BadPair, parse_when, read_pairs
from batchedit.planner import Planner, PlanStats, explain_nothing
from batchedit.rules import CcdEdit, RuleError, Rules, compile_replacement, parse_template

OLD = "https://old.example/"
NEW = "https://new.example/"


def _message(body: list[Any], ccd: str | None = None) -> RoamMessage:
    return RoamMessage("a", "b", 1, 2, 1_790_000_000, "1_2_1790000000", 0, body, ccd, 0)


def _everywhere(url: str) -> list[dict[str, Any]]:
    """One element of each media type (and a text and a custom one) with ``url`` in every
    string field, URL or not."""
    return [
        {"MsgType": "TIMTextElem", "MsgContent": {"Text": url}},
        {
            "MsgType": "TIMImageElem",
            "MsgContent": {
                "UUID": url,
                "ImageFormat": 1,
                "ImageInfoArray": [{"Type": 1, "Width": 1, "Height": 1, "URL": url + "1"}],
            },
        },
        {"MsgType": "TIMSoundElem", "MsgContent": {"Url": url, "UUID": url, "Download_Flag": 2}},
        {
            "MsgType": "TIMFileElem",
            "MsgContent": {"Url": url, "UUID": url, "FileName": url, "Download_Flag": 2},
        },
        {
            "MsgType": "TIMVideoFileElem",
            "MsgContent": {
                "VideoUrl": url + "v",
                "VideoUUID": url,
                "ThumbUrl": url + "t",
                "ThumbUUID": url,
                "ThumbWidth": 1,
                "ThumbHeight": 1,
                "VideoDownloadFlag": 2,
                "ThumbDownloadFlag": 2,
            },
        },
        {"MsgType": "TIMCustomElem", "MsgContent": {"Data": url, "Desc": url, "Ext": url}},
        {"MsgType": "TIMLocationElem", "MsgContent": {"Desc": url, "Latitude": 1, "Longitude": 2}},
    ]


def test_rewrite_url_moves_the_media_url_fields_and_nothing_else() -> None:
    """--rewrite-url changes ImageInfoArray[].URL, Url, VideoUrl and ThumbUrl; the same prefix
    in a text, a UUID, a file name or custom data stays."""
    body = _everywhere(OLD + "x")
    edit = Rules(url_rewrites=((OLD, NEW),)).rewrite(_message(body))
    assert edit is not None
    expected = copy.deepcopy(body)
    expected[1]["MsgContent"]["ImageInfoArray"][0]["URL"] = NEW + "x1"
    expected[2]["MsgContent"]["Url"] = NEW + "x"
    expected[3]["MsgContent"]["Url"] = NEW + "x"
    expected[4]["MsgContent"]["VideoUrl"] = NEW + "xv"
    expected[4]["MsgContent"]["ThumbUrl"] = NEW + "xt"
    assert edit["MsgBody"] == expected
    assert body == _everywhere(OLD + "x")  # the message as read is not touched
    assert Rules(url_rewrites=((OLD + "y", NEW),)).rewrite(_message(body)) is None


def test_the_first_matching_prefix_wins() -> None:
    """Several --rewrite-url rules: each URL takes the first whose prefix it starts with."""
    rules = Rules(url_rewrites=((OLD + "a/", NEW + "A/"), (OLD, NEW)))
    body = [{"MsgType": "TIMSoundElem", "MsgContent": {"Url": OLD + "a/1", "UUID": "u"}}]
    edit = rules.rewrite(_message(body))
    assert edit is not None
    assert edit["MsgBody"][0]["MsgContent"]["Url"] == NEW + "A/1"


def test_custom_data_widens_replace_to_data_and_ext() -> None:
    """--replace with --custom-data rewrites TIMCustomElem Data and Ext, Desc only with
    --custom-desc, Sound never."""
    body = [
        {
            "MsgType": "TIMCustomElem",
            "MsgContent": dict.fromkeys(("Data", "Desc", "Ext", "Sound"), "x"),
        }
    ]
    replace = (compile_replacement("x", "y"),)
    changed = Rules(replace, custom_data=True).rewrite(_message(body))
    assert changed is not None
    assert changed["MsgBody"][0]["MsgContent"] == {
        "Data": "y",
        "Desc": "x",
        "Ext": "y",
        "Sound": "x",
    }
    both = Rules(replace, custom_desc=True, custom_data=True).rewrite(_message(body))
    assert both is not None
    assert both["MsgBody"][0]["MsgContent"]["Desc"] == "y"


def test_a_template_that_breaks_json_is_refused_per_message() -> None:
    """A --set-cloud-custom-data template whose result is not JSON where the input was JSON is
    an error for that message, not a silent edit; over text that was not JSON it applies."""
    rules = Rules(cloud_custom_data=parse_template('{"label": "$CloudCustomData"}'))
    with pytest.raises(RuleError, match="CloudCustomData: --set-cloud-custom-data makes"):
        rules.rewrite(_message([], '{"tag": "x"}'))
    plain = rules.rewrite(_message([], "old"))
    assert plain is not None
    assert plain["CloudCustomData"] == '{"label": "old"}'


def test_ccd_rules_edit_json_objects_and_refuse_anything_else() -> None:
    """--ccd-* rules apply in the order given; no CloudCustomData is left alone silently; a
    value that is no JSON object is refused with the reason."""
    rules = Rules(ccd_edits=(CcdEdit.rename("tag", "label"), CcdEdit.set("v", "2")))
    edit = rules.rewrite(_message([], '{"tag": "x", "v": 1}'))
    assert edit is not None
    assert edit["CloudCustomData"] == '{"label": "x", "v": 2}'
    assert "MsgBody" not in edit
    assert rules.rewrite(_message([], None)) is None
    assert rules.rewrite(_message([], "")) is None
    with pytest.raises(RuleError) as caught:
        rules.rewrite(_message([], "tag=x"))
    assert str(caught.value) == "CloudCustomData not JSON (Expecting value); left alone"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: Rules(cloud_custom_data=parse_template("x"), ccd_edits=(CcdEdit.delete("a"),)),
            "--set-cloud-custom-data replaces CloudCustomData whole",
        ),
        (lambda: Rules(custom_data=True), "--custom-desc and --custom-data widen --replace"),
        (lambda: Rules(url_rewrites=(("", NEW),)), "--rewrite-url needs a non-empty OLD_PREFIX"),
        (lambda: CcdEdit.set("v", "two"), "--ccd-set v: 'two' is not a JSON value"),
        (lambda: CcdEdit.delete("a..b"), "bad --ccd-delete path 'a..b'"),
        (lambda: CcdEdit.rename("a.b", "c.d"), "a key is renamed in its own object"),
    ],
)
def test_rule_mistakes_are_configuration_errors(build: Callable[[], Any], message: str) -> None:
    """Rules that contradict each other or cannot be read are refused before anything is read."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        build()


def test_a_rename_may_name_the_new_key_as_a_path_beside_the_old() -> None:
    """--ccd-rename meta.tag meta.label is the same as --ccd-rename meta.tag label."""
    assert CcdEdit.rename("meta.tag", "meta.label") == CcdEdit.rename("meta.tag", "label")


async def test_nothing_planned_says_what_was_seen_and_what_the_rules_read() -> None:
    """A plan that changes nothing explains itself: the element types it saw and the fields
    each rule looks at."""
    stats = PlanStats()
    rules = Rules((compile_replacement("x", "y"),))
    planner = Planner(rules, stats=stats)
    image = _everywhere(OLD)[1]
    for _ in range(100):
        assert await planner.edit(_message([image])) is None
        stats.messages += 1
    assert explain_nothing(stats, rules, None) == (
        "100 messages: 100 TIMImageElem, 0 with CloudCustomData; "
        "--replace reads TIMTextElem Text only"
    )


@pytest.mark.parametrize("text", ["99999999999", "9" * 5000, "2107-01-01", "-5"])
def test_a_time_outside_the_apis_range_is_refused_before_any_request(text: str) -> None:
    """--since/--until beyond unsigned 32-bit seconds is a usage error, not 90001 per pair."""
    with pytest.raises(ConfigError):
        parse_when(text)


def test_a_pairs_csv_line_with_a_cr_or_nul_is_one_bad_line(tmp_path: Path) -> None:
    """A CR or NUL inside a CSV field is a numbered bad line, never a traceback."""
    path = tmp_path / "pairs.csv"
    path.write_bytes(b"a,b\r\x00\nc,d\n")
    found = list(read_pairs(path))
    assert isinstance(found[0], BadPair)
    assert found[0].reason.startswith("pairs line 1: not a CSV row")
    assert found[1] == ("c", "d")
