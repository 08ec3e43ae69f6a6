"""The stream redactor's fast path for prose: safe by construction, checked against the full path.

The fast path skips the detectors for text that holds none of the characters an entity needs
(``streaming._NEEDS_SCAN``) and holds back the trailing run of letters. It is safe when (1) no entity
can start in such text and (2) it never sends a character that the exact hold (``hold_from``) would
have held; then any split of any text still redacts exactly as the whole text does.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.redaction import detectors, streaming
from sidecar.redaction.detectors import BUILTIN, ENTITY_TYPES
from sidecar.redaction.engine import Redactor
from sidecar.redaction.operators import Session
from sidecar.redaction.policy import Policy
from sidecar.redaction.streaming import StreamRedactor, quiet_cut
from tests.redaction.test_streaming import PII


def builtin_redactor() -> Redactor | None:
    """The default policy with only the built-in pattern detectors (the fast path's scope), or None
    when detectors outside that scope cannot be switched off on their own."""
    builtin_types = {d.type for d in BUILTIN} | {"CN_BANK_CARD", "CREDIT_CARD"}
    others = {t: {"enabled": False} for t in ENTITY_TYPES if t not in builtin_types}
    redactor = Redactor(Policy.model_validate({"entities": others}), b"test-key")
    return redactor if redactor.builtin_only else None


DEFAULT = Redactor(Policy(), b"test-key")
FAST = builtin_redactor()
# The split-point properties hold for every redactor; the fast path is exercised where it applies.
R = FAST or DEFAULT
needs_fast = pytest.mark.skipif(FAST is None, reason="no policy of built-in detectors only: no fast path")

# Prose in pieces: words (lower and upper case, keywords and their prefixes), separators and
# punctuation, the characters that case-fold into keyword letters, CJK text and cue characters.
PROSE = [
    " the",
    " The",
    " world",
    "Hello",
    " and",
    ",",
    ".",
    "!",
    "?",
    ";",
    " ",
    "  ",
    "\n",
    "\t",
    "'",
    '"',
    "(",
    ")",
    "+",
    "%",
    "#",
    "/",
    " password",
    " pass",
    "word",
    " secret",
    " api",
    " key",
    " Secret",
    " eyJ",
    "ey",
    "J",
    "AK",
    "IA",
    " DE",
    " gh",
    "p",
    " xox",
    " sk",
    " E",
    " abc.dead.beef",
    "ſ",
    "K",
    "ı",
    "İ",
    "你好",
    "是",
    "为",
    "密",
    "码",
    "，",
    "。",
    "：",
    "\u3000",
    "\u200b",
    "１",
]
SPLIT = st.lists(st.sampled_from(PROSE) | st.sampled_from(PII), min_size=1, max_size=16).map("".join)
QUIET_TAIL = st.lists(
    st.sampled_from([p for p in PROSE if not streaming._NEEDS_SCAN.search(p)]), min_size=1, max_size=8
).map("".join)


def stream(text: str, cuts: list[int], redactor: Redactor = R) -> str:
    session = Session()
    session.originals.update({"<CN_PHONE_1>": "13800000000", "<EMAIL_1>": "me@example.org"})
    sr = StreamRedactor(redactor, session, restore=True)
    out, last = [], 0
    for cut in [*sorted(cuts), len(text)]:
        out.append(sr.feed(text[last:cut]))
        last = cut
    out.append(sr.flush())
    return "".join(out)


def batch(text: str, redactor: Redactor = R) -> str:
    session = Session()
    session.originals.update({"<CN_PHONE_1>": "13800000000", "<EMAIL_1>": "me@example.org"})
    return redactor.redact(text, session, response=True, restore=True)


@needs_fast
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(context=SPLIT, tail=QUIET_TAIL)
def test_quiet_cut_never_sends_what_the_exact_hold_keeps(context: str, tail: str) -> None:
    """Where the fast path applies, no entity starts in the new text and the fast hold starts at or
    before the exact one."""
    text = context + tail
    base = len(context)
    if streaming._ASSIGNS.search(text, max(0, base - 48), base) or streaming._NEEDS_SCAN.search(
        text, max(0, base - 3)
    ):
        return  # the fast path does not apply here
    assert quiet_cut(R, text, base) <= R.hold_from(text, base)
    assert R.find(text, response=True, pos=base) == []


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), text=SPLIT)
def test_any_split_equals_whole_with_the_fast_path(data: st.DataObject, text: str) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=10))
    assert stream(text, cuts) == batch(text)
    if R is not DEFAULT:
        assert stream(text, cuts, DEFAULT) == batch(text, DEFAULT)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=SPLIT)
def test_char_by_char_equals_whole_with_the_fast_path(text: str) -> None:
    assert stream(text, list(range(len(text)))) == batch(text)


@pytest.mark.parametrize("value", PII[:24])
def test_pii_in_prose_split_at_every_point(value: str) -> None:
    """A value in token-sized prose, cut once at every position: never sent raw, same as whole."""
    text = f"Dear team, the value is {value} and that is all. Thanks"
    core = value.split("=")[-1].removeprefix("密码是")
    for i in range(len(text) + 1):
        out = stream(text, [i])
        assert out == batch(text)
        assert core not in out, (value, i, out)


@needs_fast
def test_prose_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    hold = streaming.quiet_hold

    def counted(redactor: Redactor, context: str, tail: str, exact: bool = True) -> int:
        calls.append(tail)
        return hold(redactor, context, tail, exact)

    monkeypatch.setattr(streaming, "quiet_hold", counted)
    slow = []
    monkeypatch.setattr(R, "find", lambda *a, **k: slow.append(a) or Redactor.find(R, *a, **k))
    sr = StreamRedactor(R, Session())
    words = [" The", " quick", " brown", " fox", ",", " jumps", " over", " the", " lazy", " dog", "."]
    out = "".join(sr.feed(w) for w in words) + sr.flush()
    assert out == "".join(words)
    assert len(calls) == len(words) and not slow[:-1]  # the detectors ran only for the final flush
    # The hold is the last word only, and what goes out is exactly what came in.
    sr = StreamRedactor(R, Session())
    assert sr.feed(" Hello") == " " and sr.clean and sr.held == "Hello"
    assert sr.feed(" world") == "Hello " and sr.held == "world"


def test_custom_detectors_take_the_full_path(tmp_path) -> None:
    policy = Policy.model_validate({"custom": [{"name": "CODENAME", "pattern": r"bluebird"}]})
    redactor = Redactor(policy, b"k")
    assert not redactor.builtin_only
    text = "the plan is blue" + "bird today"
    assert stream(text, [16], redactor) == batch(text, redactor) == "the plan is <CODENAME_1> today"


def test_fast_check_covers_every_trigger_and_anchor() -> None:
    """Drift guard: a new trigger character or anchor of the detectors' prefilter must be one of the
    fast path's characters too (else prose with it would skip the scan)."""
    leading = re.match(r"\[((?:\\.|[^\]])*)\]", detectors._TRIGGER.pattern)
    assert leading is not None
    for ch in re.sub(r"\\(.)", r"\1", leading.group(1)):
        assert streaming._NEEDS_SCAN.search(ch), ch
    for anchor in detectors._ANCHORS:
        assert streaming._NEEDS_SCAN.search(anchor), anchor
