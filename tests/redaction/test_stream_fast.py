"""The stream redactor's fast path for prose: safe by construction, checked against the full path.

The fast path skips the detectors for text that holds none of the characters an entity needs
(``streaming._NEEDS_SCAN``) and holds back the trailing run of letters. It is safe when (1) no entity
can start in such text and (2) it never sends a character that the exact hold (``hold_from``) would
have held; then any split of any text still redacts exactly as the whole text does.
"""

from __future__ import annotations

import re
from itertools import accumulate

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
    " is",
    " was",
    " hunter",
    "2",
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


DetectorCalls = tuple[list[tuple[object, ...]], list[tuple[object, ...]]]


@pytest.fixture
def detector_calls(monkeypatch: pytest.MonkeyPatch) -> DetectorCalls:
    """The calls of ``R.find`` and ``R.hold_from`` (the full path) a test makes, as two lists."""
    finds: list[tuple[object, ...]] = []
    holds: list[tuple[object, ...]] = []
    monkeypatch.setattr(R, "find", lambda *a, **k: finds.append(a) or Redactor.find(R, *a, **k))
    monkeypatch.setattr(R, "hold_from", lambda *a: holds.append(a) or Redactor.hold_from(R, *a))
    return finds, holds


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


# A keyword (``password``, ``api_key``, ``client-secret``) and its ``is``/``was``, before the value.
_KEYWORD_IS = re.compile(r"""[A-Za-z][A-Za-z_-]*(?:[ \t]+(?:is|was))?[ \t]*["']?""", re.IGNORECASE)


@needs_fast
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(context=SPLIT, tail=QUIET_TAIL)
def test_quiet_cut_never_sends_what_the_exact_hold_keeps(context: str, tail: str) -> None:
    """Where the fast path applies, no entity starts in the new text and the fast hold starts at or
    before the exact one; but for a keyword and its ``is`` before a value that has not begun
    (``password is``): those go out, and the value is held and found as after ``password=`` sent."""
    text = context + tail
    base = len(context)
    if streaming._ASSIGNS.search(text, max(0, base - 48), base) or streaming._NEEDS_SCAN.search(
        text, max(0, base - 3)
    ):
        return  # the fast path does not apply here
    cut, hold = quiet_cut(R, text, base), R.hold_from(text, base)
    assert cut <= hold or _KEYWORD_IS.fullmatch(text, hold, cut), text[hold:cut]
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
@pytest.mark.parametrize(
    ("tail", "rest"),
    [
        (" password is hunter", "2 ok"),
        (" password is", " hunter2 ok"),
        (" password ", "is hunter2"),
        (" pwd was  'ab", "c1'"),
        (" password is", " 12345678 ok"),
    ],
)
def test_a_keyword_and_its_is_may_go_out_before_the_value(tail: str, rest: str) -> None:
    """The one place the fast hold is after the exact one: a keyword and ``is``/``was`` before their
    value; the value itself is held, and split anywhere the text redacts as whole."""
    text = "the" + tail
    cut, hold = quiet_cut(R, text, 3), R.hold_from(text, 3)
    assert cut == hold or (hold < cut and _KEYWORD_IS.fullmatch(text, hold, cut))
    whole = text + rest
    assert "<PASSWORD_1>" in batch(whole)
    for i in range(len(whole) + 1):
        assert stream(whole, [i]) == batch(whole), i
    assert stream(whole, list(range(len(whole)))) == batch(whole)


