"""Upstream (and pkarr) replies walked once: TTL offsets, rcode, negative TTL, scrubbing.

:func:`inspect_reply` is the only parse of a forwarded reply. It finds every record's TTL
field (so a cache hit can patch TTLs without parsing, :mod:`pkdns.dns.cache`), the rcode with
the OPT's extended bits, and min(SOA TTL, SOA MINIMUM) from the authority section (RFC 2308
§5). It cuts the OPT RR out (hop-by-hop, RFC 6891 §6.1.1), clears AA/TC, sets RA, and scrubs:
answer records outside the CNAME chain that starts at the qname are removed (reliability
P4/P5); authority/additional stay only inside this one message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import dnslib

from pkdns.dns import wire
from pkdns.errors import DecodeError

MAX_RRS = 1024           # more records than this in one reply is not a sane answer
_rr = struct.Struct(">HHIH").unpack_from
_u32 = struct.Struct(">I").unpack_from


@dataclass(slots=True)
class ReplyInfo:
    """A reply walked once: what caching needs, with the OPT RR already removed."""

    wire: bytes
    qend: int
    rcode: int                    # including the extended bits from OPT
    offsets: tuple[int, ...]      # TTL field offsets in ``wire[qend:]`` (after the question)
    ttls: tuple[int, ...]
    negative_ttl: int | None      # min(SOA TTL, SOA MINIMUM) when an SOA is in authority

    @property
    def ancount(self) -> int:
        return (self.wire[6] << 8) | self.wire[7]


def inspect_reply(data: bytes) -> ReplyInfo:
    """Walk a reply's records once (bounds-checked); scrub it if needed. DecodeError if bad."""
    try:
        return _inspect(data, scrub=True)
    except (IndexError, struct.error):
        raise DecodeError("reply runs past the end") from None


def _inspect(data: bytes, scrub: bool) -> ReplyInfo:
    an, ns, ar = struct.unpack_from(">HHH", data, 6)
    if data[4:6] != b"\x00\x01" or an + ns + ar > MAX_RRS:
        raise DecodeError("reply must have one question and a sane record count")
    qend = wire.skip_name(data, 12) + 4
    chain = {data[12:qend - 4].lower()}
    offsets: list[int] = []
    ttls: list[int] = []
    neg: int | None = None
    rcode, opt, out_of_chain, i = data[3] & 0x0F, None, False, qend
    for section, count in enumerate((an, ns, ar)):
        for _ in range(count):
            start = i
            i = wire.skip_name(data, i)
            rtype, _rclass, ttl, rdlen = _rr(data, i)
            rd, i = i + 10, i + 10 + rdlen
            if i > len(data):
                raise DecodeError("record runs past the end")
            if rtype == wire.T_OPT and section == 2:
                if opt is not None:
                    raise DecodeError("two OPT records")
                opt, rcode = (start, i), rcode | ((ttl >> 24) << 4)
                continue
            ttl = ttl if ttl < 0x80000000 else 0
            offsets.append(rd - 6 - qend)
            ttls.append(ttl)
            if section == 0:
                # owner = pointer to the question (the usual case) is in the chain at once
                owner_is_qname = data[start] == 0xC0 and data[start + 1] == 12
                if not owner_is_qname and wire.read_name(data, start) not in chain:
                    out_of_chain = True
                elif rtype == wire.T_CNAME:
                    chain.add(wire.read_name(data, rd))
            elif section == 1 and rtype == wire.T_SOA and rdlen >= 22:
                neg = min(ttl, _u32(data, i - 4)[0], neg if neg is not None else ttl)
    if scrub and (out_of_chain or (opt is not None and opt[1] != i)):
        return _inspect(_rebuild(data), scrub=False)
    out = _cacheable(data[:i], opt, rcode, an, ns, ar)
    return ReplyInfo(out, qend, rcode, tuple(offsets), tuple(ttls), neg)


def _cacheable(body: bytes, opt: tuple[int, int] | None, rcode: int, an: int, ns: int,
               ar: int) -> bytes:
    """``body`` as the cache keeps it: ID 0, AA/TC cleared, RA set, the OPT (at the end of the
    additional section, ``opt`` = its span) cut out with its count."""
    flags = bytes((body[2] & 0xF9 | 0x80, (body[3] & 0x70) | 0x80 | (rcode & 0x0F)))
    if opt is not None:
        body, ar = body[:opt[0]], ar - 1
    return b"\x00\x00" + flags + struct.pack(">HHHH", 1, an, ns, ar) + body[12:]


def _rebuild(data: bytes) -> bytes:
    """Rare path: drop out-of-chain answers and the OPT with dnslib, then re-pack."""
    try:
        msg = dnslib.DNSRecord.parse(data)
        chain = {str(msg.q.qname).lower()}
        kept = []
        for rr in msg.rr:
            if str(rr.rname).lower() in chain:
                kept.append(rr)
                if rr.rtype == wire.T_CNAME:
                    chain.add(str(rr.rdata.label).lower())
        msg.rr = kept
        msg.ar = [rr for rr in msg.ar if rr.rtype != wire.T_OPT]
        return bytes(msg.pack())
    except Exception as exc:  # dnslib raises many types on bad input
        raise DecodeError(f"unparseable reply: {type(exc).__name__}") from None
