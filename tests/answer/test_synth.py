"""Answer synthesis from the fixed packets in tests/data/resolve_packets.json."""

from __future__ import annotations

from typing import Any

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from pkdns.answer.names import PkarrName, classify
from pkdns.answer.synth import (
    Delegation,
    Final,
    FollowCname,
    NameServer,
    Synthesis,
    SynthOptions,
    negative,
    synthesize,
)
from pkdns.pkarr.signed_packet import SignedPacket
from tests.answer import vectors

MAIN = vectors.load("main")
Z = MAIN.public_key.z32
OTHER = vectors.keypair("other").public_key.z32


def run(qname: str, qtype: str = "A", *, packet: SignedPacket = MAIN, age: float = 0.0,
        stale: bool = False, rd: bool = True) -> Synthesis:
    query = DNSRecord.question(qname, qtype)
    query.header.rd = int(rd)
    name = classify(qname, "key")
    assert isinstance(name, PkarrName)
    return synthesize(query, name, packet, age=age, stale=stale, opts=SynthOptions())


def final(qname: str, qtype: str = "A", **kw: Any) -> DNSRecord:
    out = run(qname, qtype, **kw)
    assert isinstance(out, Final), out
    return out.response


def answers(resp: DNSRecord) -> list[tuple[str, str, str]]:
    return [(str(rr.rname), QTYPE[rr.rtype], str(rr.rdata)) for rr in resp.rr]


def test_stored_vectors_are_what_signing_the_zones_gives() -> None:
    for name in vectors.SEEDS:
        assert vectors.load(name).to_bytes() == vectors.sign(name).to_bytes()


def test_exact_match_flags_and_question() -> None:
    resp = final(Z, "A", rd=True)
    assert answers(resp) == [(f"{Z}.", "A", "1.1.1.1")]
    h = resp.header
    assert (h.qr, h.aa, h.ra, h.rd, h.rcode) == (1, 1, 1, 1, RCODE.NOERROR)
    assert resp.auth == []
    assert final(Z, "A", rd=False).header.rd == 0


def test_0x20_question_echoed_and_owner_as_asked() -> None:
    asked = "wWw." + Z.upper() + ".kEy"
    resp = final(asked, "A")
    assert str(resp.q.qname) == asked + "."
    assert answers(resp) == [
        (asked + ".", "CNAME", f"{Z}.key."),
        (f"{Z}.key.", "A", "1.1.1.1"),
    ]


def test_suffix_put_back_in_every_name() -> None:
    resp = final(f"www2.{Z}.key", "A")
    assert answers(resp) == [
        (f"www2.{Z}.key.", "CNAME", f"www.{Z}.key."),
        (f"www.{Z}.key.", "CNAME", f"{Z}.key."),
        (f"{Z}.key.", "A", "1.1.1.1"),
    ]
    nodata = final(f"{Z}.key", "MX")
    assert str(nodata.auth[0].rname) == f"{Z}.key."
    assert str(nodata.auth[0].rdata.mname) == f"{Z}.key."
    assert str(final(f"mx.{Z}.key", "MX").rr[0].rdata.label) == f"mail.{Z}.key."
    assert str(final(f"_srv._tcp.{Z}.key", "SRV").rr[0].rdata.target) == f"www.{Z}.key."
    assert f"www.{Z}.key." in str(final(f"h.{Z}.key", "HTTPS").rr[0])
    assert str(final(f"ptr.{Z}.key", "PTR").rr[0].rdata) == f"www.{Z}.key."


@pytest.mark.parametrize(("qname", "qtype", "expected"), [
    (Z, "AAAA", "2001:db8::1"),
    (Z, "TXT", '"apex"'),
    (f"mx.{Z}", "MX", f"10 mail.{Z}."),
    (f"_srv._tcp.{Z}", "SRV", f"10 5 443 www.{Z}."),
    (f"caa.{Z}", "CAA", '0 issue "letsencrypt.org"'),
    (f"h.{Z}", "HTTPS", f"1 www.{Z}. alpn=h2"),
    (f"ptr.{Z}", "PTR", f"www.{Z}."),
    (f"priv.{Z}", "TYPE65280", "\\# 8 01026F7061717565"),
])
def test_every_type_in_the_packet_is_served(qname: str, qtype: str, expected: str) -> None:
    query = DNSRecord.question(qname, "A")
    query.q.qtype = vectors.PRIVATE_TYPE if qtype == "TYPE65280" else getattr(QTYPE, qtype)
    name = classify(qname, "key")
    assert isinstance(name, PkarrName)
    out = synthesize(query, name, MAIN, age=0)
    assert isinstance(out, Final)
    assert [str(rr.rdata) for rr in out.response.rr] == [expected]
    DNSRecord.parse(out.response.pack())  # it serializes and parses back


