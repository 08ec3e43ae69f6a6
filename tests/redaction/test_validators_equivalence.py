"""The optimised validators decide exactly as the plain versions they replaced (kept here as the
reference): on the benchmark's labelled values and near-misses, and on many generated inputs, valid
and invalid, around each validator's edge cases (separators, non-ASCII digits, lengths, prefixes)."""

from __future__ import annotations

import datetime
import ipaddress
import random
import re
import string

import pytest

from bench import redaction_data, redaction_evasions
from sidecar.redaction import validators as v

# --- reference: the straightforward implementations ---------------------------------------------


def ref_digits_of(value: str) -> str:
    return "".join(ch for ch in value if "0" <= ch <= "9")


def ref_cn_resident_id(value: str) -> bool:
    if len(value) != 18:
        return False
    body, check = value[:17], value[17].upper()
    if not body.isdigit():
        return False
    try:
        born = datetime.date(int(body[6:10]), int(body[10:12]), int(body[12:14]))
    except ValueError:
        return False
    if born.year < 1900 or born > datetime.date.today():
        return False
    total = sum(
        int(d) * w for d, w in zip(body, (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2), strict=True)
    )
    return "10X98765432"[total % 11] == check


def ref_luhn(value: str) -> bool:
    digits = ref_digits_of(value)
    if len(digits) < 2:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def ref_iban(value: str) -> bool:
    compact = "".join(value.split()).upper()
    if not 15 <= len(compact) <= 34 or not compact.isalnum() or not compact.isascii():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    if int(number) % 97 != 1:
        return False
    from stdnum import iban as stdnum_iban

    return stdnum_iban.is_valid(compact)


_USCC_VALUE = {ch: i for i, ch in enumerate("0123456789ABCDEFGHJKLMNPQRTUWXY")}
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


def ref_org_code(code: str) -> bool:
    try:
        values = [int(ch, 36) for ch in code[:8]]
    except ValueError:
        return False
    c = 11 - sum(x * w for x, w in zip(values, _ORG_WEIGHTS, strict=True)) % 11
    return code[8] == ("X" if c == 10 else "0" if c == 11 else str(c))


def ref_cn_uscc(value: str) -> bool:
    if len(value) != 18:
        return False
    try:
        nums = [_USCC_VALUE[ch] for ch in value]
    except KeyError:
        return False
    if not value[2:8].isdigit():
        return False
    check = (31 - sum(n * w for n, w in zip(nums[:17], _USCC_WEIGHTS, strict=True)) % 31) % 31
    return nums[17] == check and ref_org_code(value[8:17])


def ref_ipv6(value: str) -> bool:
    if value.count(":") < 2 or not any(ch not in ":." for ch in value):
        return False
    groups = [g for g in value.split(":") if g]
    if len(groups) == 1 and not any(ch.isdigit() for ch in groups[0]):
        return False
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def ref_phone_number(value: str) -> bool:
    import phonenumbers

    try:
        num = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_possible_number(num)


_LOCAL_REGIONS = ("CN", "HK", "TW", "GB", "US", "SG", "JP", "KR", "DE", "FR", "AU", "MO", "CA", "IN")


def ref_local_phone(value: str) -> bool:
    import phonenumbers

    if not 7 <= len(ref_digits_of(value)) <= 12:
        return False
    for region in _LOCAL_REGIONS:
        try:
            if phonenumbers.is_valid_number(phonenumbers.parse(value, region)):
                return True
        except phonenumbers.NumberParseException:
            return False
    return False


def ref_credit_card(value: str) -> bool:
    d = ref_digits_of(value)
    return 13 <= len(d) <= 19 and not d.startswith("62") and v._card_iin_ok(d) and ref_luhn(d)


def ref_cn_bank_card(value: str) -> bool:
    d = ref_digits_of(value)
    return 16 <= len(d) <= 19 and d.startswith("62") and ref_luhn(d)


# --- inputs ----------------------------------------------------------------------------------------


def _bench_values() -> list[str]:
    out: set[str] = set()
    for rec in redaction_data.build(60, 11) + redaction_evasions.build(40, 11):
        for span in rec["pii"] + rec["nonpii"]:
            out.add(span["value"])
            out.add(rec["text"][span["start"] : span["end"]])
    return sorted(out)


