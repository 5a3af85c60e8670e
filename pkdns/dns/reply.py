"""Upstream (and pkarr) replies walked once: TTL offsets, rcode, negative TTL, scrubbing.

:func:`inspect_reply` is the only parse of a forwarded reply. It finds every record's TTL field
(so a cache hit can patch TTLs without parsing, :mod:`pkdns.dns.cache`), the rcode with the
OPT's extended bits, and min(SOA TTL, SOA MINIMUM) from the authority section (RFC 2308 §5). It
cuts the OPT RR out (hop-by-hop, RFC 6891 §6.1.1), clears AA/TC, sets RA, and scrubs: answer
records outside the CNAME chain that starts at the qname are removed (an upstream cannot plant
records for other names), and so are bytes after the last record; authority/additional stay only
inside this one message.
"""

from __future__ import annotations

import dnslib

from pkdns.dns import wire
from pkdns.errors import DecodeError

MAX_RRS = 1024           # more records than this in one reply is not a sane answer


class ReplyInfo:
    """A reply walked once: what caching needs, with the OPT RR already removed.

    A plain class, not a dataclass: compiled (setup.py), a dataclass is still built through
    the interpreted ``__init__`` that ``dataclasses`` generates, once per cache miss.
    """

    __slots__ = ("wire", "qend", "rcode", "offsets", "ttls", "negative_ttl")

    def __init__(self, wire: bytes, qend: int, rcode: int, offsets: tuple[int, ...],
                 ttls: tuple[int, ...], negative_ttl: int | None) -> None:
        self.wire = wire
        self.qend = qend
        self.rcode = rcode                  # including the extended bits from OPT
        self.offsets = offsets              # TTL field offsets in ``wire[qend:]``
        self.ttls = ttls
        self.negative_ttl = negative_ttl    # min(SOA TTL, SOA MINIMUM) with an SOA in authority

    @property
    def ancount(self) -> int:
        return (self.wire[6] << 8) | self.wire[7]


def inspect_reply(data: bytes) -> ReplyInfo:
    """Walk a reply's records once (bounds-checked); scrub it if needed. DecodeError if bad."""
    try:
        return _inspect(data, scrub=True)
    except IndexError:
        raise DecodeError("reply runs past the end") from None


def _inspect(data: bytes, scrub: bool) -> ReplyInfo:
    # Fixed fields are read byte by byte rather than with struct: compiled (setup.py), an
    # index into bytes is a C operation while a struct call goes through the interpreter.
    an = (data[6] << 8) | data[7]
    ns = (data[8] << 8) | data[9]
    ar = (data[10] << 8) | data[11]
    if data[4] or data[5] != 1 or an + ns + ar > MAX_RRS:
        raise DecodeError("reply must have one question and a sane record count")
    qend = wire.skip_name(data, 12) + 4
    chain: set[bytes] | None = None      # names of the CNAME chain, made when first needed
    offsets: list[int] = []
    ttls: list[int] = []
    neg: int | None = None
    rcode, opt_at, opt_end, out_of_chain, i, n = data[3] & 0x0F, -1, -1, False, qend, len(data)
    additional = an + ns                 # record number k is in the additional section from here
    for k in range(additional + ar):
        start = i
        i = wire.skip_name(data, i)
        if i + 10 > n:
            raise DecodeError("record runs past the end")
        rtype = (data[i] << 8) | data[i + 1]
        ttl = (data[i + 4] << 24) | (data[i + 5] << 16) | (data[i + 6] << 8) | data[i + 7]
        rdlen = (data[i + 8] << 8) | data[i + 9]
        rd, i = i + 10, i + 10 + rdlen
        if i > n:
            raise DecodeError("record runs past the end")
        if rtype == wire.T_OPT and k >= additional:
            if opt_at >= 0:
                raise DecodeError("two OPT records")
            opt_at, opt_end, rcode = start, i, rcode | ((ttl >> 24) << 4)
            continue
        ttl = ttl if ttl < 0x80000000 else 0
        offsets.append(rd - 6 - qend)
        ttls.append(ttl)
        if k < an:
            # owner = pointer to the question (the usual case) is in the chain at once
            owner_is_qname = data[start] == 0xC0 and data[start + 1] == 12
            if owner_is_qname and rtype != wire.T_CNAME:
                continue
            if chain is None:
                chain = {data[12:qend - 4].lower()}
            if not owner_is_qname and wire.read_name(data, start) not in chain:
                out_of_chain = True
            elif rtype == wire.T_CNAME:
                chain.add(_cname_target(data, rd, i))
        elif k < additional and rtype == wire.T_SOA and rdlen >= 22:
            minimum = ((data[i - 4] << 24) | (data[i - 3] << 16) | (data[i - 2] << 8)
                       | data[i - 1])
            neg = min(ttl, minimum, neg if neg is not None else ttl)
    # Bytes after the last record go through dnslib too: the cached form ends at the last
    # record, and a name pointing into the cut bytes would point past its end (found by
    # fuzzing: a CNAME target compressed into trailing bytes made a cache entry that no
    # client, nor our own IcannPath.resolve, could parse). dnslib refuses such forward pointers.
    if scrub and (out_of_chain or (opt_at >= 0 and opt_end != i) or i != n):
        return _inspect(_rebuild(data), scrub=False)
    out = _cacheable(data, opt_at if opt_at >= 0 else i, opt_at >= 0, rcode, an, ns, ar)
    return ReplyInfo(out, qend, rcode, tuple(offsets), tuple(ttls), neg)


def _cname_target(data: bytes, rd: int, end: int) -> bytes:
    """The CNAME's target, which must be its whole RDATA (RFC 1035 §3.3.1).

    Found by fuzzing: a CNAME with RDLENGTH 0 "named" the next record's owner; cached with
    that record (an OPT) cut off, its entry no longer parsed.
    """
    if wire.skip_name(data, rd) != end:
        raise DecodeError("CNAME target does not fill its RDATA")
    return wire.read_name(data, rd)


def _cacheable(data: bytes, end: int, cut_opt: bool, rcode: int, an: int, ns: int,
               ar: int) -> bytes:
    """``data[:end]`` as the cache keeps it: ID 0, AA/TC cleared, RA set, and with
    ``cut_opt`` the OPT (the last record, from ``end`` on) left out of the count."""
    if cut_opt:
        ar -= 1
    # bytes(tuple) + one concatenation: compiled, cheaper than joining 11 small pieces
    # (every piece of a join goes through the buffer protocol).
    return bytes((0, 0, data[2] & 0xF9 | 0x80, (data[3] & 0x70) | 0x80 | (rcode & 0x0F), 0, 1,
                  an >> 8, an & 255, ns >> 8, ns & 255, ar >> 8, ar & 255)) + data[12:end]


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