def test_any_returns_every_record_at_the_name() -> None:
    assert sorted(t for _, t, _ in answers(final(Z, "ANY"))) == ["A", "AAAA", "TXT"]


def test_nodata_has_soa_and_noerror() -> None:
    resp = final(f"mx.{Z}", "A")
    assert resp.header.rcode == RCODE.NOERROR and resp.rr == []
    soa = resp.auth[0]
    assert QTYPE[soa.rtype] == "SOA" and str(soa.rname) == f"{Z}."
    assert soa.rdata.times[0] == vectors.TIMESTAMP // 1_000_000  # serial
    assert soa.ttl == soa.rdata.times[4] == 120  # min record TTL (120) clamped to [60, 86400]


def test_nxdomain_has_soa() -> None:
    resp = final(f"nope.{Z}", "A")
    assert resp.header.rcode == RCODE.NXDOMAIN and resp.header.aa == 1
    assert [QTYPE[rr.rtype] for rr in resp.auth] == ["SOA"]


def test_empty_non_terminal_is_nodata_not_nxdomain() -> None:
    assert final(f"b.c.{Z}", "A").header.rcode == RCODE.NOERROR
    assert final(f"c.{Z}", "TXT").header.rcode == RCODE.NOERROR
    assert final(f"x.c.{Z}", "TXT").header.rcode == RCODE.NXDOMAIN
    assert answers(final(f"a.b.c.{Z}", "TXT")) == [(f"a.b.c.{Z}.", "TXT", '"deep"')]


def test_cname_to_icann_is_an_instruction() -> None:
    out = run(f"ext.{Z}.key", "A")
    assert isinstance(out, FollowCname) and out.target == "example.com"
    assert answers(out.response) == [(f"ext.{Z}.key.", "CNAME", "example.com.")]


def test_cname_to_other_key_keeps_the_suffix() -> None:
    out = run(f"far.{Z}.key", "A")
    assert isinstance(out, FollowCname) and out.target == f"www.{OTHER}.key"
    assert answers(out.response)[0][2] == f"www.{OTHER}.key."
    bare = run(f"far.{Z}", "A")
    assert isinstance(bare, FollowCname) and bare.target == f"www.{OTHER}"


def test_cname_query_returns_the_cname_itself() -> None:
    assert answers(final(f"ext.{Z}", "CNAME")) == [(f"ext.{Z}.", "CNAME", "example.com.")]


def test_cname_loop_is_servfail() -> None:
    resp = final(f"loop1.{Z}", "A")
    assert resp.header.rcode == RCODE.SERVFAIL
    assert [t for _, t, _ in answers(resp)] == ["CNAME", "CNAME"]


def test_nodata_after_cname_keeps_chain_and_soa() -> None:
    resp = final(f"www.{Z}", "MX")
    assert answers(resp) == [(f"www.{Z}.", "CNAME", f"{Z}.")]
    assert resp.header.rcode == RCODE.NOERROR and QTYPE[resp.auth[0].rtype] == "SOA"


def test_delegation_with_glue_from_the_packet() -> None:
    out = run(f"x.sub.{Z}.key", "A")
    assert isinstance(out, Delegation)
    assert out.qname == f"x.sub.{Z}"
    assert out.nameservers == (NameServer(f"ns.sub.{Z}", ("127.0.0.5",)),)
    ref = out.response
    assert ref.header.aa == 0 and ref.rr == []
    pairs = [(str(r.rname), str(r.rdata)) for r in ref.auth + ref.ar]
    assert pairs == [(f"sub.{Z}.key.", f"ns.sub.{Z}.key."), (f"ns.sub.{Z}.key.", "127.0.0.5")]