BENCH = _bench_values()
ODD = [
    "",
    " ",
    ":",
    "::",
    ":::",
    "0",
    "00",
    "٣٤٥",
    "１２３４５６７８",
    "12²34",
    "1\u200b2",
    "x" * 70,
    "9" * 80,
]


def _with_separators(rng: random.Random, s: str, seps: str = " -.") -> str:
    out = []
    for ch in s:
        out.append(ch)
        if rng.random() < 0.2:
            out.append(rng.choice(seps))
    return "".join(out)


def _luhn_complete(body: str) -> str:
    for d in "0123456789":
        if ref_luhn(body + d):
            return body + d
    raise AssertionError(body)


def _digit_inputs(rng: random.Random, n: int) -> list[str]:
    prefixes = ["4", "51", "55", "2221", "2720", "34", "37", "6011", "65", "644", "35", "2131", "1800", "300"]
    prefixes += [
        "36",
        "38",
        "50",
        "56",
        "6304",
        "2200",
        "2204",
        "60",
        "81",
        "508",
        "9792",
        "637",
        "62",
        "622",
    ]
    out = []
    for _ in range(n):
        length = rng.randint(0, 22)
        body = rng.choice([*prefixes, ""]) + "".join(rng.choices(string.digits, k=length))
        body = body[: max(length, 1)]
        if rng.random() < 0.5 and len(body) >= 2:
            body = _luhn_complete(body[:-1])
        r = rng.random()
        if r < 0.3:
            body = _with_separators(rng, body)
        elif r < 0.35:
            body = body.replace("1", "１")  # fullwidth digit: not an ASCII digit
        elif r < 0.4:
            body = body + rng.choice("xX/%")
        out.append(body)
    return out


# One item of a registry BBAN format (``4!a``: four letters).
_BBAN_ITEM = re.compile(r"([1-9][0-9]*)!([nac])")


def _iban_inputs(rng: random.Random, n: int) -> list[str]:
    from stdnum import iban as stdnum_iban
    from stdnum import numdb

    countries = [cc for cc in (a + b for a in string.ascii_uppercase for b in string.ascii_uppercase)]
    known = [cc for cc in countries if numdb.get("iban").info(cc)[0][1]]
    classes = {"n": string.digits, "a": string.ascii_uppercase, "c": string.digits + string.ascii_uppercase}
    out = []
    for i in range(n):
        cc = rng.choice(known) if rng.random() < 0.8 else rng.choice([*countries, "1A", "A1", "00"])
        spec = numdb.get("iban").info(cc)[0][1].get("bban", "4!n14!n")
        bban = "".join(
            "".join(rng.choices(classes[m.group(2)], k=int(m.group(1)))) for m in _BBAN_ITEM.finditer(spec)
        )
        if rng.random() < 0.2:  # wrong length or a wrong character class somewhere
            bban = bban[:-1] if rng.random() < 0.5 else bban + rng.choice(string.digits)
        if rng.random() < 0.1:
            k = rng.randrange(len(bban))
            bban = bban[:k] + rng.choice(string.ascii_uppercase) + bban[k + 1 :]
        check = stdnum_iban.calc_check_digits(cc + "00" + bban)
        if rng.random() < 0.2:
            check = f"{rng.randint(0, 99):02d}"
        value = cc + check + bban
        r = rng.random()
        if r < 0.3:
            value = " ".join(value[j : j + 4] for j in range(0, len(value), 4))
        elif r < 0.4:
            value = value.lower()
        elif r < 0.45:
            value = value.replace("0", "٠")
        elif r < 0.5:
            value = value[: i % len(value)] + "-" + value[i % len(value) :]
        out.append(value)
    return out


