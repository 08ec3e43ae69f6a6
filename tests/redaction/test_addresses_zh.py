"""Chinese addresses without a province or city before them (a county-level name, or a road and a
number alone), after a verb (住在, 送到), and the cue words that are not about a postal address."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.redaction.detectors import _ZH_PLACE_SET
from sidecar.redaction.engine import Redactor
from sidecar.redaction.policy import Policy
from tests.redaction.test_evasions import LOCAL_ADDRESSES, assert_every_two_chunk_split, batch, found

REPO = Path(__file__).resolve().parents[2]
REDACTOR = Redactor(Policy(), b"test-key")


def addresses(text: str) -> list[str]:
    return [text[e.start : e.end] for e in REDACTOR.find(text) if e.type == "ADDRESS"]


@pytest.mark.parametrize(
    ("text", "expected", "why"),
    [
        ("我住在朝阳区建国路88号院3号楼", ["朝阳区建国路88号院3号楼"], "a county-level name first"),
        ("公司在浦东新区张江高科技园区碧波路690号", ["浦东新区张江高科技园区碧波路690号"], "新区"),
        ("昆山市玉山镇前进中路8号", ["昆山市玉山镇前进中路8号"], "a county-level city"),
        ("虹口区四川北路1888号", ["虹口区四川北路1888号"], "the earlier start wins over a province (四川)"),
        ("成都市武侯区人民南路四段1号", ["成都市武侯区人民南路四段1号"], "a road's segment (四段)"),
        ("北京市朝阳区建国路88号", ["北京市朝阳区建国路88号"], "a city first: one address, not two"),
        ("朝阳区很大", [], "a county-level name alone is a place, not an address"),
        ("我们在和平区开会", [], "no street-level part after it"),
    ],
)
def test_a_county_level_name_starts_an_address(text: str, expected: list[str], why: str) -> None:
    assert addresses(text) == expected, why


@pytest.mark.parametrize(
    ("text", "expected", "why"),
    [
        ("我们约在中关村大街27号见面", ["中关村大街27号"], "after 在"),
        ("请到长安街1号", ["长安街1号"], "after 到"),
        ("位于建国门外大街1号国贸大厦", ["建国门外大街1号"], "after 于"),
        ("会议改在学院路30号院3号楼", ["学院路30号院3号楼"], "house and building numbers"),
        ("成府路150号", ["成府路150号"], "at the start of the text"),
        ("我知道3号要开会", [], "道 is no road kind (知道)"),
        ("地铁1号线", [], "a line, not a house number"),
        ("在这里3号楼", [], "里 is no road kind (这里)"),
        ("第3号", [], "no road"),
    ],
)
def test_a_road_and_a_number(text: str, expected: list[str], why: str) -> None:
    assert addresses(text) == expected, why


@pytest.mark.parametrize(
    ("text", "expected", "why"),
    [
        ("他住在上海市浦东新区陆家嘴环路1000号。", ["上海市浦东新区陆家嘴环路1000号"], "a road and number"),
        ("家住朝阳区建国路88号", ["朝阳区建国路88号"], "a county-level name first"),
        ("住在北京朝阳", ["北京朝阳"], "a city first"),
        ("住在这里实在吵得要命", [], "after a verb, no place and no street-level part"),
        ("冬衣送到灾民手中，帮助", [], "送到 someone's hands"),
        ("地址：幸福小区", ["幸福小区"], "after a noun cue anything is the address"),
        ("邮件地址印在你的名片上。", [], "an e-mail address"),
        ("IP地址（只是备用设置", [], "an IP address"),
    ],
)
def test_verbs_and_cue_words(text: str, expected: list[str], why: str) -> None:
    assert addresses(text) == expected, why


@pytest.mark.parametrize(
    ("text", "expected", "why"),
    [
        # Real text (People's Daily, January 1998): the address ends with its house number.
        ("是住在北横东街9号楼的老订户李森林打来", ["北横东街9号楼"], "not the rest of the sentence"),
        ("家住延吉路100号的王慧明一家三口", ["延吉路100号"], "after a verb: 的 ends it"),
        ("来到哈尔滨市友谊路150号梁军的家里", ["哈尔滨市友谊路150号"], "a name after the number"),
        ("位于北京建国路九十九号的中服大厦内", ["北京建国路九十九号"], "a unit's name holds no 的"),
        ("地址：幸福路5号阳光小区3栋101室，谢谢", ["幸福路5号阳光小区3栋101室"], "an estate goes on"),
        ("住址：静安区 中山北路974号 21号楼1468室，电话", ["静安区 中山北路974号 21号楼1468室"], "a space"),
        ("收货地址：966 横山市光复巷529号之8，谢谢", ["966 横山市光复巷529号之8"], "之 (Taiwan) goes on"),
        (
            "地址：北京市朝阳区建国路88号院3号楼2单元201室，电话",
            ["北京市朝阳区建国路88号院3号楼2单元201室"],
            "units",
        ),
    ],
)
def test_an_address_ends_with_its_house_number(text: str, expected: list[str], why: str) -> None:
    assert addresses(text) == expected, why
    assert_every_two_chunk_split(text, batch(text))


@pytest.mark.parametrize(("text", "type_", "value"), LOCAL_ADDRESSES)
def test_local_addresses_are_found(text: str, type_: str, value: str) -> None:
    assert (type_, value) in found(text)


def test_the_place_list_drives_the_rule() -> None:
    assert {"朝阳区", "浦东新区", "昆山市", "阿拉善盟"} <= _ZH_PLACE_SET
    assert not {"市辖区", "城区", "和县"} & _ZH_PLACE_SET  # placeholders and two-character names


def test_traditional_table_is_what_the_tool_builds() -> None:
    # Builds the table from opencc-python-reimplemented 0.1.7's sdist (fetched once, as above).
    tool = REPO / "deploy" / "tools" / "build_zh_t2s.py"
    run = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


def test_place_list_is_what_the_tool_builds() -> None:
    # Builds the list from cpca 0.5.5's wheel (fetched from PyPI into ~/.cache/custos/pkgs once).
    tool = REPO / "deploy" / "tools" / "build_zh_places.py"
    run = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