@needs_fast
@pytest.mark.parametrize(
    "text", ["the passcode was 12345 ok", "my password is 123456789, then", "pwd is 1234 ok"]
)
def test_a_value_of_digits_after_is_split_anywhere(text: str) -> None:
    """Five digits or more after ``is``/``was`` (``password_is``): the digits take the full path, so
    the value is held as it arrives; split anywhere the text redacts as whole (four digits: no value)."""
    assert ("<PASSWORD_1>" in batch(text)) == ("1234 " not in text)
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            assert stream(text, [i, j]) == batch(text), (i, j)
    assert stream(text, list(range(len(text)))) == batch(text)


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


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=SPLIT)
def test_value_open_tries_the_keyword_starts_the_detectors_can_take(text: str) -> None:
    """``value_open`` tries only the positions ``_KEYWORD_AT`` finds; the same answer as trying every
    keyword letter (the partial match's own fence refuses the others)."""
    for scanner in R._response:
        partial = scanner._values_partial
        if partial is None:
            continue
        for end in range(len(text) + 1):
            lo = max(0, end - 48)
            fast = detectors._value_open(partial, text[:end], lo, end)
            assert fast == detectors._value_open(partial, text[:end], lo, end, builtin=False), text[:end]


def test_fast_check_covers_every_trigger_and_anchor() -> None:
    """Drift guard: a new trigger character or anchor of the detectors' prefilter must be one of the
    fast path's characters too (else prose with it would skip the scan)."""
    leading = re.match(r"\[((?:\\.|[^\]])*)\]", detectors._TRIGGER.pattern)
    assert leading is not None
    for ch in re.sub(r"\\(.)", r"\1", leading.group(1)):
        assert streaming._NEEDS_SCAN.search(ch), ch
    for anchor in detectors._ANCHORS:
        assert streaming._NEEDS_SCAN.search(anchor), anchor


# -- short numbers in prose (``streaming._INERT_NUMBER``) ---------------------------------------------
# The detectors the inert-number argument was made for: every one a stream with the fast path on may
# look for in answers. A new one must be checked against the argument (``sidecar.redaction.streaming``,
# above ``_INERT_NUMBER``) before it is added here.
INERT_ARGUED_FOR = {
    *("aws_key", "card", "cn_id", "cn_id_grouped", "cn_landline", "cn_landline_cue", "cn_passport"),
    *("cn_phone", "cn_uscc", "email", "github_token", "iban", "ipv4", "ipv6", "jwt", "mac", "openai_key"),
    *("password", "password_is", "password_zh", "phone_intl", "phone_local_cue", "phone_nanp"),
    "phone_nanp_bare",
    *("private_key", "qq", "slack_token", "us_ssn", "us_ssn_bare"),
}
# Short numbers next to entities that have short groups, extensions, values after spaces, cue words.
NUMBER_TEXTS = [
    "In 2024 the same review took about 3 days, mostly because",
    "GB29 NWBK ABCD 2024 the",
    "GB82 WEST 1234 5698 7654 32 the 2024 the",
    "MT84 MALT 011 0000 the",
    "call +1 415 555 0123 ext 2024 the",
    "call +1 415 555 0123 x 12 the",
    "(855) 232-2086 ext. 12 the",
    "010-62345678 转 12 the",
    "password:   2024 the",
    'api_key = "  1234 the"',
    "密码是 1234 the",
    "my password is 1234 the and the secret was 12345 the api_key is 1234. The",
    "4111 1111 1111 1111 the 2024 the",
    "4111 1111 1111 the 1111 the",
    "276 52 1423 the",
    "QQ 2024 the 12345",
    "QQ: 12345 the",
    "tel 2024 the 5678",
    "phone 020 7946 0958 the",
    "ssn 123 45 6789 is it",
    "cafe.babe.2024 the",
    "2024.cafe.babe the",
    "192.168 1.10 the",
    "at 8 am, 9 pm. Then 10 more",
    "E1234 5678 the",
    "DE89 3704 0044 0532 0130 00 and 2024 the",
    "a ab 12 ab ab 34 ab 56 cd",
    "1. Install the package\n2. Run the tests, then 3. ship it\n10. Done",
    "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkq\n1. First\n-----END PRIVATE KEY-----",
    "call 555-123-4567\n2. Next",
    "GB29 NWBK\n6016 the",
    "the total was 12.5 and then 3.\n4. Next",
    "see 1, 2. And 3,4 then 5, 6. the",
    "card 4111. 1111. 1111. 1111 the",
    "at 10. 0. 0. 1 the and 8.8. 8.8 the",
    "ssn 123. 45. 6789 the",
    "plan:\n1. Install it\n2. Run it\n3.",
    # Dashes: bullets, asides, separators next to entities.
    "- Install the package\n- Run the tests - then ship it\n-",
    "call 555-123-4567\n- Next one - and more",
    "138 - 1234 - 5678 the and - 5678 the",
    "4111 - 1111 - 1111 - 1111 the and - 1111",
    "ssn 123 - 45 - 6789 the and - 6789",
    "the key sk- abcdefghijklmnopqrstuvwxyz123456 and xoxb- 1234 the",
    "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkq\n- item\n-----END PRIVATE KEY-----",
    "the plan - see\n- jo@example.com and - bob@example.com",
    "GB29 NWBK - 1234 5678 the and - NWBK",
    "- \n- 13800138000 and the - 13800138000",
    "phone - 555 - 0123 the and tel - 020 7946 0958",
    "a - b - c the ab cd - -- --- - -",
    # A value after ``is`` starts with a letter: a number or a dash after it is not one.
    "my password is 2024 the and password was - x and the secret is ab 12 the",
]