def test_delegation_without_glue_and_data_at_the_cut() -> None:
    out = run(f"away.{Z}", "TXT")
    assert isinstance(out, Delegation)
    assert out.nameservers == (NameServer("ns.example.com", ()),)
    # records the packet holds below the cut are still answered (the glue itself)
    assert answers(final(f"ns.sub.{Z}", "A")) == [(f"ns.sub.{Z}.", "A", "127.0.0.5")]
    assert answers(final(f"sub.{Z}", "NS")) == [(f"sub.{Z}.", "NS", f"ns.sub.{Z}.")]


def test_apex_ns_delegates_names_without_data_but_https_is_quick_nodata() -> None:
    packet = vectors.load("apexns")
    z = packet.public_key.z32
    assert answers(final(z, "A", packet=packet)) == [(f"{z}.", "A", "10.0.0.3")]
    out = run(f"www.{z}", "A", packet=packet)
    assert isinstance(out, Delegation) and out.nameservers[0].addresses == ("127.0.0.6",)
    for qtype in ("HTTPS", "TYPE64"):
        query = DNSRecord.question(z, "A")
        query.q.qtype = 64 if qtype == "TYPE64" else QTYPE.HTTPS
        name = classify(z, "")
        assert isinstance(name, PkarrName)
        quick = synthesize(query, name, packet, age=0)
        assert isinstance(quick, Final) and quick.response.rr == []
        assert QTYPE[quick.response.auth[0].rtype] == "SOA"


def test_https_for_a_name_without_it_is_nodata() -> None:
    resp = final(f"ns.sub.{Z}", "HTTPS")
    assert resp.header.rcode == RCODE.NOERROR and resp.rr == []


def test_wildcard_synthesis_rfc4592() -> None:
    assert answers(final(f"q.wild.{Z}", "TXT")) == [(f"q.wild.{Z}.", "TXT", '"wild"')]
    assert answers(final(f"deeper.q.wild.{Z}", "TXT"))[0][0] == f"deeper.q.wild.{Z}."
    assert final(f"q.wild.{Z}", "A").header.rcode == RCODE.NOERROR  # NODATA via the wildcard
    assert final(f"q.wild.{Z}", "A").rr == []
    assert answers(final(f"*.wild.{Z}", "TXT")) == [(f"*.wild.{Z}.", "TXT", '"wild"')]


def test_wildcard_cname_is_chased() -> None:
    assert answers(final(f"any.wc.{Z}.key", "A")) == [
        (f"any.wc.{Z}.key.", "CNAME", f"{Z}.key."),
        (f"{Z}.key.", "A", "1.1.1.1"),
    ]


def test_wildcard_does_not_cover_existing_names_or_other_branches() -> None:
    assert final(f"wild.{Z}", "TXT").rr == []  # the encloser itself: NODATA
    assert final(f"q.{Z}", "TXT").header.rcode == RCODE.NXDOMAIN  # no "*" at the apex


def test_ttls_age_with_the_packet() -> None:
    assert final(Z, "A", age=100.7).rr[0].ttl == 200
    assert final(Z, "A", age=299.5).rr[0].ttl == 1
    aged = final(f"nope.{Z}", "A", age=50)
    assert aged.auth[0].ttl == 70  # packet TTL 120 - 50
    stale = final(Z, "A", age=5000, stale=True)
    assert stale.rr[0].ttl == 30 and final(f"nope.{Z}", "A", stale=True).auth[0].ttl == 30


def test_records_outside_the_key_are_never_served() -> None:
    packet = SignedPacket.sign_packet(
        vectors.keypair("other"),
        DNSRecord.parse(bytes.fromhex(
            # a foreign encoder put "example.com A 6.6.6.6" in the answers
            "000084000000000100000000076578616d706c6503636f6d0000010001000000"
            "3c000406060606")).pack(),
        vectors.TIMESTAMP)
    z = packet.public_key.z32
    assert final(z, "A", packet=packet).header.rcode == RCODE.NOERROR
    assert final(z, "A", packet=packet).rr == []


def test_negative_for_an_unknown_key() -> None:
    query = DNSRecord.question(f"www.{OTHER}.key", "A")
    name = classify(f"www.{OTHER}.key", "key")
    assert isinstance(name, PkarrName)
    resp = negative(query, name, RCODE.NXDOMAIN, serial=0, ttl=60)
    assert resp.header.rcode == RCODE.NXDOMAIN
    assert (str(resp.auth[0].rname), resp.auth[0].ttl) == (f"{OTHER}.key.", 60)
