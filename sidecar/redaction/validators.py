"""Checksum validators: a candidate that fails its check digit is not an entity.

Each validator takes the matched text (separators included) and returns True when it is valid. They
run only on regex candidates (the regex already fixed the shape), but on a line that holds PII they
are most of the cost, so the hot ones avoid per-call object construction and library round trips.
tests/redaction/test_validators_equivalence.py checks each against the plain version it replaced.
"""

from __future__ import annotations

import datetime as _dt
import functools
import ipaddress
import re
from collections.abc import Callable
from operator import mul

Validator = Callable[[str], bool]

# Results of the library-backed validators (libphonenumber, ipaddress) are memoised per matched
# text: a chat client resends the whole conversation on every turn, so the same phone number or
# address is validated again and again, and each libphonenumber call costs tens of microseconds
# (``local_phone`` tries up to 14 regions). The cache is bounded in entries and only holds short
# keys, so a stream of distinct candidates cannot grow memory (at most about 4096 x 64 characters
# per validator); the validators are pure, so a hit returns exactly what a call would.
_MEMO_SIZE = 4096
_MEMO_MAX_KEY = 64


def _memoised(fn: Validator) -> Validator:
    cached = functools.lru_cache(maxsize=_MEMO_SIZE)(fn)

    @functools.wraps(fn)
    def wrapper(value: str) -> bool:
        if len(value) > _MEMO_MAX_KEY:
            return fn(value)
        return cached(value)

    wrapper.cache_clear = cached.cache_clear  # type: ignore[attr-defined]  # for tests
    wrapper.cache_info = cached.cache_info  # type: ignore[attr-defined]
    return wrapper


_NON_DIGITS = re.compile(r"[^0-9]+")


def digits_of(value: str) -> str:
    """The ASCII digits of ``value``, in order (separators and any other character dropped)."""
    if value.isdigit() and value.isascii():  # the common case: already bare ASCII digits
        return value
    return _NON_DIGITS.sub("", value)


# Luhn: every second digit from the right is doubled and its digits summed (0..9 -> 0,2,4,6,8,1,3,5,
# 7,9). Translating those digits and summing the bytes does the arithmetic in C, not per character.
_LUHN_DOUBLE = str.maketrans("0123456789", "0246813579")


def luhn(value: str) -> bool:
    """ISO/IEC 7812 Luhn check over the digits of ``value`` (separators ignored)."""
    digits = digits_of(value)
    n = len(digits)
    if n < 2:
        return False
    rev = digits[::-1]
    total = sum(rev[0::2].encode()) + sum(rev[1::2].translate(_LUHN_DOUBLE).encode()) - 48 * n
    return total % 10 == 0


# ISO 13616 letters count as 10..35: one translate instead of ``str(int(ch, 36))`` per character.
_IBAN_DIGITS = str.maketrans({chr(65 + i): str(10 + i) for i in range(26)})


def iban(value: str) -> bool:
    """ISO 13616 mod-97 check: move the first four characters to the end, letters become 10..35;
    then python-stdnum's IBAN registry (the country's BBAN format and length, and its national check
    where it has one). The mod-97 step first, in C: most candidates fail it, and stdnum's own check
    costs ~15 µs a call."""
    compact = "".join(value.split()).upper()
    if not 15 <= len(compact) <= 34 or not compact.isalnum() or not compact.isascii():
        return False
    if int((compact[4:] + compact[:4]).translate(_IBAN_DIGITS)) % 97 != 1:
        return False
    return _iban_registry(compact)


@_memoised
def _iban_registry(compact: str) -> bool:
    """python-stdnum's IBAN check (country format, length, national check digits), per value."""
    try:
        from stdnum import iban as _stdnum_iban
    except ImportError:  # pragma: no cover - a declared dependency
        return True
    return _stdnum_iban.is_valid(compact)


_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def cn_resident_id(value: str) -> bool:
    """GB 11643-1999: 18 characters, an existing birth date (not in the future), ISO 7064 MOD 11-2."""
    if len(value) != 18:
        return False
    body, check = value[:17], value[17].upper()
    if not body.isdigit():
        return False
    # The check digit first: ten in eleven wrong numbers fail it, before any date is built.
    if _ID_CHECK[sum(map(mul, map(int, body), _ID_WEIGHTS)) % 11] != check:
        return False
    try:
        born = _dt.date(int(body[6:10]), int(body[10:12]), int(body[12:14]))
    except ValueError:
        return False
    return born.year >= 1900 and born <= _dt.date.today()


_USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # GB 32100-2015: no I, O, S, V, Z
_USCC_VALUE = {ch: i for i, ch in enumerate(_USCC_CHARS)}
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def cn_uscc(value: str) -> bool:
    """GB 32100-2015 Unified Social Credit Code: 18 characters, check character mod 31."""
    # The division-code slice test before the 18 alphabet lookups: it is cheaper, and either one
    # failing means False, so the order changes nothing but the cost.
    if len(value) != 18 or not value[2:8].isdigit():  # administrative division code
        return False
    try:
        nums = [_USCC_VALUE[ch] for ch in value]
    except KeyError:
        return False
    check = (31 - sum(map(mul, nums, _USCC_WEIGHTS)) % 31) % 31  # map stops after 17 weights
    return nums[17] == check and _org_code(value[8:17])


