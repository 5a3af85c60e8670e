"""DNS rebinding protection: addresses a public name must not resolve to (pure).

Why: a browser lets a page talk to whatever its own host name resolves to. If a name the page's
author controls resolves to 192.168.1.1 or 127.0.0.1, the page can reach the user's router
and local services through the user's browser ("DNS rebinding"). Publishing a signed packet
for a new key costs nothing, so for public-key names this filter is on by default
(``pkarr.rebind_protection``); for ICANN names it is an option (``dns.rebind_protection``),
as in dnsmasq (``--stop-dns-rebind``) and unbound (``private-address``).

Blocked (:data:`BLOCKED_V4`, :data:`BLOCKED_V6`): "this network" 0.0.0.0/8 (0.0.0.0 reaches
local services on Linux and macOS), private 10/8, 172.16/12, 192.168/16 (RFC 1918), CGNAT
100.64/10 (RFC 6598), loopback 127/8, link-local 169.254/16 (RFC 3927), and in IPv6 the
unspecified ``::``, loopback ``::1``, unique-local fc00::/7 (RFC 4193), link-local fe80::/10,
deprecated site-local fec0::/10 (RFC 3879); an IPv4-mapped address (``::ffff:a.b.c.d``,
RFC 4291 §2.5.5.2) or one under the NAT64 well-known prefix (64:ff9b::/96, RFC 6052) is judged
by the IPv4 address inside it, since a dual-stack socket or a NAT64 gateway turns it into that
IPv4 address. Not blocked: public, documentation and multicast addresses (no service of the
user's network listens there).

Addresses are removed record by record (A, AAAA, and the ipv4hint/ipv6hint parameters of
HTTPS/SVCB records, RFC 9460 §7.3, which browsers may connect to before A/AAAA arrive): the
rest of the answer is kept, so a name that publishes one public and one private address still
works, over its public one. What a client gets when nothing is left is the caller's decision
(:mod:`pkdns.answer.answerer` and :mod:`pkdns.dns.rebind_icann`).
"""

from __future__ import annotations

import ipaddress

from dnslib import QTYPE, RR, DNSRecord

T_A, T_AAAA, T_SVCB, T_HTTPS = 1, 28, 64, 65
_HINT_SIZE = {4: 4, 6: 16}             # SvcParamKey ipv4hint / ipv6hint -> address size

BLOCKED_V4 = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.168.0.0/16",
))
BLOCKED_V6 = tuple(ipaddress.IPv6Network(n) for n in (
    "::/128", "::1/128", "fc00::/7", "fe80::/10", "fec0::/10",
))
EMBEDS_V4 = tuple(ipaddress.IPv6Network(n) for n in ("::ffff:0:0/96", "64:ff9b::/96"))

# (network, mask) as integers: one AND and one compare per network on the packed address.
_V4 = tuple((int(n.network_address), int(n.netmask)) for n in BLOCKED_V4)
_V6 = tuple((int(n.network_address), int(n.netmask)) for n in BLOCKED_V6)
_EMBED = tuple((int(n.network_address), int(n.netmask)) for n in EMBEDS_V4)


def _v4_blocked(n: int) -> bool:
    return any(n & mask == net for net, mask in _V4)


def _v6_blocked(n: int) -> bool:
    if any(n & mask == net for net, mask in _EMBED):
        return _v4_blocked(n & 0xFFFFFFFF)
    return any(n & mask == net for net, mask in _V6)


def blocked_packed(data: bytes) -> bool:
    """Is this packed address (4 bytes: IPv4, 16: IPv6) one a public name may not use?

    Any other length is not an address and is left alone (the record is malformed, not ours
    to judge here).
    """
    if len(data) == 4:
        return _v4_blocked(int.from_bytes(data, "big"))
    if len(data) == 16:
        return _v6_blocked(int.from_bytes(data, "big"))
    return False


def blocked(address: str) -> bool:
    """:func:`blocked_packed` for an address in text form; False for anything unparseable."""
    try:
        return blocked_packed(ipaddress.ip_address(address).packed)
    except ValueError:
        return False


def clean_hints(params: list[tuple[int, bytes]]) -> tuple[list[tuple[int, bytes]], int]:
    """SvcParams without blocked ipv4hint/ipv6hint addresses; a hint left empty is dropped
    (an empty one is invalid, RFC 9460 §7.3). Returns the params and how many were removed."""
    out: list[tuple[int, bytes]] = []
    removed = 0
    for key, value in params:
        size = _HINT_SIZE.get(key)
        if size is None or len(value) % size:
            out.append((key, value))
            continue
        addrs = [bytes(value[i:i + size]) for i in range(0, len(value), size)]
        kept = [a for a in addrs if not blocked_packed(a)]
        removed += len(addrs) - len(kept)
        if kept:
            out.append((key, b"".join(kept)))
    return out, removed


def svcb_params(data: bytes) -> tuple[bytes, list[tuple[int, bytes]]] | None:
    """Raw SVCB RDATA split into (priority + target, params); None if it does not parse."""
    i = 2
    while i < len(data) and data[i]:
        i += 1 + data[i]
    if i >= len(data):
        return None
    i += 1
    head, params = data[:i], []
    while i < len(data):
        if i + 4 > len(data):
            return None
        key, size = int.from_bytes(data[i:i + 2], "big"), int.from_bytes(data[i + 2:i + 4], "big")
        if i + 4 + size > len(data):
            return None
        params.append((key, data[i + 4:i + 4 + size]))
        i += 4 + size
    return head, params


def _clean_svc(rr: RR) -> int:
    """Strip blocked hints from an HTTPS (dnslib-parsed) or SVCB (raw) record in place."""
    if rr.rtype == T_HTTPS and hasattr(rr.rdata, "params"):
        rr.rdata.params, removed = clean_hints(list(rr.rdata.params))
        return removed
    raw = getattr(rr.rdata, "data", None)
    split = svcb_params(bytes(raw)) if isinstance(raw, bytes | bytearray) else None
    if split is None:
        return 0
    head, params = split
    params, removed = clean_hints(params)
    if removed:
        rr.rdata.data = head + b"".join(k.to_bytes(2, "big") + len(v).to_bytes(2, "big") + v
                                        for k, v in params)
    return removed


def _address_blocked(rr: RR) -> bool:
    if rr.rtype == T_A or rr.rtype == T_AAAA:
        return blocked(str(rr.rdata))
    return False


def filter_message(msg: DNSRecord) -> int:
    """Remove blocked addresses from every section of ``msg`` (in place); how many went.

    Answer and additional both: glue and extra addresses reach clients too.
    """
    removed = 0
    for section in ("rr", "auth", "ar"):
        records = getattr(msg, section)
        kept = []
        for rr in records:
            if _address_blocked(rr):
                removed += 1
                continue
            if rr.rtype in (T_HTTPS, T_SVCB):
                removed += _clean_svc(rr)
            kept.append(rr)
        if len(kept) != len(records):
            setattr(msg, section, kept)
    return removed


def answers_type(msg: DNSRecord, qtype: int) -> bool:
    """Does the answer section still hold a record of ``qtype`` (ANY: any record but CNAME)?"""
    if qtype == QTYPE.ANY:
        return any(rr.rtype != QTYPE.CNAME for rr in msg.rr)
    return any(rr.rtype == qtype for rr in msg.rr)


__all__ = ["BLOCKED_V4", "BLOCKED_V6", "EMBEDS_V4", "answers_type", "blocked", "blocked_packed",
           "clean_hints", "filter_message", "svcb_params"]
