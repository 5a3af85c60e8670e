"""DNS wire format by hand: the query ladder, the hot-path key scan, reply builders.

Why by hand: a cache hit must cost a few microseconds, and building a dnslib/dnspython message
per query costs 7-8x more (dnsperf cache hits: 47 vs 6.3 µs of CPU per query). So queries are
scanned in place and replies are assembled from byte slices. Nothing here touches a socket or a
clock.

Query ladder (the same for UDP, TCP and DoH; Unbound ``worker_check_request``):

    < 12 bytes, QR=1                      -> drop (no reply: no reflection loops)
    opcode != QUERY                       -> NOTIMP
    TC=1, QDCOUNT != 1, AN/NS != 0, AR > 1 -> FORMERR
    bad qname (pointer, label > 63, > 255 octets, truncated), no qtype/qclass -> FORMERR
    bad additional RR (OPT past the end)  -> FORMERR
    EDNS version != 0                     -> BADVERS (RFC 6891 §6.1.3), OPT version 0
    EDNS payload < 512                    -> treated as 512 (RFC 6891 §6.2.5)
    bytes after the question/OPT          -> ignored, answered normally (like Unbound)
Policy (REFUSED for CH/meta types, RFC 8482 for ANY) is the resolver's, not this module's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pkdns.errors import DecodeError

FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, BADVERS = 1, 2, 3, 4, 5, 16
T_CNAME, T_SOA, T_HINFO, T_OPT, T_ANY = 5, 6, 13, 41, 255
C_IN = 1
EDNS_SIZE = 1232              # what we announce, up and down (DNS flag day 2020)
MAX_POINTER_HOPS = 128        # a name has at most 127 labels; more hops is a loop

BYTE = tuple(bytes((i,)) for i in range(256))
"""``BYTE[i] == bytes((i,))`` without building a tuple and a bytes object per use."""
_u16 = struct.Struct(">H").unpack_from
_rr_fixed = struct.Struct(">HHIH").unpack_from   # type, class, ttl, rdlength
_header = struct.Struct(">HBBHHHH")


class Drop(DecodeError):
    """The datagram gets no reply at all (too short, or it is a response)."""


class BadQuery(DecodeError):
    """The query is answered with an error rcode and (when known) its question."""

    def __init__(self, rcode: int, qend: int = 0, do: bool = False) -> None:
        super().__init__(f"bad query: rcode {rcode}")
        self.rcode = rcode
        self.qend = qend
        self.do = do            # BADVERS: the DO bit of the OPT we did read (RFC 3225 §3)


@dataclass(slots=True)
class Query:
    """A query that passed the ladder. ``wire[12:qend]`` is the question exactly as asked.

    Not frozen: a frozen dataclass pays ``object.__setattr__`` per field, on every miss.
    """

    wire: bytes
    qend: int
    qtype: int
    qclass: int
    edns: bool
    udp_size: int          # the client's EDNS payload size (512 without EDNS)
    do: bool
    cd: bool
    key: bytes             # cache key: lowercased qname + qtype + qclass + (DO, CD)

    @property
    def qname(self) -> str:
        """The name lowercased, dotted, without the trailing dot ("" for the root)."""
        return name_text(self.wire[12:self.qend - 4].lower())


def name_text(wire_name: bytes) -> str:
    """Uncompressed wire name -> dotted text (no trailing dot); odd bytes are escaped."""
    labels, i, end = [], 0, len(wire_name)
    while i < end:
        n = wire_name[i]
        if not n:
            break
        labels.append(wire_name[i + 1:i + 1 + n])
        i += n + 1
    return b".".join(labels).decode("ascii", "backslashreplace")


def last_label_at(wire_name: bytes) -> int:
    """Where the last label (the TLD) of an uncompressed wire name starts: the offset of its
    length byte, -1 for the root. No slice is made, so checking a TLD costs no allocation."""
    i, end, last = 0, len(wire_name), -1
    while i < end:
        n = wire_name[i]
        if not n:
            break
        last = i
        i += n + 1
    return last


def name_wire(name: str) -> bytes:
    """Dotted text -> uncompressed wire name (ValueError on an empty/long label)."""
    out = bytearray()
    for label in name.rstrip(".").split(".") if name.strip(".") else []:
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad label in {name!r}")
        out += bytes((len(raw),)) + raw
    return bytes(out) + b"\x00"


def _qname_end(data: bytes, i: int) -> int:
    """Offset after the uncompressed qname starting at ``i``; -1 if it is not a valid qname."""
    n, start = len(data), i
    while i < n:
        ln = data[i]
        if ln == 0:
            return i + 1 if i + 1 - start <= 255 else -1
        if ln & 0xC0:          # pointers and extended label types have no place in a question
            return -1
        i += ln + 1
    return -1


Scanned = tuple[bytes, int, int, int]
"""What :func:`scan` finds: ``(key, qend, udp_size, do)``."""


def scan(data: bytes) -> Scanned | None:
    """Hot path: ``(key, qend, udp_size, do)`` for a plain IN query, else None (slow path).

    ``udp_size`` is 0 without EDNS. Anything unusual returns None and the full ladder decides.
    """
    if len(data) < 17 or data[2] & 0xFA or data[4:11] != b"\x00\x01\x00\x00\x00\x00\x00":
        return None
    qend = _qname_end(data, 12)
    if qend < 0 or qend + 4 > len(data) or data[qend + 2:qend + 4] != b"\x00\x01":
        return None
    qend += 4
    size = do = 0
    ar = data[11]
    if ar == 1:
        if data[qend:qend + 3] != b"\x00\x00\x29" or len(data) < qend + 11 or data[qend + 6]:
            return None
        if qend + 11 + _u16(data, qend + 9)[0] > len(data):
            return None
        size = max(_u16(data, qend + 3)[0], 512)
        do = data[qend + 7] >> 7
    elif ar:
        return None
    flags = (do << 1) | ((data[3] >> 4) & 1)
    return b"".join((data[12:qend - 4].lower(), data[qend - 4:qend], BYTE[flags])), qend, size, do


def parse_query(data: bytes) -> Query:
    """The full ladder (module docstring). Raises :class:`Drop` or :class:`BadQuery`."""
    if len(data) < 12 or data[2] & 0x80:
        raise Drop("short datagram or QR=1")
    if (data[2] >> 3) & 0x0F:
        raise BadQuery(NOTIMP)
    _, _, _, qd, an, ns, ar = _header.unpack_from(data)
    if data[2] & 0x02 or qd != 1 or an or ns or ar > 1:
        raise BadQuery(FORMERR)
    qend = _qname_end(data, 12)
    if qend < 0 or qend + 4 > len(data):
        raise BadQuery(FORMERR)
    qtype, qclass = _u16(data, qend)[0], _u16(data, qend + 2)[0]
    qend += 4
    edns, size, do = False, 512, False
    if ar:
        edns, size, do = _parse_additional(data, qend)
    cd = bool(data[3] & 0x10)
    key = data[12:qend - 4].lower() + data[qend - 4:qend] + bytes(((do << 1) | cd,))
    return Query(data, qend, qtype, qclass, edns, size, do, cd, key)


def _parse_additional(data: bytes, i: int) -> tuple[bool, int, bool]:
    """The one additional RR: (edns, udp_size, do). Non-OPT records are ignored."""
    qend = i
    try:
        i = skip_name(data, i)
        rtype, rclass, ttl, rdlen = _rr_fixed(data, i)
    except (DecodeError, struct.error):
        raise BadQuery(FORMERR, qend) from None
    if i + 10 + rdlen > len(data):
        raise BadQuery(FORMERR, qend)
    if rtype != T_OPT:
        return False, 512, False
    if data[qend] != 0:
        raise BadQuery(FORMERR, qend)        # RFC 6891 §6.1.2: the OPT owner is the root
    if (ttl >> 16) & 0xFF:
        raise BadQuery(BADVERS, qend, bool(ttl & 0x8000))
    return True, max(rclass, 512), bool(ttl & 0x8000)


def skip_name(data: bytes, i: int) -> int:
    """Offset after a (possibly compressed) name at ``i``; DecodeError if it runs off."""
    n = len(data)
    while i < n:
        ln = data[i]
        if ln == 0:
            return i + 1
        if ln & 0xC0 == 0xC0:
            if i + 2 > n:
                break
            return i + 2
        if ln & 0xC0:
            raise DecodeError("extended label type")
        i += ln + 1
    raise DecodeError("name runs past the end")


def read_name(data: bytes, i: int) -> bytes:
    """The lowercased uncompressed wire form of the name at ``i`` (pointer loops bounded)."""
    out = bytearray()
    for _ in range(MAX_POINTER_HOPS):
        if i >= len(data):
            break
        ln = data[i]
        if ln == 0:
            out.append(0)
            if len(out) > 255:
                break
            return bytes(out).lower()
        if ln & 0xC0 == 0xC0:
            if i + 2 > len(data):
                break
            i = _u16(data, i)[0] & 0x3FFF
            continue
        if ln & 0xC0 or i + 1 + ln > len(data):
            break
        out += data[i:i + 1 + ln]
        i += ln + 1
    raise DecodeError("bad compressed name")


_OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"       # payload 1232, DO=0
_OPT_DO = b"\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00"    # DO=1


def opt_rr(do: bool, ext_rcode: int = 0) -> bytes:
    """Our OPT RR: root owner, payload 1232, version 0, DO echoed (RFC 3225 §3)."""
    if not ext_rcode:
        return _OPT_DO if do else _OPT      # every query and reply: no bytes built
    return b"\x00\x00\x29\x04\xd0" + bytes((ext_rcode, 0, 0x80 if do else 0, 0, 0, 0))


def error_reply(data: bytes, rcode: int, qend: int = 0, edns: bool = False,
                do: bool = False) -> bytes:
    """An answer-less reply with ``rcode`` echoing ID, opcode, RD, CD and (if ``qend``) the
    question.

    BADVERS (16) goes into the OPT extended rcode (RFC 6891 §6.1.3), so it forces an OPT.
    CD is copied from the query into every response (RFC 4035 §3.2.2, a MUST).
    """
    flags2 = 0x80 | (data[2] & 0x79)                 # QR, opcode, RD from the query
    flags3 = 0x80 | (data[3] & 0x10) | (rcode & 0x0F)    # RA, CD from the query
    edns = edns or rcode > 15
    head = data[:2] + bytes((flags2, flags3, 0, 1 if qend else 0, 0, 0, 0, 0, 0, 1 if edns else 0))
    question = data[12:qend] if qend else b""
    return head + question + (opt_rr(do, rcode >> 4) if edns else b"")


def error_for(data: bytes, exc: BadQuery) -> bytes:
    """The reply to a query the ladder refused with ``exc``.

    RFC 6891 §7: a response to a query that carried an OPT carries one too, when that OPT can
    be read. It can when the header alone was the problem (TC=1, an opcode we do not
    implement, no question at all) and the rest is at most one question plus the OPT; then
    the DO bit is echoed, as it is with BADVERS (RFC 3225 §3: the OPT was read, only its
    version is unknown).
    """
    if exc.rcode == BADVERS:
        return error_reply(data, BADVERS, exc.qend, True, exc.do)
    edns = do = False
    at = -1
    if data[4:12] == b"\x00\x01\x00\x00\x00\x00\x00\x01":
        qend = _qname_end(data, 12)
        if 0 < qend and qend + 4 <= len(data):
            at = qend + 4
    elif data[4:12] == b"\x00\x00\x00\x00\x00\x00\x00\x01":
        at = 12                                     # QDCOUNT=0: the OPT follows the header
    if at > 0:
        try:
            edns, _, do = _parse_additional(data, at)
        except BadQuery as bad:
            edns, do = bad.rcode == BADVERS, bad.do
    return error_reply(data, exc.rcode, exc.qend, edns, do)


def fitted(response: bytes, qend: int, max_size: int, edns: bool, do: bool) -> bytes:
    """``response`` (longer than ``max_size``) cut the way RFC 2181 §9 asks: TC=1 only when
    data the client needs is lost.

    The additional section (glue, and our OPT, put back) goes first: a client can do without
    it, and TC=1 would send it to TCP for nothing. Then, for a positive answer without DNSSEC
    (no DO), the authority section (its NS records are optional there; with DO it may hold
    the NSEC proof of a wildcard answer). Only when the answer section alone does not fit is
    the reply :func:`truncated_reply`.
    """
    an = (response[6] << 8) | response[7]
    ns = (response[8] << 8) | response[9]
    try:
        i = qend
        for _ in range(an):
            i = _skip_rr(response, i)
        answers_end = i
        for _ in range(ns):
            i = _skip_rr(response, i)
    except DecodeError:
        return truncated_reply(response, qend, edns, do)
    opt = opt_rr(do) if edns else b""
    out = response[:10] + BYTE[0] + BYTE[int(edns)] + response[12:i] + opt
    if len(out) <= max_size:
        return out
    if an and not do and not response[3] & 0x0F:
        out = response[:8] + bytes((0, 0, 0, int(edns))) + response[12:answers_end] + opt
        if len(out) <= max_size:
            return out
    return truncated_reply(response, qend, edns, do)


def _skip_rr(data: bytes, i: int) -> int:
    """Offset after the resource record at ``i``; DecodeError if it runs off the end."""
    i = skip_name(data, i) + 10
    if i > len(data):
        raise DecodeError("record runs past the end")
    i += (data[i - 2] << 8) | data[i - 1]
    if i > len(data):
        raise DecodeError("record runs past the end")
    return i


def truncated_reply(response: bytes, qend: int, edns: bool, do: bool) -> bytes:
    """TC=1 with the question only: what a UDP client gets when the answer does not fit."""
    head = response[:2] + bytes((response[2] | 0x02, response[3], 0, 1, 0, 0, 0, 0, 0, int(edns)))
    return head + response[12:qend] + (opt_rr(do) if edns else b"")


def build_query(qid: int, qname_wire: bytes, qtype: int, qclass: int, do: bool, cd: bool) -> bytes:
    """A recursive query for the upstream, with our EDNS size and the client's DO/CD bits."""
    return build_query_for(qid, qname_wire + struct.pack(">HH", qtype, qclass), do, cd)


