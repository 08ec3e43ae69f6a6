"""Who is calling: the client address, resolved once per request.

The peer address of the connection is the client, unless the peer is one of ``rbac.trusted_proxies``:
then ``X-Forwarded-For`` is read from the right (each proxy appends the address it saw) and the
right-most hop that is not itself a trusted proxy is the client. Whatever lies further left was
written by the client and is never believed.

A hop that is not an IP address (``unknown``, a unix socket name, garbage) ends the walk: the hops left
of it came through someone we cannot vouch for, so the peer is kept, as when every hop is trusted.
Empty hops (``a,,b``) are skipped. Nothing here raises on what a client sends. Do not list the
proxies' own addresses in a role's ``source_cidrs``: such requests are attributed to them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAX_XFF_BYTES = 8192  # a longer header is not walked at all (the peer is kept)
_MAX_HOPS = 64


def parse_networks(cidrs: Iterable[str]) -> list[Network]:
    """CIDRs (or bare addresses) to networks; ValueError names the first bad one."""
    out: list[Network] = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(str(cidr).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{cidr!r} is not an IP network (CIDR)") from None
    return out


def parse_address(value: str) -> Address | None:
    """An IP address from a peer or an X-Forwarded-For hop (``1.2.3.4``, ``1.2.3.4:80``,
    ``[2001:db8::1]:443``, ``2001:db8::1``); IPv4-mapped IPv6 becomes IPv4. None when malformed."""
    text = value.strip().strip('"').strip()
    if not text or len(text) > 64:
        return None
    if text.startswith("["):  # [v6] or [v6]:port
        end = text.find("]")
        if end < 0:
            return None
        tail = text[end + 1 :]
        if tail and not (tail[0] == ":" and tail[1:].isdigit()):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # v4:port
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        text = host
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _trusted(addr: Address, trusted: list[Network]) -> bool:
    return any(addr in net for net in trusted)


def resolve_client_ip(peer: str, headers: list[tuple[bytes, bytes]], trusted: list[Network]) -> str:
    """The client address for this request (see the module doc). ``headers`` are the raw request
    headers, names lower-case; several X-Forwarded-For headers are read as one list, in order."""
    peer_addr = parse_address(peer) if peer else None
    if peer_addr is None:
        return peer or ""
    client = str(peer_addr)
    if not trusted or not _trusted(peer_addr, trusted):
        return client
    values = [v for k, v in headers if k == b"x-forwarded-for"]
    if not values:
        return client
    raw = b",".join(values)
    if len(raw) > _MAX_XFF_BYTES:
        return client
    hops = raw.decode("latin-1").split(",")
    walked = 0
    for hop in reversed(hops):
        if not hop.strip():
            continue
        walked += 1
        if walked > _MAX_HOPS:
            return client
        addr = parse_address(hop)
        if addr is None:
            return client  # what lies further left is unverifiable: keep the peer
        if not _trusted(addr, trusted):
            return str(addr)
    return client
