"""The client address: the peer, or behind trusted proxies the right-most untrusted X-Forwarded-For hop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.clientip import parse_address, parse_networks, resolve_client_ip

TRUSTED = parse_networks(["127.0.0.1/32", "10.255.0.0/16", "fd00::/8"])


def ip(peer: str, *xff: str, trusted=TRUSTED) -> str:
    return resolve_client_ip(peer, [(b"x-forwarded-for", v.encode("latin-1")) for v in xff], trusted)


def test_right_most_untrusted_hop_behind_trusted_proxies() -> None:
    assert ip("127.0.0.1", "203.0.113.9, 10.255.1.1") == "203.0.113.9"
    assert ip("127.0.0.1", "10.1.1.1, 203.0.113.9") == "203.0.113.9"  # a client cannot prepend its own
    assert ip("10.255.0.7", "198.51.100.1, 203.0.113.9, 10.255.3.3") == "203.0.113.9"
    # Several X-Forwarded-For headers are one list, in order.
    assert ip("127.0.0.1", "198.51.100.1", "203.0.113.9, 10.255.1.1") == "203.0.113.9"


def test_untrusted_peer_its_header_is_ignored() -> None:
    assert ip("198.51.100.7", "10.1.1.1") == "198.51.100.7"
    assert ip("198.51.100.7", "10.255.1.1") == "198.51.100.7"
    assert ip("127.0.0.1", "203.0.113.9", trusted=[]) == "127.0.0.1"  # no trusted proxies at all


def test_no_header_or_every_hop_trusted_keeps_the_peer() -> None:
    assert ip("127.0.0.1") == "127.0.0.1"
    assert ip("127.0.0.1", "10.255.1.1, 10.255.2.2") == "127.0.0.1"


@pytest.mark.parametrize(
    ("xff", "expected"),
    [
        ("203.0.113.9:4711, 10.255.1.1", "203.0.113.9"),  # v4 with a port
        ("[2001:db8::5]:443", "2001:db8::5"),  # v6 with a port
        ("2001:db8::5", "2001:db8::5"),
        ('"203.0.113.9"', "203.0.113.9"),  # quoted
        ("::ffff:203.0.113.9", "203.0.113.9"),  # v4-mapped
        ("203.0.113.9,,  ,10.255.1.1", "203.0.113.9"),  # empty hops are skipped
        ("203.0.113.9, unknown", "127.0.0.1"),  # a malformed hop ends the walk: the peer
        ("203.0.113.9, 10.255.1.1, not-an-ip", "127.0.0.1"),
        ("203.0.113.9, 1.2.3.4.5", "127.0.0.1"),
        ("203.0.113.9, [::1", "127.0.0.1"),
        ("203.0.113.9, 10.0.0.1:x", "127.0.0.1"),
        ("\x00\xff, 203.0.113.9", "203.0.113.9"),  # garbage left of the client is never read
        ("x" * 10000, "127.0.0.1"),  # oversized: not walked
    ],
)
def test_hops_are_parsed_strictly(xff: str, expected: str) -> None:
    assert ip("127.0.0.1", xff) == expected


def test_v6_peer_and_v4_mapped_peer() -> None:
    assert ip("fd00::1", "2001:db8::9") == "2001:db8::9"
    assert ip("::ffff:127.0.0.1", "203.0.113.9") == "203.0.113.9"  # mapped peer is the trusted v4
    assert ip("2001:db8::1", "203.0.113.9") == "2001:db8::1"


def test_peer_that_is_not_an_address_is_kept() -> None:
    assert ip("", "203.0.113.9") == ""
    assert ip("unix-socket", "203.0.113.9") == "unix-socket"


def test_parse_networks() -> None:
    nets = parse_networks(["10.0.0.1/8", "2001:db8::/32", "192.0.2.1"])
    assert [str(n) for n in nets] == ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1/32"]
    with pytest.raises(ValueError, match="300"):
        parse_networks(["10.0.0.300/8"])


@given(st.lists(st.text(max_size=40), max_size=8), st.text(max_size=40))
def test_never_raises_and_never_returns_a_trusted_or_invented_value(hops: list[str], peer: str) -> None:
    raw = ",".join(hops)
    try:
        encoded = raw.encode("latin-1")
    except UnicodeEncodeError:
        encoded = raw.encode("utf-8")
    out = resolve_client_ip(peer, [(b"x-forwarded-for", encoded)], TRUSTED)
    assert isinstance(out, str)
    assert parse_address(out) is not None or out == peer
    out = resolve_client_ip("127.0.0.1", [(b"x-forwarded-for", encoded)], TRUSTED)
    assert parse_address(out) is not None