def _uscc_inputs(rng: random.Random, n: int) -> list[str]:
    chars = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    out = []
    for _ in range(n):
        body = "".join(rng.choices(chars, k=2)) + "".join(rng.choices(string.digits, k=6))
        org = "".join(rng.choices(string.digits + string.ascii_uppercase, k=8))
        if rng.random() < 0.6:
            c = 11 - sum(int(ch, 36) * w for ch, w in zip(org, _ORG_WEIGHTS, strict=True)) % 11
            org += "X" if c == 10 else "0" if c == 11 else str(c)
        else:
            org += rng.choice(chars)
        head = body + org
        if rng.random() < 0.7 and all(ch in chars for ch in head):
            s = sum(_USCC_VALUE[ch] * w for ch, w in zip(head, _USCC_WEIGHTS, strict=True))
            value = head + chars[(31 - s % 31) % 31]
        else:
            value = head + rng.choice(chars + "IOSVZ")
        r = rng.random()
        if r < 0.1:
            value = value[:-1]
        elif r < 0.2:
            value = value.replace("1", "١")
        elif r < 0.3:
            value = "".join(rng.choices(string.digits, k=17)) + rng.choice("0123456789X")
        out.append(value)
    return out


def _ipv6_inputs(rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.3:
            addr = ipaddress.IPv6Address(rng.getrandbits(128) >> rng.choice([0, 16, 64, 100, 120, 127]))
            value = rng.choice([addr.compressed, addr.exploded, addr.compressed.upper()])
            if rng.random() < 0.2:
                value = value.rsplit(":", 2)[0] + ":" + str(ipaddress.IPv4Address(rng.getrandbits(32)))
        elif r < 0.45:
            value = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        else:
            value = "".join(rng.choices("0123456789abcdefABCDEFg:::..%/", k=rng.randint(2, 45)))
        if rng.random() < 0.1:
            value += rng.choice(["%eth0", "%1", "/64", ":", "::"])
        out.append(value)
    return out


def _phone_inputs(rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        k = rng.randint(5, 14)
        lead = rng.choice(
            ["", "0", "00", "1", "13", "09", "02", "6", "9", "852", "+", "+86", "+44 ", "(0", "("]
        )
        digits = lead + "".join(rng.choices(string.digits, k=k))
        if lead == "(" or lead == "(0":
            digits = digits[:4] + ")" + digits[4:]
        out.append(_with_separators(rng, digits, " -."))
    return out


def _cn_id_inputs(rng: random.Random, n: int) -> list[str]:
    """18-character IDs around the edges: dates real and impossible, past and future, years before
    1900, every check character (lower-case x too), non-ASCII digits, wrong lengths."""
    out: list[str] = []
    this_year = datetime.date.today().year
    for _ in range(n):
        year = rng.choice([rng.randint(1850, this_year + 5), 1899, 1900, this_year])
        month, day = rng.randint(0, 13), rng.randint(0, 32)
        body = f"{rng.randint(110000, 659999)}{year:04d}{month:02d}{day:02d}{rng.randint(0, 999):03d}"
        if rng.random() < 0.1:
            body = body.replace("1", "\u0661")  # ARABIC-INDIC DIGIT ONE: isdigit, int() reads it
        value = body + rng.choice("0123456789Xx")
        if rng.random() < 0.05:
            value = value[: rng.randint(10, 17)] + value[rng.randint(10, 17) :]
        out.append(value)
    return out


CASES = [
    ("digits_of", v.digits_of, ref_digits_of, _digit_inputs),
    ("luhn", v.luhn, ref_luhn, _digit_inputs),
    ("credit_card", v.credit_card, ref_credit_card, _digit_inputs),
    ("cn_bank_card", v.cn_bank_card, ref_cn_bank_card, _digit_inputs),
    ("iban", v.iban, ref_iban, _iban_inputs),
    ("cn_uscc", v.cn_uscc, ref_cn_uscc, _uscc_inputs),
    ("cn_resident_id", v.cn_resident_id, ref_cn_resident_id, _cn_id_inputs),
    ("ipv6", v.ipv6, ref_ipv6, _ipv6_inputs),
    ("phone_number", v.phone_number, ref_phone_number, _phone_inputs),
    ("local_phone", v.local_phone, ref_local_phone, _phone_inputs),
]


@pytest.mark.parametrize(("name", "new", "ref", "gen"), CASES, ids=[c[0] for c in CASES])
def test_same_decision(name, new, ref, gen) -> None:
    rng = random.Random(f"validators-{name}")
    slow = name in ("phone_number", "local_phone")  # ~50-400 µs a reference call
    inputs = BENCH + ODD + gen(rng, 1500 if slow else 6000)
    if name == "phone_number":
        inputs += ["+" + x for x in inputs if x and x[0].isdigit()][:500]
    cleared = getattr(new, "cache_clear", None)
    if cleared is not None:
        cleared()
    expected = [ref(x) for x in inputs]
    assert any(expected) and not all(expected), name  # both answers are covered
    for rep in range(2):  # the second round answers from the memo where there is one
        mismatched = [x for x, want in zip(inputs, expected, strict=True) if new(x) != want]
        assert not mismatched, (name, rep, mismatched[:10])


def test_iban_every_registered_country() -> None:
    """Each country in python-stdnum's registry, valid and one check digit off, incl. the ones with a
    national check (BE, ES, ME, NO)."""
    from stdnum import iban as stdnum_iban
    from stdnum import numdb

    db = numdb.get("iban")
    rng = random.Random(5)
    for cc in (
        a + b for a in string.ascii_uppercase + string.digits for b in string.ascii_uppercase + string.digits
    ):
        props = db.info(cc)[0][1]
        if not props:
            continue
        for _ in range(30):
            bban = "".join(
                "".join(
                    rng.choices(
                        {"n": string.digits, "a": string.ascii_uppercase}.get(
                            m.group(2), string.digits + string.ascii_uppercase
                        ),
                        k=int(m.group(1)),
                    )
                )
                for m in _BBAN_ITEM.finditer(props["bban"])
            )
            value = cc + stdnum_iban.calc_check_digits(cc + "00" + bban) + bban
            assert v.iban(value) == ref_iban(value), value
            bumped = value[:3] + str((int(value[3]) + 1) % 10) + value[4:]
            assert v.iban(bumped) == ref_iban(bumped) is False, bumped


def test_memo_is_bounded() -> None:
    v.ipv6.cache_clear()  # type: ignore[attr-defined]
    for i in range(v._MEMO_SIZE + 100):
        assert v.ipv6(f"{i:x}::1")
    assert v.ipv6.cache_info().currsize == v._MEMO_SIZE  # type: ignore[attr-defined]
    long = "1:" * 40 + "1"  # longer than a key may be: computed, not stored
    assert len(long) > v._MEMO_MAX_KEY and v.ipv6(long) is ref_ipv6(long) is False
    assert v.ipv6.cache_info().currsize == v._MEMO_SIZE  # type: ignore[attr-defined]


def test_secret_filler_same_as_the_regex() -> None:
    """The key formats' placeholder test (``_filler``: substring tests and one pass for a run of six
    on ASCII bodies) decides as the case-insensitive alternation it stands in for."""
    from sidecar.redaction.detectors import _FILLER, _filler

    rng = random.Random("filler")
    words = ["xxxx", "XxXx", "****", "your", "YOUR", "Example", "hErE", "token", "PlaceHolder", "redacted"]
    alphabet = string.ascii_letters + string.digits + "-_*"
    bodies: list[str] = []
    for _ in range(20000):
        body = "".join(rng.choices(alphabet, k=rng.randint(0, 48)))
        roll = rng.random()
        if roll < 0.2:
            at = rng.randint(0, len(body))
            body = body[:at] + rng.choice(words) + body[at:]
        elif roll < 0.4:
            at = rng.randint(0, len(body))
            ch = rng.choice(alphabet)
            body = (
                body[:at]
                + "".join(rng.choice((ch, ch.swapcase())) for _ in range(rng.randint(4, 7)))
                + body[at:]
            )
        elif roll < 0.45:
            body += rng.choice(["é", "\u212a", "ſ", "１"])  # not ASCII: the regex decides
        bodies.append(body)
    expected = [_FILLER.search(b) is not None for b in bodies]
    assert 0.2 < sum(expected) / len(expected) < 0.8
    assert [b for b, want in zip(bodies, expected, strict=True) if _filler(b) != want] == []
