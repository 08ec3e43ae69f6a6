"""Operators turn a detected value into what the model, the logs or the caller see.

``mask`` 138****5678, ``placeholder`` <EMAIL_1> (reversible within one request), ``hash`` keyed
HMAC-SHA256 prefix (stable across requests, so analysts can join without the raw value), ``drop``,
``keep`` and ``replace`` (a fixed text).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from pathlib import Path

from custos.keyfile import create_secret_file

from .policy import EntityRule

_DIGIT_TYPES = frozenset(
    {"CN_PHONE", "CN_LANDLINE", "PHONE", "CN_ID", "CN_BANK_CARD", "CREDIT_CARD", "US_SSN"}
)
_CN_PREFIX = re.compile(r"^(?:\(\+?86\)|(?:\+|00)86)[ -]?")


class Session:
    """Per-request pseudonym state: the same value gets the same placeholder; counts per type.

    Lives only in memory for one request (or one ``custos redact`` run)."""

    __slots__ = ("counts", "last", "numbers", "originals", "restored")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.numbers: dict[tuple[str, str], str] = {}  # (type, normalized value) -> placeholder
        self.originals: dict[str, str] = {}  # placeholder -> original text
        self.last: dict[str, int] = {}  # type -> last placeholder number
        self.restored = 0

    def count(self, type_: str) -> None:
        self.counts[type_] = self.counts.get(type_, 0) + 1


def normalize(type_: str, value: str) -> str:
    """One form per value, so ``138 1234 5678`` and ``+86 13812345678`` share a placeholder/hash."""
    if type_ in _DIGIT_TYPES:
        if type_ == "CN_PHONE":
            value = _CN_PREFIX.sub("", value)
        return "".join(ch for ch in value if ch.isdigit() or ch in "xX").upper()
    if type_ in ("EMAIL", "MAC", "IPV6"):
        return value.lower()
    if type_ == "IBAN":
        return "".join(value.split()).upper()
    return value


def mask(type_: str, value: str, rule: EntityRule) -> str:
    """Keep the first/last characters, mask the rest; separators and the country prefix stay."""
    prefix = ""
    if type_ == "CN_PHONE":
        m = _CN_PREFIX.match(value)
        if m:
            prefix, value = m.group(), value[m.end() :]
    suffix = ""
    if type_ == "EMAIL" and "@" in value:
        value, domain = value.split("@", 1)
        suffix = "@" + domain
    positions = [i for i, ch in enumerate(value) if ch.isalnum()]
    keep_first, keep_last = rule.keep_first, rule.keep_last
    if keep_first + keep_last >= len(positions):
        # Too short to keep anything meaningful: mask all but the first character.
        keep_first, keep_last = min(1, len(positions) - 1), 0
    hidden = set(positions[keep_first : len(positions) - keep_last])
    masked = "".join(rule.mask_char if i in hidden else ch for i, ch in enumerate(value))
    return prefix + masked + suffix


def load_hash_key(key: str | None, key_file: Path) -> bytes:
    """The HMAC key: from config, else from ``key_file``, generated (32 random bytes, mode 0600) once."""
    if key:
        return key.encode()
    try:
        data = key_file.read_bytes().strip()
        if data:
            return data
    except FileNotFoundError:
        pass
    # Two workers starting together must agree on one key: the first file linked into place wins.
    create_secret_file(key_file, os.urandom(32).hex().encode() + b"\n")
    return key_file.read_bytes().strip()


class Operators:
    """Applies a rule to one value. Built once per policy; ``apply`` is the hot path."""

    __slots__ = ("hash_format", "key", "placeholder_format")

    def __init__(self, key: bytes, placeholder_format: str, hash_format: str) -> None:
        self.key = key
        self.placeholder_format = placeholder_format
        self.hash_format = hash_format

    def hash(self, type_: str, value: str, length: int) -> str:
        digest = hmac.new(
            self.key, f"{type_}\x00{normalize(type_, value)}".encode(), hashlib.sha256
        ).hexdigest()
        return self.hash_format.format(type=type_, hash=digest[:length])

    def placeholder(self, type_: str, value: str, session: Session) -> str:
        key = (type_, normalize(type_, value))
        ph = session.numbers.get(key)
        if ph is None:
            n = session.last[type_] = session.last.get(type_, 0) + 1
            ph = self.placeholder_format.format(type=type_, n=n)
            session.numbers[key] = ph
            session.originals[ph] = value
        return ph

    def apply(self, op: str, type_: str, value: str, rule: EntityRule, session: Session) -> str:
        if op == "placeholder":
            return self.placeholder(type_, value, session)
        if op == "mask":
            return mask(type_, value, rule)
        if op == "hash":
            return self.hash(type_, value, rule.hash_length)
        if op == "drop":
            return ""
        if op == "replace":
            return rule.text
        return value  # keep
