"""The query ladder (Unbound ``worker_check_request``) and the hot-path scan, on hand-made bytes."""

from __future__ import annotations

import struct
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pkdns.dns import wire
from pkdns.errors import DecodeError


def q(name: str = "www.example.test", rdtype: str = "A", **kw: Any) -> bytes:
    return dns.message.make_query(name, rdtype, **kw).to_wire()


def header(qid: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0,
           ar: int = 0) -> bytes:
    return struct.pack(">HHHHHH", qid, flags, qd, an, ns, ar)


QNAME = b"\x03www\x07example\x04test\x00"
TAIL = QNAME + b"\x00\x01\x00\x01"


def outcome(data: bytes) -> str | int:
    try:
        wire.parse_query(data)
    except wire.Drop:
        return "drop"
    except wire.BadQuery as exc:
        return exc.rcode
    return "ok"


@pytest.mark.parametrize(("data", "expected"), [
    (b"", "drop"), (b"\x00", "drop"), (b"\x00" * 11, "drop"),                       # < 12 bytes
    (header(qd=1), wire.FORMERR),                                                   # header only
    (header(flags=0x8100) + TAIL, "drop"),                                          # QR=1
    (header(flags=0x0300) + TAIL, wire.FORMERR),                                    # TC=1
    (header(flags=0x0900) + TAIL, wire.NOTIMP),                                     # IQUERY
    (header(flags=0x2900) + TAIL, wire.NOTIMP),                                     # UPDATE
    (header(flags=0x7900) + TAIL, wire.NOTIMP),                                     # opcode 15
    (header(qd=0), wire.FORMERR), (header(qd=2) + TAIL + TAIL, wire.FORMERR),       # QDCOUNT 0, 2
    (header(an=1) + TAIL, wire.FORMERR), (header(ns=1) + TAIL, wire.FORMERR),       # AN, NS
    (header(ar=2) + TAIL, wire.FORMERR),
    (header() + b"\xc0\x0c\x00\x01\x00\x01", wire.FORMERR),                         # pointer loop
    (header() + b"\xc0\xff\x00\x01\x00\x01", wire.FORMERR),                         # ptr past end
    (header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01", wire.FORMERR),       # label 64
    (header() + b"\x41a\x00\x00\x01\x00\x01", wire.FORMERR),                        # type 0x40
    (header() + b"\x81a\x00\x00\x01\x00\x01", wire.FORMERR),                        # type 0x80
    (header() + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01", wire.FORMERR), # name > 255
    (header() + QNAME, wire.FORMERR), (header() + QNAME + b"\x00\x01", wire.FORMERR),  # no qtype
    (header() + TAIL + b"garbage", "ok"),                                           # trailing
    # EDNS version 1
    (header(ar=1) + TAIL + b"\x00\x00\x29\x10\x00\x00\x01\x00\x00\x00\x00", wire.BADVERS),
    # OPT rdlen past the end
    (header(ar=1) + TAIL + b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x20", wire.FORMERR),
    (header(ar=1) + TAIL + b"\x00\x00\x29", wire.FORMERR),
    (header(ar=1) + TAIL + b"\x00\x00\x29\x00\x64\x00\x00\x00\x00\x00\x00", "ok"),  # payload 100
    (header(ar=1) + TAIL + b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x04\x00\x63\x00\x09",
     "ok"),                                                                         # option overrun
])
def test_ladder(data: bytes, expected: str | int) -> None:
    assert outcome(data) == expected


def test_edns_payload_below_512_is_512() -> None:
    data = header(ar=1) + TAIL + b"\x00\x00\x29\x00\x64\x00\x00\x00\x00\x00\x00"
    assert wire.parse_query(data).udp_size == 512
    scanned = wire.scan(data)
    assert scanned is not None and scanned[2] == 512


def test_badvers_reply_carries_opt_version_0() -> None:
    data = header(ar=1) + TAIL + b"\x00\x00\x29\x10\x00\x00\x01\x00\x00\x00\x00"
    with pytest.raises(wire.BadQuery) as exc:
        wire.parse_query(data)
    reply = dns.message.from_wire(wire.error_reply(data, exc.value.rcode, exc.value.qend))
    assert reply.rcode() == dns.rcode.BADVERS and reply.edns == 0
    assert reply.id == 0x1234 and str(reply.question[0].name) == "www.example.test."


def test_scan_key_folds_case_and_keys_do_cd() -> None:
    a = wire.scan(q("WwW.Example.TEST"))
    b = wire.scan(q("www.example.test"))
    assert a is not None and b is not None and a[0] == b[0]
    do = wire.scan(q("www.example.test", want_dnssec=True))
    assert do is not None and do[0] != b[0] and do[3] == 1
    cd = dns.message.make_query("www.example.test", "A")
    cd.flags |= dns.flags.CD
    scanned = wire.scan(cd.to_wire())
    assert scanned is not None and scanned[0] != b[0]


def test_scan_defers_unusual_queries_to_the_ladder() -> None:
    assert wire.scan(q(rdclass="CH")) is None
    assert wire.scan(header(flags=0x0900) + TAIL) is None
    assert wire.scan(header(ar=1) + TAIL + b"\x00\x00\x29\x10\x00\x00\x01\x00\x00\x00\x00") is None
    assert wire.scan(q(use_edns=False)) is not None


def test_parse_query_agrees_with_scan() -> None:
    data = q("Mixed.Case.example", "AAAA", want_dnssec=True)
    parsed = wire.parse_query(data)
    scanned = wire.scan(data)
    assert scanned is not None
    assert (parsed.key, parsed.qend, parsed.udp_size) == scanned[:3]
    assert parsed.qname == "mixed.case.example" and parsed.qtype == 28 and parsed.do


def test_read_name_bounds_pointer_loops() -> None:
    with pytest.raises(DecodeError):
        wire.read_name(b"\x00" * 12 + b"\xc0\x0c", 12)
    assert wire.read_name(header() + QNAME + b"\xc0\x0c", 12 + len(QNAME)) == QNAME


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_declared_errors(data: bytes) -> None:
    try:
        wire.parse_query(data)
    except (wire.Drop, wire.BadQuery):
        pass
    wire.scan(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=12, max_size=300))
def test_error_reply_echoes_id_and_is_parseable(data: bytes) -> None:
    data = data[:2] + bytes((data[2] & 0x7F,)) + data[3:]
    try:
        wire.parse_query(data)
    except wire.BadQuery as exc:
        reply = wire.error_reply(data, exc.rcode, exc.qend)
        assert reply[:2] == data[:2] and reply[2] & 0x80
        dns.message.from_wire(reply)
    except wire.Drop:
        pass
