"""The redaction engine: detect once, apply the policy's operators, restore placeholders.

``Redactor`` is built once per policy (compiled patterns, operators) and shared by every request;
per-request state lives in a ``Session``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from .detectors import (
    BUILTIN,
    NAMES_ADDRESSES,
    PLACEHOLDER_TYPE,
    Detector,
    Entity,
    Scanner,
    names_finder,
    names_first_chars,
    scoped_flags,
)
from .normalize import fold, numeral_tail
from .operators import Operators, Session
from .policy import Policy
from .validators import VALIDATORS

# A detector yields these types; it is switched off only when all of them are disabled.
_DETECTOR_TYPES = {"card": ("CN_BANK_CARD", "CREDIT_CARD")}


def _custom_detector(c) -> Detector:
    check = None
    if c.validator is not None:
        validator = VALIDATORS[c.validator]
        name = c.name

        def check(value: str) -> str | None:
            return name if validator(value) else None

    return Detector(
        name=c.name.lower(),
        type=c.name,
        pattern=scoped_flags(c.pattern),
        check=check,
        context=tuple(c.context),
        context_window=c.context_window,
        has_value="(?P<value>" in c.pattern or "(?<value>" in c.pattern,
        builtin=False,
    )


def _placeholder_regex(fmt: str) -> str:
    """Our own placeholders as a regex: ``<{type}_{n}>`` -> ``<[A-Z][A-Z0-9_]*?_[0-9]{1,6}>``."""
    out = re.escape(fmt)
    out = out.replace(re.escape("{type}"), "[A-Z][A-Z0-9_]*?").replace(re.escape("{n}"), "[0-9]{1,6}")
    return out


class Redactor:
    def __init__(self, policy: Policy, hash_key: bytes) -> None:
        self.policy = policy
        self.ops = Operators(hash_key, policy.placeholder_format, policy.hash_format)
        self.disabled = frozenset(t for t, rule in policy.entities.items() if not rule.enabled)
        # Values the policy allows, as the scanners read them (look-alike characters folded).
        self.allowed = frozenset(fold(term)[0] for term in policy.allow)
        builtin = [d for d in BUILTIN if not set(_DETECTOR_TYPES.get(d.name, (d.type,))) <= self.disabled]
        custom = [_custom_detector(c) for c in policy.custom if c.enabled]
        ph = _placeholder_regex(policy.placeholder_format)
        # Custom detectors come first (a policy can claim a format before the built-ins do); their
        # patterns may hold no trigger character, so they scan the whole text.
        self._request = [Scanner(custom)] if custom else []
        self._request.append(Scanner(builtin, windowed=True))
        self._response = [Scanner(custom)] if custom else []
        self._response.append(Scanner(builtin, windowed=True, placeholder_pattern=ph))
        # Names, addresses and cue-word IDs: gazetteers and cue words, a full scan of their own.
        names = [d for d in NAMES_ADDRESSES if d.type not in self.disabled]
        if names:
            scanner = Scanner(names, finder=names_finder(names), first_chars=names_first_chars(names))
            self._request.append(scanner)
        # A type the policy keeps in answers (``response: keep``) is not looked for there: this tier is
        # a full scan of its own, and in a stream it would run on every delta.
        in_answers = [d for d in names if policy.rule(d.type).response_operator != "keep"]
        if in_answers:
            first = names_first_chars(in_answers)
            self._response.append(Scanner(in_answers, finder=names_finder(in_answers), first_chars=first))
        # The stream redactor's fast path reasons about the built-in patterns and ``<...>`` placeholders
        # only (``sidecar.redaction.streaming``).
        # Names, addresses and WeChat IDs need no digit or other trigger character: with them looked for
        # in answers, every delta takes the full path (cue-word numbers hold digits, never skipped).
        wordy = any(d.type in ("PERSON", "ADDRESS", "WECHAT") for d in in_answers)
        self.builtin_only = not custom and not wordy and policy.placeholder_format.startswith("<")
        # Streaming: a value-only entity (password=...) whose keyword was already sent. Custom detectors
        # (RE2) and built-in ones scan separately, custom first as above.
        value_sets = ([d for d in custom if d.has_value], [d for d in builtin if d.has_value])
        self._values = [Scanner(detectors) for detectors in value_sets if detectors]
        self._ph_type = re.compile(
            _placeholder_regex(policy.placeholder_format).replace("[A-Z][A-Z0-9_]*?", "([A-Z][A-Z0-9_]*?)", 1)
        )
        self._rules = {t: policy.rule(t) for t in [*policy.entities, *(c.name for c in policy.custom)]}
        # The stream's label test asks ``value_open`` of a label's few words again for every number or dash
        # after it, and answers repeat their labels: the answers, remembered (a pure function of the text;
        # bounded, whoever writes the text).
        self.label_value_open = lru_cache(maxsize=1024)(self.value_open)
        # What ``find`` calls per text (``Scanner.run``: one call less than ``Scanner.scan`` per scanner).
        self._request_runs = [s.run for s in self._request]
        self._response_runs = [s.run for s in self._response]

    # -- detection --------------------------------------------------------------------------------
    def find(
        self,
        text: str,
        *,
        response: bool = False,
        pos: int = 0,
        guard: int = 0,
        dropped: list[Entity] | None = None,
    ) -> list[Entity]:
        """Entities starting at ``pos`` or later (the text before is context for the fences).

        ``guard``: where the last entity already sent ended; a keyword before it (inside it) cannot
        start a value entity after ``pos``. ``dropped``: receives the candidates of one scanner that
        lost to an overlapping entity of another (a stream must not cut inside them either)."""
        folded, fmap = fold(text)
        if fmap is not None:  # invisible characters were skipped: scan the folded text, map spans back
            lost: list[Entity] | None = [] if dropped is not None else None
            found = self.find(
                folded, response=response, pos=fmap.to_folded(pos), guard=fmap.to_folded(guard), dropped=lost
            )
            if lost:
                dropped.extend(Entity(e.type, fmap.start(e.start), fmap.end(e.end)) for e in lost)  # type: ignore[union-attr]
            return [Entity(e.type, fmap.start(e.start), fmap.end(e.end)) for e in found]
        text = folded
        lists = []  # a plain loop: no generator per call (most texts hold no entity)
        for run in self._response_runs if response else self._request_runs:
            f = run(text, pos)
            if f:
                lists.append(f)
        if not lists:
            if not pos:
                return []
            found: list[Entity] = []
        else:
            found = lists[0] if len(lists) == 1 else _merge(lists, dropped)
        if pos and self._values:
            # A keyword in the context (``password=``) with its value after ``pos``: that match
            # started first, so it wins over anything found inside the value.
            lo = max(guard, pos - 48)
            started = _merge([s.scan_started_before(text, lo, pos) for s in self._values])
            early = [e for e in started if e.start >= pos]
            if early:
                # What overlapped the value is dropped; the scan goes on after it, as in the whole text
                # (``password=x:+86 138...``: the number after the value, not ``+86`` inside it).
                stop = early[-1].end
                head = [e for e in found if e.end <= early[0].start]
                rest = self.find(text, response=response, pos=stop, guard=stop, dropped=dropped)
                found = _merge([early, head]) + rest
        if self.disabled:
            found = [e for e in found if e.type not in self.disabled]
        if self.allowed:
            found = [e for e in found if text[e.start : e.end] not in self.allowed]
        return found

    def find_many(self, texts: Sequence[str], *, response: bool = False) -> list[list[Entity]]:
        """``[self.find(t, response=response) for t in texts]``, scanner by scanner: each scanner runs
        over every text before the next one starts, so their compiled patterns do not evict each
        other from the CPU caches text after text (~10% of ``custos redact``'s time on short lines).
        The same calls on the same texts, merged per text as ``find`` merges them."""
        out: list[list[Entity]] = [[] for _ in texts]
        plain: list[int] = []
        folded: list[str] = []  # what the scanners read: look-alikes folded one for one
        for i, text in enumerate(texts):
            f, fmap = fold(text)
            if fmap is None:
                plain.append(i)
                folded.append(f)
            else:  # invisible characters: ``find`` scans the folded text and maps the spans back
                out[i] = self.find(text, response=response)
        runs = self._response_runs if response else self._request_runs
        per_scanner = [[run(text, 0) for text in folded] for run in runs]
        disabled, allowed = self.disabled, self.allowed
        for i, text, lists in zip(plain, folded, zip(*per_scanner, strict=True), strict=True):
            hits = [f for f in lists if f]
            if hits:
                found = hits[0] if len(hits) == 1 else _merge(hits)
                if disabled:
                    found = [e for e in found if e.type not in disabled]
                if allowed:
                    found = [e for e in found if text[e.start : e.end] not in allowed]
                out[i] = found
        return out

    def prepare_streaming(self) -> None:
        """Build the answer side's hold-back state now (compiled on first use otherwise, ~15 ms): a
        server calls this at start-up, so that no answer waits for it."""
        for scanner in self._response:
            scanner.prepare_hold()

    def value_open(self, sent: str) -> bool:
        """Streaming: whether a value entity (``password=…``) whose keyword is near the end of ``sent``
        could still take characters that arrive after it. Read as the scanners read (look-alikes folded),
        as ``hold_from`` reads it."""
        folded = fold(sent)[0]
        return any(s.value_open(folded) for s in self._response)

    def hold_from(self, text: str, floor: int) -> int:
        """Streaming: where the tail that could still grow into an entity (or a placeholder) starts."""
        folded, fmap = fold(text)
        low = floor if fmap is None else fmap.to_folded(floor)
        digits, run = numeral_tail(folded)
        cut = max(low, run)
        # A run of numerals that ends the text may stay numerals or become a number: hold what either
        # would hold, and every entity that is not the same in both (``联系人：王 小 明一``).
        for version in (folded, digits) if run < len(folded) else (folded,):
            for s in self._response:  # each scanner only looks before what the others already hold
                cut = min(cut, s.hold_from(version, low, cut))
        if run < len(folded) and cut > low:
            window = max(low, run - _NUMERAL_WINDOW)
            as_numerals = set(self.find(folded, response=True, pos=window))
            as_number = set(self.find(digits, response=True, pos=window))
            if as_numerals != as_number:
                cut = min(cut, max(low, min(e.start for e in as_numerals ^ as_number)))
        if fmap is None:
            return cut
        return len(text) if cut >= len(folded) else max(floor, fmap.start(cut))

    # -- rendering --------------------------------------------------------------------------------
    def render(
        self,
        text: str,
        entities: Iterable[Entity],
        session: Session,
        *,
        response: bool = False,
        restore: frozenset[str] | bool = False,
        start: int = 0,
        end: int | None = None,
    ) -> str:
        """``text[start:end]`` with every entity inside replaced as the policy says."""
        end = len(text) if end is None else end
        out: list[str] = []
        pos = start
        rules = self._rules
        default = self.policy.default
        for ent in entities:
            if ent.end <= start or ent.start >= end:
                continue
            s, e = max(ent.start, start), min(ent.end, end)
            out.append(text[pos:s])
            value = text[s:e]
            if ent.type == PLACEHOLDER_TYPE:
                out.append(self._restore(value, session, restore))
            else:
                rule = rules.get(ent.type, default)
                op = rule.response_operator if response else rule.operator
                if op != "keep":
                    session.count(ent.type)
                out.append(self.ops.apply(op, ent.type, value, rule, session))
            pos = e
        out.append(text[pos:end])
        return "".join(out)

    def _restore(self, placeholder: str, session: Session, restore: frozenset[str] | bool) -> str:
        original = session.originals.get(placeholder)
        if original is None or restore is False:
            return placeholder
        if restore is not True:
            m = self._ph_type.fullmatch(placeholder)
            if m is None or m.group(1) not in restore:
                return placeholder
        session.restored += 1
        return original

    def redact(
        self,
        text: str,
        session: Session | None = None,
        *,
        response: bool = False,
        restore: frozenset[str] | bool = False,
    ) -> str:
        """Redact one whole text (a prompt, a complete answer, a log line)."""
        entities = self.find(text, response=response)
        if not entities:
            return text
        if session is None:
            session = Session()
        return self.render(text, entities, session, response=response, restore=restore)


# How far before a growing run of numerals an entity whose extent depends on it may start: a name or a
# cue word's value before a number (an address after its cue word is the longest, up to 60 characters).
_NUMERAL_WINDOW = 72


def _merge(lists: Iterable[list[Entity]], dropped: list[Entity] | None = None) -> list[Entity]:
    """Entities from several scanners: left to right; on overlap the earlier start (then the
    earlier scanner) wins. The losers go to ``dropped`` when it is given."""
    tagged = sorted((e.start, rank, e) for rank, found in enumerate(lists) for e in found)
    out: list[Entity] = []
    end = -1
    for _, _, e in tagged:
        if e.start >= end:
            out.append(e)
            end = e.end
        elif dropped is not None:
            dropped.append(e)
    return out