def build_query_for(qid: int, question: bytes, do: bool, cd: bool, edns: bool = True) -> bytes:
    """:func:`build_query` from a question already in wire form (qname + qtype + qclass);
    ``edns=False`` leaves the OPT out (a retry for an upstream that answered FORMERR to it)."""
    head = bytes((qid >> 8, qid & 255, 0x01, 0x10 if cd else 0, 0, 1, 0, 0, 0, 0, 0, edns))
    return head + question + (_OPT_DO if do else _OPT) if edns else head + question


def hinfo_any_reply(query: Query, ttl: int = 3600) -> bytes:
    """RFC 8482 §4.2: a synthesized ``HINFO "RFC8482" ""`` instead of every RRset."""
    data = query.wire
    rdata = b"\x07RFC8482\x00"
    rr = b"\xc0\x0c" + struct.pack(">HHIH", T_HINFO, C_IN, ttl, len(rdata)) + rdata
    head = data[:2] + bytes((0x80 | (data[2] & 0x79), 0x80 | (data[3] & 0x10), 0, 1, 0, 1, 0, 0, 0,
                             int(query.edns)))
    return head + data[12:query.qend] + rr + (opt_rr(query.do) if query.edns else b"")


def refusal(data: bytes, rcode: int, tc: bool = False) -> bytes:
    """REFUSED (or an empty TC=1 slip) echoing the question when it parses."""
    try:
        q = parse_query(data)
        reply = error_reply(data, rcode, q.qend, q.edns, q.do)
    except DecodeError:
        reply = error_reply(data, rcode)
    if tc:
        reply = reply[:2] + bytes((reply[2] | 0x02,)) + reply[3:]
    return reply