def test_inert_number_argument_covers_every_detector_in_answers() -> None:
    from sidecar.redaction.detectors import NAMES_ADDRESSES

    in_answers_with_fast_path = {d.name for d in BUILTIN} | {
        d.name for d in NAMES_ADDRESSES if d.type not in ("PERSON", "ADDRESS", "WECHAT")
    }
    assert in_answers_with_fast_path == INERT_ARGUED_FOR, (
        "a detector was added or removed: check the inert-number argument in "
        "sidecar/redaction/streaming.py for it, then update INERT_ARGUED_FOR"
    )


def _inert_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for m in re.finditer(r"[0-9]+|-", text):
        end = streaming._inert_end(text, m.start(), "")  # "": the text is the whole stream
        if end:
            spans.append((m.start(), end))
    return spans


@pytest.mark.parametrize("text", NUMBER_TEXTS)
def test_an_inert_number_is_in_no_entity_and_never_held(text: str) -> None:
    """Checked against the full path: a number the rule calls inert overlaps no entity of the whole
    text, and no exact hold of any prefix that shows what follows it starts at or before it."""
    for redactor in {R, DEFAULT}:
        entities = redactor.find(text, response=True)
        for start, end in _inert_spans(text):
            assert not [e for e in entities if e.start < end and start < e.end], (text, start, entities)
            for k in range(end + 2, len(text) + 1):
                assert redactor.hold_from(text[:k], 0) > start, (text, text[:k])


def test_inert_numbers_are_those_of_prose() -> None:
    assert _inert_spans("In 2024 the same review took about 3 days, mostly") == [(3, 7), (35, 36)]
    # Joined to a trigger by fewer than two lower-case words: the detectors decide.
    assert _inert_spans("call +1 415 555 0123 ext 2024 the") == []
    assert _inert_spans("GB29 NWBK ABCD 2024 the") == []
    assert _inert_spans("password:   2024 the") == []
    # Not followed by a word, or part of a longer run, or glued to something.
    assert _inert_spans("in 2024.") == _inert_spans("about 3") == _inert_spans("12345 the") == []
    assert _inert_spans("v2024 the") == _inert_spans("(2024) the") == _inert_spans("2024-25 the") == []
    # A numbered list: after a line break, or at the very start of the stream.
    assert _inert_spans("1. Install the package\n2. Run it") == [(0, 1), (23, 24)]
    # Bullets and asides; not a dash glued to something, nor one a trigger is close before.
    assert _inert_spans("- Install it\n- Run the tests - then ship") == [(0, 1), (13, 14), (29, 30)]
    assert _inert_spans("a-b the -c the --- 555 - 0123 the") == []
    assert _inert_spans("call 555-123-4567\n2. Next") == []
    # Where the text before it is not known, not inert.
    assert streaming._inert_end("2024 the", 0, None) == 0
    assert streaming._inert_end("x 2024 the", 2, None) == 0


