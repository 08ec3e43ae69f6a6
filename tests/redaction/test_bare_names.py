"""Chinese names without cue word, title or verb (``person_zh_bare``): each part of the rule, the word
list it reads, and that the list is the one the build tool makes from jieba's dictionary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.redaction.detectors import _bare_names, _BareNames, _zh_bare_name_end
from sidecar.redaction.engine import Redactor
from sidecar.redaction.policy import EntityRule, Policy

REPO = Path(__file__).resolve().parents[2]
REDACTOR = Redactor(Policy(), b"test-key")


def bare(text: str, names: _BareNames | None = None) -> list[str]:
    """The bare names the rule takes at every candidate start, left to right, not overlapping."""
    names = names or _bare_names()
    out, end = [], 0
    for m in names.starts.finditer(text):
        s = m.start()
        e = _zh_bare_name_end(text, s, names)
        if e and s >= end:
            out.append(text[s:e])
            end = e
    return out


@pytest.mark.parametrize(
    ("text", "expected", "why"),
    [
        ("感谢张伟的报告", ["张伟"], "a stop character (的) ends the given name"),
        ("这份报告是周晓梅写的", ["周晓梅"], "two given-name characters"),
        ("李鹏会见了客人", [], "李鹏 is a two-character word in jieba's list (tag nr): kept as a word"),
        ("谢刚会见了客人", ["谢刚"], "no second given-name character where a word starts (会见)"),
        ("经过讨论，欧阳娜娜的建议", ["欧阳娜娜"], "a compound surname"),
        ("东方明珠", [], "a compound that is a very common word (东方) starts no name"),
        ("这是王国的领土", [], "a word starts at the surname (王国)"),
        ("提高效率", [], "a word runs over the surname from the left (提高)"),
        ("黄金周快到了", [], "a name (nr) of jieba's list runs over it from the left (黄金周, marked ~)"),
        ("向大家推荐", [], "向 is not a bare-name surname"),
        ("谢大家的支持", [], "the given name starts a very common word (大家, marked +)"),
        ("那张彩页很好", [], "after a numeral or a demonstrative: a measure word"),
        ("（新华社记者王红摄）", ["王红"], "摄 is never a given name"),
        ("高明说", [], "高 is not a bare-name surname (高 is everyday text)"),
        ("王", [], "a surname alone"),
        ("王a", [], "a given name is Chinese"),
    ],
)
def test_rule(text: str, expected: list[str], why: str) -> None:
    assert bare(text) == expected, why


def test_the_word_list_drives_the_rule() -> None:
    names = _bare_names()
    assert {"王国", "提高"} <= names.words and "大家" in names.common and "黄金周" in names.inside
    assert "黄金周" not in names.words  # a name of jieba's list may start a name
    assert "王国" in bare("这是王国的领土", names._replace(words=names.words - {"王国"}))
    assert bare("谢大家的支持", names._replace(common=frozenset())) == ["谢大家"]
    without = names.inside - {"黄金周"}
    assert bare("黄金周快到了", names._replace(inside=without)) == ["周快到"]


def test_in_the_redactor_and_policy_controlled() -> None:
    text = "感谢张伟的报告写得很好"
    assert [(e.type, text[e.start : e.end]) for e in REDACTOR.find(text)] == [("PERSON", "张伟")]
    off = Policy()
    off.entities["PERSON"] = EntityRule(enabled=False)
    assert Redactor(off, b"k").find(text) == []
    # Answers keep names by default: not looked for there.
    assert REDACTOR.find(text, response=True) == []


def test_word_list_is_what_the_tool_builds() -> None:
    # Builds the list from jieba 0.42.1's dictionary (fetched from PyPI into ~/.cache/custos/pkgs once).
    tool = REPO / "deploy" / "tools" / "build_zh_words.py"
    run = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
