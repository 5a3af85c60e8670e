"""The dnspython-free zone printer prints exactly what dnspython prints.

``pkdns resolve`` prints a packet's records through :mod:`pkdns.pkarr.zonetext` so that a cold
run need not import dnspython; its output must stay the one :func:`pkdns.pkarr.zone.records_to_text`
gives, for every record, in every case: the records are built from random wire bytes (what a
packet from the DHT holds) and both printers are compared.
"""

from __future__ import annotations

import struct
from typing import Any

import dnslib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pkdns.pkarr import zone, zonetext
from tests.support.pkarr_factory import keypair

KEY = keypair(5).public_key.z32
PLAIN = st.from_regex(r"[A-Za-z0-9_*-]{1,12}", fullmatch=True)
ODD = st.binary(min_size=1, max_size=8)   # dots, quotes, spaces, non-ASCII: dnspython escapes


def _wire_name(labels: list[bytes]) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


names = st.one_of(
    st.lists(PLAIN.map(str.encode), max_size=3).map(lambda ls: [*ls, KEY.encode()]),
    st.lists(PLAIN.map(str.encode), max_size=3).map(lambda ls: [*ls, KEY.upper().encode()]),
    st.lists(PLAIN.map(str.encode), max_size=3),             # outside the key, the root
    st.lists(st.one_of(PLAIN.map(str.encode), ODD), min_size=1, max_size=3),
).map(_wire_name)

rdatas = st.one_of(
    st.tuples(st.just(1), st.binary(min_size=4, max_size=4)),
    st.tuples(st.just(28), st.one_of(
        st.binary(min_size=16, max_size=16),
        st.lists(st.sampled_from([b"\0\0", b"\0\1", b"\xff\xff", b"\x12\x34"]),
                 min_size=8, max_size=8).map(b"".join),      # runs of zero groups
        st.binary(min_size=4, max_size=4).map(lambda v4: bytes(12) + v4),
        st.binary(min_size=4, max_size=4).map(lambda v4: bytes(10) + b"\xff\xff" + v4),
        st.binary(min_size=6, max_size=6).map(lambda tail: bytes(10) + tail),
    )),
    st.tuples(st.sampled_from([2, 5, 12]), names),
    st.tuples(st.just(15), st.tuples(st.integers(0, 65535), names).map(
        lambda pn: struct.pack(">H", pn[0]) + pn[1])),
    st.tuples(st.just(16), st.lists(st.binary(max_size=40), min_size=1, max_size=3).map(
        lambda ss: b"".join(bytes([len(s)]) + s for s in ss))),
    st.tuples(st.sampled_from([33, 257, 65280]), st.binary(min_size=6, max_size=20)),
)


def _rr(owner: bytes, rdtype: int, rdata: bytes, ttl: int, rdclass: int) -> Any:
    head = struct.pack(">HHIH", rdtype, rdclass, ttl, len(rdata))
    return dnslib.RR.parse(dnslib.DNSBuffer(owner + head + rdata))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(names, rdatas, st.integers(0, 2**31 - 1), st.sampled_from([1, 1, 1, 3]))
def test_every_record_prints_as_dnspython_prints_it(owner: bytes, typed: tuple[int, bytes],
                                                    ttl: int, rdclass: int) -> None:
    rdtype, rdata = typed
    try:
        rr = _rr(owner, rdtype, rdata, ttl, rdclass)
        expected = zone.records_to_text([rr], KEY)
    except Exception:   # not a record dnslib or dnspython reads: nothing to print
        return
    assert zonetext.records_to_text([rr], KEY) == expected


def _parse(line: str) -> Any:
    return dnslib.RR.fromZone(line)[0]


def test_the_common_types_are_printed_without_dnspython() -> None:
    """The differential test above passes whatever goes through dnspython; these must not."""
    origin = tuple(KEY.encode().split(b"."))
    records = [
        _parse(f"{KEY}. 300 IN A 192.0.2.1"),
        _parse(f"www.{KEY}. 60 IN AAAA 2001:db8::1"),
        _parse(f"_x.{KEY}. 300 IN TXT \"a \\\"quoted\\\" \\\\ text\" \"two\""),
        _parse(f"{KEY}. 300 IN MX 10 mail.example."),
        _parse(f"alias.{KEY}. 300 IN CNAME www.{KEY}."),
        _parse(f"sub.{KEY}. 300 IN NS ns1.example."),
    ]
    lines = [zonetext._line(rr, origin) for rr in records]
    assert None not in lines
    assert "".join(lines) == zone.records_to_text(records, KEY) == (
        "@ 300 IN A 192.0.2.1\n"
        "www 60 IN AAAA 2001:db8::1\n"
        '_x 300 IN TXT "a \\"quoted\\" \\\\ text" "two"\n'
        "@ 300 IN MX 10 mail.example.\n"
        "alias 300 IN CNAME www\n"
        "sub 300 IN NS ns1.example.\n")


def test_other_types_go_through_dnspython() -> None:
    origin = tuple(KEY.encode().split(b"."))
    srv = _parse(f"_sip._tcp.{KEY}. 300 IN SRV 1 2 5060 sip.example.")
    assert zonetext._line(srv, origin) is None
    assert zonetext.records_to_text([srv], KEY) == "_sip._tcp 300 IN SRV 1 2 5060 sip.example.\n"
