"""Streaming redaction of one text stream (one choice of an SSE answer).

An entity can arrive split across chunks (``138`` ``1234`` ``5678``). Each ``feed`` sends at once
everything that can no longer become part of an entity and holds back only the shortest tail that
could still grow into one (a partial match of any detector or of a placeholder). ``flush`` releases
the rest at the end of the stream, redacted as end of text.

Fast path: most deltas are prose (`` the``, `` world``, ``,``). When the text not yet sent (held tail
plus delta) holds no character that any built-in entity needs (a digit, ``@ : = ： _ - < 密 口``), none
of the anchors that stand for one (``eyJ``, ``AKIA``, ``ASIA``), no character that case-folds into a
keyword letter, and the 48 characters before it hold no assignment a value could follow, no entity
can start there, so the detectors are not run (nor for a short number in prose, ``In 2024 the``, a dash
standing alone, or a colon that ends a label, ``**Backend**: finish``, that no entity can take:
``_INERT_NUMBER``, ``_label_colon``): the delta is sent except its trailing run of
characters that a partial match could still consume (letters, ``. % + ( ) ' "``) is held, with the
separators after it unless whitespace follows (then the exact hold is computed from the run's start
only, when the delta brings a word of its own: after a delta of only line breaks and punctuation the
run and they stay held until the next word). Either way the hold is never shorter than the exact one
(``Redactor.hold_from``), so nothing is sent earlier than the full path would send it
(``tests/redaction/test_stream_fast.py`` checks both).
Only with the built-in detectors: custom patterns may match anything, and then every delta takes
the full path.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .detectors import PLACEHOLDER_TYPE, Entity
from .engine import Redactor
from .normalize import FOLDABLE, NUMERAL_RUN_CHARS, ZH_NUMERALS
from .operators import Session

# Already-sent text kept as left context: lookbehind fences and ``password=`` keywords before a
# held value must still be visible to the detectors.
CONTEXT_CHARS = 64


_RUN = (
    frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-@:")
    | FOLDABLE
    | frozenset(ZH_NUMERALS)
)
_RUN_CHARS = "".join(sorted(_RUN))


# Fast path (see the module docstring). A character that some built-in entity needs, or an anchor of
# one, or a character that case-folds into an ASCII keyword letter (ſ -> s, K -> k, ı/İ -> i), or one
# that the detectors fold to ASCII or skip (fullwidth digits, look-alike hyphens, zero-width spaces), or
# a Chinese numeral that may be part of a number written in numerals (``一三八…``: another numeral or a
# digit after it, or the end of the text; not the ``一`` of ``一个``).
# One character class (a second alternative would cost every position of English prose a test): a
# numeral found is skipped by ``_need`` when neither another numeral nor a digit nor the end follows it.
_NEEDS_SCAN = re.compile(
    "["
    + re.escape(
        "0123456789@:=\uff1a_-<\u5bc6\u53e3\u0131\u0130\u017f\u212a" + "".join(sorted(FOLDABLE)) + ZH_NUMERALS
    )
    + "]|eyJ|AKIA|ASIA"
)
_NUMERAL_SET = frozenset(ZH_NUMERALS)
_NUMERAL_RUN_SET = frozenset(NUMERAL_RUN_CHARS)


# A short number in prose (``In 2024 the``, ``about 3 days,``, ``2. Run``) needs no detector either: one to
# four ASCII digits with a space or a line break before (or the stream's start) and, after them, a space and
# a letter (or ``,``/``.``, a space and a letter). Every built-in entity that could hold such a number as
# one of its parts joins it to an earlier trigger character by separators, upper-case groups (IBAN) or one
# extension word (``ext``, ``x``), never by two lower-case words nor across a line break (a private-key
# block, which does, is held whole until its END line); none starts with it (their first groups are followed
# by a digit, a separator and a digit, or are not numbers); a lookahead reads at most four characters past
# an entity. So the number is inert when the 64 characters before it hold no trigger character, or two
# lower-case words of two letters or more come after the last one (``In 2024 the same review took about 3
# days``: ``3`` is inert). Where the text before it is not known (``head`` None), it is not.
# A value after ``is``/``was`` (``my password is hunter2``) starts with a letter or five digits, so no such
# number starts one. ``tests/redaction/test_stream_fast.py`` pins the detectors this argument was made for
# and checks it against the full path on adversarial text.
#
# So is a dash standing alone in prose, a markdown bullet (``\n- item``) or an aside (``this - that``):
# ``-`` with a space or a line break before it (or the stream's start) and a space after it, by the same
# window. Entities that take a ``-`` take it as a separator between groups joined as above, or inside a
# token (``sk-``, ``xoxb-``, base64url) or a ``-----BEGIN`` line, never with a space after it at their
# start; so no entity holds such a dash.
_INERT_NUMBER = re.compile(r"[0-9]{1,4}(?![0-9])(?=[ ][A-Za-z]|[.,][ ][A-Za-z])")
_TWO_LOWER_WORDS = re.compile(r"[a-z]{2,}[^A-Za-z0-9]+[a-z]{2,}")
#
# So is a colon that ends a label (``**Backend**: finish``, ``then:\n``): a space or a line break after
# it, no trigger character in the word it ends, and no value entity open at it (``Redactor.value_open``
# of the text from the word before on: ``password:`` and ``"api_key" :`` are assignments). The entities
# that hold a colon are IPv6 and MAC addresses (hex groups joined by colons, no whitespace: the colon
# that ends one has another colon or a digit in its word, and none is followed by whitespace inside
# one), a value after its keyword (``password=ab:``: the assignment is a trigger character, sent on the
# full path, which keeps the fast path off while the value is open; a keyword right before the colon
# makes it the assignment: asked of ``value_open``), and a private-key block's ``Proc-Type:`` lines
# (held whole with the block). Cue words before a colon (``QQ:``, ``SSN:``, ``电话:``) are context, not
# part of an entity, and no detector holds them; the number after them has digits.
# A number (with a ``.`` or ``,`` after it: ``\n2.`` of a list), a dash or a colon that ends the text:
# inert or not by what comes next.
_MAYBE_INERT = re.compile(r"[0-9]{1,4}[.,]?|-|:")
_INERT_WINDOW = 64
# The first characters of what may be inert: a digit, a dash, a colon.
_INERT_FIRST = frozenset("0123456789-:")
# What splits words where a label colon is looked at (other whitespace counts as part of a word: a longer
# word is asked about, never a shorter one).
_BLANKS = " \n\t"
# The last character of an assignment (``=``, ``=>``, ``:``, ``是``): a value may follow it after blanks.
_VALUE_AFTER = frozenset(":=\uff1a>\u662f\u4e3a")
ValueOpen = Callable[[str], bool]


def _prose_before(text: str, i: int, head: str | None, value_open: ValueOpen | None = None) -> bool:
    """Whether a number at ``text[i]`` stands in prose: a space or a line break before it (or the start
    of the stream: a numbered list, ``1. Install``), and no trigger character in
    the 64 characters before it, or two lower-case words after the last one (see above); a label's
    colon is no trigger here (no value follows it: ``then:\n1. Stop``). ``head``: the stream's text
    just before ``text`` (its context), None when not known; ``value_open``: the redactor's (None:
    every colon counts)."""
    if i >= _INERT_WINDOW:
        window = text[i - _INERT_WINDOW : i]
    elif head is None:
        return False
    else:
        window = (head + text[:i])[-_INERT_WINDOW:]
    if window and window[-1] not in " \n":
        return False  # glued to something (nothing at all before it: the stream's start)
    for trigger in reversed(list(_NEEDS_SCAN.finditer(window))):
        at = trigger.start()
        if window[at] != ":" or window[at + 1] not in " \n" or not _label_colon(window, at, None, value_open):
            return _TWO_LOWER_WORDS.search(window, trigger.end()) is not None
    return True


def _word_start(text: str, end: int) -> int:
    """The start of the word that ends at ``end`` (0 at the text's start)."""
    return 1 + max(text.rfind(" ", 0, end), text.rfind("\n", 0, end), text.rfind("\t", 0, end))


def _blanks_start(text: str, end: int) -> int:
    """Where the blanks that end at ``end`` start (no copy of the text: a run's text may be long)."""
    while end and text[end - 1] in _BLANKS:
        end -= 1
    return end


def _label_colon(text: str, i: int, head: str | None, value_open: ValueOpen | None) -> bool:
    """Whether the colon at ``text[i]`` ends a label (see above), whatever comes after it: no trigger
    character in the word it ends, no assignment character at the end of the word before (``secret :
    ab:``: the value may hold a colon), and no value open at it, asked of the text from two words before
    on (a keyword would be there: ``password :``, ``password is :``). ``head``: the stream's text before
    ``text`` (None: not known); ``value_open``: the redactor's (None: no colon is a label)."""
    if value_open is None:
        return False
    word = _word_start(text, i)
    end = _blanks_start(text, word)
    # The keyword may be two words before the colon's (``password is :``).
    before = _word_start(text, _blanks_start(text, _word_start(text, end)))
    if not before and head:
        # The words may begin in the text before: asked of both joined, as far back as a label's words
        # may go (``None``: what is before that is not looked at).
        near = head[-_INERT_WINDOW:]
        return _label_colon(near + text[: i + 1], len(near) + i, None if near != head else "", value_open)
    if (not before and head is None) or i - before > _INERT_WINDOW:
        return False
    return (
        _NEEDS_SCAN.search(text, word, i) is None
        and (not end or text[end - 1] not in _VALUE_AFTER)
        and not value_open(text[before : i + 1])
    )


def _inert_end(text: str, i: int, head: str | None, value_open: ValueOpen | None = None) -> int:
    """The end of the inert number, dash or colon at ``text[i]`` (see above), or 0."""
    char = text[i]
    if char == "-":
        return i + 1 if text[i + 1 : i + 2] == " " and _prose_before(text, i, head, value_open) else 0
    if char == ":":
        return i + 1 if text[i + 1 : i + 2] in (" ", "\n") and _label_colon(text, i, head, value_open) else 0
    number = _INERT_NUMBER.match(text, i)
    if number is None or not _prose_before(text, i, head, value_open):
        return 0
    return number.end()


def _need(
    text: str, start: int = 0, head: str | None = None, value_open: ValueOpen | None = None
) -> re.Match[str] | None:
    """The first match of ``_NEEDS_SCAN`` from ``start`` on, a Chinese numeral counting only where a
    number written in numerals may go on from it, and an inert number, dash or colon (above) not at
    all. ``head``: the stream's text before ``text`` (None: not known, then no number is inert before
    position 64); ``value_open``: the redactor's (None: every colon counts)."""
    need = _NEEDS_SCAN.search(text, start)
    while need is not None:
        char = need.group()
        if char in _NUMERAL_SET:
            after = need.end()
            if after == len(text) or text[after] in _NUMERAL_RUN_SET:
                return need
        elif char in _INERT_FIRST:
            after = _inert_end(text, need.start(), head, value_open)
            if not after:
                return need
        else:
            return need
        need = _NEEDS_SCAN.search(text, after)
    return need


_SPACE = re.compile(r"\s")
_WORDY = re.compile(r"\w")
# In the left context: an assignment whose value may still be arriving (``password=``, ``密码是``).
_ASSIGNS = re.compile("[:=\uff1a\u662f\u4e3a\u5bc6\u53e3]")
# Those of them that are no trigger character (``_NEEDS_SCAN``): what text of the fast path may hold.
_PROSE_ASSIGNS = re.compile("[\u662f\u4e3a]")
# What a partial match without any of those characters can consume: a run of these...
_HOLD_RUN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ._%+()'\"")
# ...then only separators (``_SEPARATORS`` of the detectors without the characters above; ``\\s`` of
# Python's ``re`` is ``str.isspace``).
_HOLD_SEPS = frozenset("./()+%#'\"")
_HOLD_RUN_CHARS = "".join(sorted(_HOLD_RUN))
_HOLD_SEP_CHARS = "".join(sorted(_HOLD_SEPS))


def next_trigger(text: str, start: int, head: str | None = None, value_open: ValueOpen | None = None) -> int:
    """Where the first character from ``start`` on that the detectors must look at is (a match of
    ``_NEEDS_SCAN`` that ``_need`` counts), or the end of ``text``."""
    need = _need(text, start, head, value_open)
    return len(text) if need is None else need.start()


def quiet_cut(redactor: Redactor, text: str, base: int) -> int:
    """Fast path: where the held tail of ``text[base:]`` starts, never after
    ``redactor.hold_from(text, base)`` (see the module docstring). Valid only when ``text[base:]``
    has no match of ``_NEEDS_SCAN`` that ``_need`` counts and the 48 characters before ``base`` none
    of ``_ASSIGNS``."""
    return base + quiet_hold(redactor, text[:base], text[base:])


def quiet_hold(redactor: Redactor, context: str, tail: str, exact: bool = True) -> int:
    """``quiet_cut`` as an offset into ``tail``, the text not sent yet after ``context``.

    No position before the trailing run of ``_HOLD_RUN`` characters can be held: a partial match from
    there would have to consume the character before the run, which no branch can without a character of
    ``_NEEDS_SCAN`` other than an inert number (which no entity takes). When nothing follows the run but
    separators other than whitespace (``week.``, ``(see``), the run and they are held whole: an e-mail
    address can grow from any letter, and the exact hold is never before the run, so this may hold a
    little more than the exact hold, never less (the next word releases it). Only when whitespace
    follows is the exact hold asked for from the run's start on (``and `` goes out at once, its logprobs
    too); with ``exact`` False the run and the whitespace are held then too (the caller scans them
    next)."""
    # str.rstrip runs in C; the loop alternates because whitespace (``str.isspace``) and the
    # separators may interleave (``word. "``).
    n = len(tail)
    rest = tail.rstrip(_HOLD_SEP_CHARS)
    spaced = False
    while True:
        stripped = rest.rstrip()
        if len(stripped) == len(rest):
            break
        spaced = True
        rest = stripped.rstrip(_HOLD_SEP_CHARS)
    i = len(rest.rstrip(_HOLD_RUN_CHARS))
    if not spaced or len(rest) == n or not exact:
        return i
    return redactor.hold_from(context + tail, len(context) + i) - len(context)


def _context_start(text: str, cut: int) -> int:
    """Keep ``CONTEXT_CHARS`` before the cut, extended to the start of the run of entity characters
    it falls in (up to 512), so detectors see the same left context as in the whole text."""
    start = max(0, cut - CONTEXT_CHARS)
    floor = max(0, cut - 512)
    if start > floor and text[start - 1] in _RUN:
        start = floor + len(text[floor:start].rstrip(_RUN_CHARS))
    return start


class StreamRedactor:
    """``clean`` tells after each ``feed``/``flush`` whether what it returned is exactly the input
    text it released (nothing redacted or restored in it)."""

    __slots__ = (
        "_context",
        "_ctx_quiet",
        "_fast",
        "_guard",
        "_maybe",
        "_pending",
        "_quiet",
        "_value_open",
        "clean",
        "limit",
        "redact",
        "redactor",
        "restore",
        "session",
    )

    def __init__(
        self,
        redactor: Redactor,
        session: Session,
        *,
        restore: frozenset[str] | bool = False,
        limit: int = 16384,
        redact: bool = True,
    ) -> None:
        self.redactor = redactor
        # redact=False: only put placeholders back (response redaction switched off).
        self.redact = redact
        self.session = session
        self.restore = restore
        self.limit = limit
        self._context = ""
        self._pending = ""
        self._guard = 0  # end of the last entity sent, as an offset into the context
        self._fast = redactor.builtin_only
        self._quiet = True  # the held tail has no match of _NEEDS_SCAN
        self._maybe = False  # the held tail ends with what may be inert (``about 3``, ``then:``)
        self._value_open = redactor.label_value_open  # for labels' words only (remembered)
        self._ctx_quiet = True  # the last 48 characters of the context hold no match of _ASSIGNS
        self.clean = True

    @property
    def held(self) -> str:
        return self._pending

    def quiet(self, delta: str) -> bool:
        """Whether ``feed(delta)`` (or, but for a number that is inert only after this redactor's own
        text, of several such deltas joined) takes the fast path: a caller may then join them and
        feed once, at the cost of one delta."""
        if not (self._fast and self._quiet and self._ctx_quiet):
            return False
        return _need(delta, 0, self._context + self._pending, self._value_open) is None

    def quiet_end(self, text: str, start: int) -> int:
        """The end of the stretch of ``text`` from ``start`` on that ``quiet`` accepts: ``start``
        when the redactor's state is not quiet, else where the first character the detectors must
        look at is (or the end of ``text``). ``text[:start]`` is what was fed last."""
        if not (self._fast and self._quiet and self._ctx_quiet):
            return start
        if start < _INERT_WINDOW:
            # A number near the start is inert or not by what was fed before this text too.
            return start + next_trigger(text[start:], 0, self._context + self._pending, self._value_open)
        return next_trigger(text, start, None, self._value_open)

    def feed(self, delta: str) -> str:
        if not delta:
            self.clean = True
            return ""
        pending = self._pending
        # A held number (``about 3``) or label (``then:``) is inert or not once the next delta shows
        # what follows it: the fast path is tried again for it, and for a short tail that is not quiet.
        if self._fast and self._ctx_quiet and (self._quiet or self._maybe or len(pending) <= 4):
            tail = pending + delta if pending else delta
            value_open = self._value_open
            need = _need(tail, max(0, len(pending) - 3) if self._quiet else 0, self._context, value_open)
            if need is None:
                # A delta of only line breaks, spaces or punctuation (``\n``, ``.\n\n``) holds the
                # word before it one delta longer instead of asking for the exact hold: the next
                # word releases it without one.
                out = self._quiet_feed(tail, _WORDY.search(delta) is not None)
                if out is not None:
                    return out
            elif _MAYBE_INERT.fullmatch(tail, at := need.start()) and (
                _label_colon(tail, at, self._context, value_open)
                if tail[at] == ":"
                else _prose_before(tail, at, self._context, value_open)
            ):
                # A short number in prose that ends the text (`` about 3``, ``\n2.``): inert or not
                # once the next delta shows what follows it. Nothing before it can be part of an
                # entity with it (the window above), so all of that goes out and the number alone
                # is held. A label's colon is held with the run of letters before it (``dead:`` may
                # be the start of an IPv6 address, ``**Backend**:`` not).
                if tail[at] == ":":
                    at = quiet_hold(self.redactor, self._context, tail[:at], exact=False)
                out = self._quiet_feed(tail, number_at=at)
                if out is not None:
                    return out
            elif (j := need.start() - len(pending)) > 0:
                # Prose, then the first character that needs the detectors (`` about 3``, `` in 2024``):
                # fed as two deltas, the prose on the fast path and the rest on the full one. Any
                # split of the stream redacts as the whole text does, so this one too; and the full
                # path, starting at the trigger, mostly holds it all (a number may grow) and then
                # needs no ``find`` over the prose. ``clean``: the prose goes out as it came.
                # When the number ends inside this delta (whitespace after it), the full path
                # releases it and scans it anyway: the head's last word is then held whole and
                # scanned with it (one hold_from instead of two). Else the head takes its exact
                # hold, and the full path holds the number without a scan.
                exact = _SPACE.search(delta, j) is None
                head = self._quiet_feed(pending + delta[:j], exact)
                if head is not None:
                    return head + self.feed(delta[j:])
        context = self._context
        text = context + delta if not pending else context + pending + delta
        base = len(context)
        r = self.redactor
        cut = r.hold_from(text, base)
        if len(text) - cut > self.limit:
            cut = len(text)  # an entity this long is not plausible: stop holding, redact as text
        if cut <= base:
            self._pending = text[base:]
            self._quiet = _need(self._pending, 0, context, self._value_open) is None
            self._maybe = False
            self.clean = True
            return ""
        dropped: list[Entity] = []
        entities = self._find(text, base, self._guard, dropped)
        # An entity that runs past the cut is held whole. So is a candidate that lost to an
        # overlapping entity of another scanner: in the whole text its scanner goes on after that
        # candidate's end, so the next feed must scan from before its start, not from inside it
        # (``Tom Hanks-jo@x.comBOB@Y.COM``: the name takes ``jo``, the address scanner skips ``x.com``).
        if dropped:
            entities_and_lost = sorted([*entities, *dropped], reverse=True)
            moved = True
            while moved:
                moved = False
                for ent in entities_and_lost:
                    if ent.start < cut < ent.end:
                        cut = max(base, ent.start)
                        moved = True
        else:
            for ent in entities:
                if ent.start < cut < ent.end:
                    cut = max(base, ent.start)
                    break
        out = r.render(text, entities, self.session, response=True, restore=self.restore, start=base, end=cut)
        ctx_start = _context_start(text, cut)
        sent = [e.end for e in entities if e.end <= cut]
        self._guard = max(0, (sent[-1] if sent else self._guard) - ctx_start)
        self._context = context = text[ctx_start:cut]
        self._pending = text[cut:]
        self._quiet = _need(self._pending, 0, context, self._value_open) is None
        self._maybe = False
        # An assignment in the last 48 characters stops the fast path only where a value could still
        # follow it (``password: ``; not ``Here is the plan:``).
        self._ctx_quiet = _ASSIGNS.search(context, max(0, len(context) - 48)) is None or not r.value_open(
            context
        )
        self.clean = out == text[base:cut]
        return out

    def _quiet_feed(self, tail: str, exact: bool = True, number_at: int | None = None) -> str | None:
        """The fast path (see the module docstring): ``tail`` is the held text plus the delta, with no
        match of ``_NEEDS_SCAN`` that ``_need`` counts, after a context without an assignment; or such
        text and a short number in prose at ``number_at`` that ends it, which is held. None: take the
        full path."""
        if number_at is None:
            i = quiet_hold(self.redactor, self._context, tail, exact)
            # What it holds is a trailing run of letters: no trigger.
            self._quiet = True
            self._maybe = False
        else:
            i = number_at
            self._quiet = False  # the number: the next feed looks at it again
            self._maybe = True
        if len(tail) - i > self.limit:
            return None
        self.clean = True
        if not i:
            self._pending = tail
            return ""
        out = tail[:i]
        self._pending = tail[i:]
        full = self._context + out
        # ``_context_start(full, len(full))``, inlined: this runs once per prose delta.
        n = len(full)
        if n > CONTEXT_CHARS:
            start = n - CONTEXT_CHARS
            if full[start - 1] in _RUN:
                floor = max(0, n - 512)
                start = floor + len(full[floor:start].rstrip(_RUN_CHARS))
            if self._guard:
                self._guard = max(0, self._guard - start)
            full = full[start:]
        self._context = full
        # No value is open in the last 48 characters of the context if ``out`` brings no assignment:
        # the colons it may hold are labels (inert), its other assignment characters are triggers
        # but for ``是``/``为``; after those, the value detectors are asked (``我的密码是`` was sent on the
        # full path, which keeps the fast path off; ``这是`` opens nothing). ``is``/``was`` open a value
        # too (``password is ``) and need no state here: that value's characters before its digit are
        # a run the fast path holds, and its digit is a trigger.
        self._ctx_quiet = _PROSE_ASSIGNS.search(out) is None or not self.redactor.value_open(full)
        return out

    def flush(self) -> str:
        self.clean = True
        if not self._pending:
            return ""
        text = self._context + self._pending
        base = len(self._context)
        guard = self._guard
        self._context = self._pending = ""
        self._guard = 0
        self._quiet = self._ctx_quiet = True
        self._maybe = False
        r = self.redactor
        entities = self._find(text, base, guard)
        out = r.render(text, entities, self.session, response=True, restore=self.restore, start=base)
        self.clean = out == text[base:]
        return out

    def _find(self, text: str, base: int, guard: int, dropped: list[Entity] | None = None) -> list[Entity]:
        entities = self.redactor.find(text, response=True, pos=base, guard=guard, dropped=dropped)
        if not self.redact:
            entities = [e for e in entities if e.type == PLACEHOLDER_TYPE]
        return entities