NUMBERS = [
    " 2024",
    " 3",
    " 12",
    " 7",
    ",",
    " the",
    " days",
    " ext",
    " x",
    " WEST",
    " NWBK",
    "  ",
    " call",
    " QQ",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(), text=st.lists(st.sampled_from(NUMBERS) | st.sampled_from(PII), max_size=16).map("".join)
)
def test_any_split_equals_whole_with_short_numbers(data: st.DataObject, text: str) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=10))
    assert stream(text, cuts) == batch(text)


@needs_fast
def test_short_numbers_in_prose_take_no_detector(detector_calls: DetectorCalls) -> None:
    finds, holds = detector_calls
    sr = StreamRedactor(R, Session())
    words = " In 2024 the same review took about 3 days , mostly because".split(" ")
    out = "".join(sr.feed(" " + w) for w in words[1:])
    assert not finds and not holds and sr.clean
    assert out + sr.held == "".join(" " + w for w in words[1:])


@pytest.mark.parametrize("text", NUMBER_TEXTS)
def test_a_short_number_that_ends_the_text_is_held_from_its_start_at_most(text: str) -> None:
    """``about 3`` (or ``\n2.``, ``\n-``) with what follows not known yet: the fast path sends
    everything before the number and holds the number; the exact hold never starts before it, but for
    a keyword and ``is``/``was`` before it (``my password is 1``: five digits would be a value, found
    then as after a keyword already sent, as ``test_a_keyword_and_its_is_may_go_out_before_the_value``)."""
    for redactor in {R, DEFAULT}:
        for m in re.finditer(r"[0-9]{1,4}[.,]?|-", text):
            for end in range(m.start() + 1, m.end() + 1):
                prefix = text[:end]
                if streaming._MAYBE_INERT.fullmatch(prefix, m.start()) and streaming._prose_before(
                    prefix, m.start(), ""
                ):
                    hold = redactor.hold_from(prefix, 0)
                    assert hold >= m.start() or _KEYWORD_IS.fullmatch(prefix, hold, m.start()), (text, prefix)


@needs_fast
def test_a_colon_without_a_keyword_before_it_keeps_the_fast_path(detector_calls: DetectorCalls) -> None:
    """``Here is the plan:``: the colon takes the full path, the prose after it does not (no value can
    follow it); after ``password:`` the value is held and redacted as in the whole text."""
    finds, holds = detector_calls
    sr = StreamRedactor(R, Session())
    for word in [" Here", " is", " the", " plan", ":", " first"]:
        sr.feed(word)
    finds.clear()
    holds.clear()
    out = "".join(sr.feed(word) for word in [" we", " build", " it", " and", " then", " test"])
    assert out == "first we build it and then " and not finds and not holds
    text = "Here is the password: hunter22 and then the rest of it"
    words = [" " + w for w in text.split(" ")]
    assert stream("".join(words), list(accumulate(map(len, words)))) == batch("".join(words))
    assert "hunter22" not in stream("".join(words), list(accumulate(map(len, words))))
    # Asked of the text as the scanners read it: a keyword in full-width letters is one too.
    assert R.value_open("ｐａｓｓｗｏｒｄ： ") and R.value_open("my password: ")
    assert not R.value_open("Here is the plan: ")