_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ORG_CHECK = {11: "0", 10: "X", **{c: str(c) for c in range(1, 10)}}


def _org_code(code: str) -> bool:
    """GB 11714 organization code (characters 9-17 of a USCC): its own mod-11 check character."""
    try:
        values = [int(ch, 36) for ch in code[:8]]
    except ValueError:
        return False
    c = 11 - sum(map(mul, values, _ORG_WEIGHTS)) % 11
    return code[8] == _ORG_CHECK[c]


def us_ssn(value: str) -> bool:
    """SSA rules: area not 000, 666 or 900-999; group not 00; serial not 0000."""
    d = digits_of(value)
    if len(d) != 9:
        return False
    area, group, serial = d[:3], d[3:5], d[5:]
    return area != "000" and area != "666" and area[0] != "9" and group != "00" and serial != "0000"


def ipv4(value: str) -> bool:
    parts = value.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) <= 255 for p in parts)


@_memoised
def ipv6(value: str) -> bool:
    colons = value.count(":")
    if colons < 2 or not any(ch not in ":." for ch in value):  # ``::`` alone is not an address
        return False
    # Without ``::`` an address has exactly 8 groups: 7 colons, or 6 and a dotted IPv4 tail. Clock
    # times (``01:24:07``) are the usual candidate, and ipaddress costs microseconds to say no.
    # (``%`` starts a scope ID, which ipaddress splits off first: leave that to it.)
    if colons not in (6, 7) and "::" not in value and "%" not in value:
        return False
    groups = [g for g in value.split(":") if g]
    if len(groups) == 1 and not any(ch.isdigit() for ch in groups[0]):  # ``Foo::bar``, ``std::cout``
        return False
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def e164(value: str) -> bool:
    """E.164 allows at most 15 digits including the country code; real numbers have at least 8."""
    return 8 <= len(digits_of(value)) <= 15


def _card_iin_ok(d: str) -> bool:
    n = len(d)
    if d[0] == "4":
        return n in (13, 16, 19)
    if d[:2] in ("51", "52", "53", "54", "55") or 2221 <= int(d[:4]) <= 2720:
        return n == 16
    if d[:2] in ("34", "37"):
        return n == 15
    if d[:4] == "6011" or d[:2] == "65" or 644 <= int(d[:3]) <= 649:
        return 16 <= n <= 19
    if d[:2] == "35":  # JCB (3528-3589 assigned; generators and test cards use all of 35xx)
        return 16 <= n <= 19
    if d[:4] in ("2131", "1800"):
        return n == 15
    if d[:3] in ("300", "301", "302", "303", "304", "305") or d[:2] in ("36", "38", "39"):
        return 14 <= n <= 19
    if d[:2] in ("50", "56", "57", "58") or d[:4] in ("6304", "6759", "6761", "6762", "6763"):
        return 12 <= n <= 19  # Maestro
    if "2200" <= d[:4] <= "2204":  # Mir
        return 16 <= n <= 19
    if d[:2] in ("60", "81", "82") or d[:3] == "508" or d[:4] == "9792":  # RuPay, Troy
        return n == 16
    if d[:3] in ("637", "638", "639"):  # InstaPayment
        return n == 16
    return False


@_memoised
def phone_number(value: str) -> bool:
    """An international number (``+`` and a country code) that libphonenumber finds possible for its
    country (length per country and numbering plan); without the library: 8-15 digits (E.164)."""
    try:
        import phonenumbers
    except ImportError:  # pragma: no cover - a declared dependency
        return e164(value)
    try:
        num = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_possible_number(num)


_LOCAL_REGIONS = ("CN", "HK", "TW", "GB", "US", "SG", "JP", "KR", "DE", "FR", "AU", "MO", "CA", "IN")


@_memoised
def local_phone(value: str) -> bool:
    """A number in national format (``020 7946 0958``, ``0912-345-678``, ``2345 6789``) that is a valid
    number in one of the regions most often seen here (only used after a cue word such as Tel or 电话)."""
    try:
        import phonenumbers
    except ImportError:  # pragma: no cover
        return 7 <= len(digits_of(value)) <= 12
    if not 7 <= len(digits_of(value)) <= 12:
        return False
    for region in _LOCAL_REGIONS:
        try:
            if phonenumbers.is_valid_number(phonenumbers.parse(value, region)):
                return True
        except phonenumbers.NumberParseException:
            return False
    return False


def credit_card(value: str) -> bool:
    """International card: a known issuer prefix with its length, and Luhn (UnionPay 62 is its own type)."""
    d = digits_of(value)
    return 13 <= len(d) <= 19 and not d.startswith("62") and _card_iin_ok(d) and luhn(d)


def cn_bank_card(value: str) -> bool:
    """UnionPay card: 62 prefix, 16 to 19 digits, Luhn."""
    d = digits_of(value)
    return 16 <= len(d) <= 19 and d.startswith("62") and luhn(d)


VALIDATORS: dict[str, Validator] = {
    "luhn": luhn,
    "iban": iban,
    "mod97": iban,
    "cn_resident_id": cn_resident_id,
    "cn_uscc": cn_uscc,
    "us_ssn": us_ssn,
    "ipv4": ipv4,
    "ipv6": ipv6,
    "e164": e164,
    "credit_card": credit_card,
    "phone_number": phone_number,
    "local_phone": local_phone,
    "cn_bank_card": cn_bank_card,
}