# -- colons that end a label (``streaming._label_colon``) -------------------------------------------------
# Labels next to what makes a colon part of an entity or an assignment: keywords (spaced, quoted, in upper
# case), IPv6 and MAC groups of hex letters, a private-key block's header lines, cue words before numbers.
LABEL_TEXTS = [
    "- **Backend**: finish the migration\n- **Docs**: update it\n\n### Steps\n1. Stop",
    "Here is what each team needs to do before then:\n\n- one\n2. two",
    "Note: 2024 the plan - see\nthen: 12 ab",
    "password: hunter22 and Password : hunter22 and PASSWORD:\thunter22 the",
    'the "api_key" : "abcdef" and secret:  abcdef and passwd :\nabcdef the',
    "my pwd: abc: def and secret : abc:\n the",
    "password=abc: the and password = abc: the",
    "my password is : hunter22 and password is: hunter22 and PASSWORD WAS :\thunter22 and this is: it",
    "my password is hunter22: the and secret was ab.cd1: x and the password is ab: cd1",
    "fe80:: the dead:beef:: and dead:beef: the ::1 the a:b: c",
    "aa:bb:cc:dd:ee:ff: the and dead.beef.cafe: the AA:BB:CC:DD:EE:FF",
    "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,AB: cd\n"
    "MIIBVQIBADANBgkq\nnote: x\n-----END RSA PRIVATE KEY-----\nthen: done",
    "QQ: 12345678 and SSN: 123-45-6789 and Phone: 555 0123 and Email: bob@example.com",
    "IBAN: DE89 3704 0044 0532 0130 00 and Card: 4111 1111 1111 1111 and then: 2024 the",
    "电话: 13800138000 and 密码: abcdef and 密码 : abcdef then:",
    "**password**: hunter22 and then: password: hunter22",
    "a plan:\n- jo@example.com\n- then: bob@example.com and ab: 10.0.0.1 the",
]


def _label_spans(text: str, redactor: Redactor) -> list[int]:
    return [
        m.start()
        for m in re.finditer(":", text)
        if streaming._inert_end(text, m.start(), "", redactor.value_open)  # "": the text is the whole stream
    ]


@pytest.mark.parametrize("text", LABEL_TEXTS)
def test_a_label_colon_is_in_no_entity_and_never_held(text: str) -> None:
    """Checked against the full path: a colon the rule calls a label overlaps no entity of the whole
    text, and no exact hold of any prefix that shows what follows it starts at or before it; nor,
    where the colon ends the text, before the run of letters the fast path holds with it. A private-key
    block is the exception: it takes any line, and the stream holds it whole from its BEGIN line (a
    held tail with a trigger: the fast path is off until its END line)."""
    for redactor in {R, DEFAULT}:
        entities = redactor.find(text, response=True)
        blocks = [e for e in entities if e.type == "PRIVATE_KEY"]
        for block in blocks:
            assert all(
                redactor.hold_from(text[:k], 0) <= block.start for k in range(block.start + 1, block.end)
            )
        entities = [e for e in entities if e not in blocks]
        for at in _label_spans(text, redactor):
            if any(b.start < at < b.end for b in blocks):
                continue
            assert not [e for e in entities if e.start <= at < e.end], (text, at, entities)
            for k in range(at + 2, len(text) + 1):
                assert redactor.hold_from(text[:k], 0) > at, (text, text[:k])
        for m in re.finditer(":", text):
            prefix = text[: m.end()]
            if streaming._label_colon(prefix, m.start(), "", redactor.value_open) and not any(
                b.start < m.start() < b.end for b in blocks
            ):
                held = streaming.quiet_hold(redactor, "", prefix[: m.start()], exact=False)
                assert redactor.hold_from(prefix, 0) >= held, (text, prefix)


def test_label_colons_are_those_of_labels() -> None:
    value_open = R.value_open
    assert _label_spans("- **Backend**: finish it\nthen:\n1. Stop", R) == [13, 29]
    # Assignments: a keyword before the colon, in the same word or the one before, quoted or spaced.
    assert _label_spans("password: x and Password : x and 'secret' : x and PWD:\nx", R) == []
    assert _label_spans("password is: x and password was : x and pwd IS :\nx", R) == []
    assert _label_spans("this is: x and it was : y", R) == [7, 22]
    # Hex groups: another colon or a digit in the word.
    assert _label_spans("fe80:: x and dead:beef: x and ab12: x and a:b: x", R) == []
    # Glued to what follows, or at the end of the text: not (yet) a label.
    assert _label_spans("then:x and note:", R) == []
    assert streaming._label_colon("note:", 4, "", value_open)
    assert not streaming._label_colon("password:", 8, "", value_open)
    # Where the words before it are not known, not a label; known through the text before, they count.
    assert streaming._inert_end("note: x", 4, None, value_open) == 0
    assert streaming._inert_end("word: x", 4, "the pass ", value_open) == 5
    assert streaming._inert_end("word: x", 4, "the pass", value_open) == 0  # ``password:``
    assert streaming._inert_end(": x", 0, "the password ", value_open) == 0
    assert streaming._inert_end("word: x", 4, "the password ", value_open) == 5  # no keyword before ``:``
    assert streaming._inert_end(": x", 0, "the " + "x" * 80 + " password ", value_open) == 0
    # Without the redactor's value_open no colon is one.
    assert streaming._inert_end("note: x", 4, "", None) == 0


@pytest.mark.parametrize("text", NUMBER_TEXTS + LABEL_TEXTS)
def test_texts_with_short_numbers_and_labels_split_anywhere_equal_whole(text: str) -> None:
    for redactor in {R, DEFAULT}:
        whole = batch(text, redactor)
        assert stream(text, list(range(len(text))), redactor) == whole
        for i in range(len(text) + 1):
            assert stream(text, [i], redactor) == whole, (text, i)
    assert "hunter22" not in batch(text) or "**password**" in text  # assignments (and ``is``) are values


@needs_fast
def test_shi_and_wei_without_a_keyword_keep_the_fast_path(detector_calls: DetectorCalls) -> None:
    """``是``/``为`` sent on the fast path: the value detectors are asked whether a value is open, and
    the next delta stays on the fast path when none is (before, it took the full path); after
    ``密码是`` the value is held and redacted."""
    finds, holds = detector_calls
    sr = StreamRedactor(R, Session())
    prose = ["这", "是", "我们", "的", "计划", "，", "它", "为", "大家", "服务", "。"]
    assert [sr.feed(d) for d in prose] == prose and not finds and not holds
    got = "".join(sr.feed(d) for d in ["我的", "密码", "是", "hunter", "22", "，", "好"]) + sr.flush()
    assert got == "我的密码是<PASSWORD_1>，好"


@needs_fast
def test_a_markdown_answer_takes_no_detector(detector_calls: DetectorCalls) -> None:
    """The bench's markdown answer (a heading, bullets with bold labels and colons, a numbered list,
    inline code), token by token: no ``find`` and no ``hold_from``; a label that ends a delta is held
    with its word until the next delta shows a space."""
    from bench.stream import _PIECES, MARKDOWN

    finds, holds = detector_calls
    sr = StreamRedactor(R, Session())
    pieces = _PIECES.findall(MARKDOWN)
    got = [sr.feed(p) for p in pieces]
    assert not finds and not holds and sr.clean
    assert "".join(got) + sr.held == MARKDOWN
    sr = StreamRedactor(R, Session())
    deltas = [" before", " then", ":", "\n\n", "-", " **", "Backend", "**:", " finish"]
    got = [sr.feed(d) for d in deltas]
    # ``then:`` waits for the line break, ``-`` for the space, the colon after ``**`` for the space.
    assert got == [" ", "before ", "", "then:", "\n\n", "- **", "", "Backend**", ": "] and sr.held == "finish"


@needs_fast
def test_a_line_break_holds_the_word_before_it_without_a_detector(detector_calls: DetectorCalls) -> None:
    """A delta of only a line break (or punctuation and one) holds the word before it one delta longer
    instead of asking for its exact hold; the next word releases it, and the list number after it is
    held alone: a markdown answer's lines take no detector."""
    finds, holds = detector_calls
    sr = StreamRedactor(R, Session())
    deltas = [" Run", " the", " tests", " again", ".\n", "\n", "2.", " Ship", " it", " now", ".\n\n"]
    deltas += ["The", " end"]
    got = [sr.feed(d) for d in deltas]
    assert not finds and not holds and sr.clean
    assert got[3:7] == ["tests ", "", "", "again.\n\n"]  # then ``2.`` is held alone
    assert got[7] == "2. " and got[10:] == ["", "now.\n\n", "The "] and sr.held == "end"
    assert "".join(got) + sr.held == "".join(deltas)
    text = "".join(deltas)
    assert stream(text, list(accumulate(map(len, deltas)))) == batch(text)
