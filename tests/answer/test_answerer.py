"""The pkarr handler: rcode mapping, CNAME and NS recursion, loops, RD=0 (fake DHT + ICANN)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from dnslib import QTYPE, RCODE, RR, DNSRecord

from pkdns.answer.answerer import PkarrAnswerer
from pkdns.answer.packets import SourceResult, Status
from pkdns.config import PkarrConfig
from pkdns.pkarr.keys import PublicKey
from pkdns.pkarr.signed_packet import SignedPacket
from tests.answer import vectors
from tests.answer.fakes import FakeIcann, source_over
from tests.support.clock import FakeClock
from tests.support.pkarr_factory import keypair, packet
from tests.support.pkarr_fakes import FakeDht, Script, item_of

MAIN, OTHER = vectors.load("main"), vectors.load("other")
Z, Z2 = MAIN.public_key.z32, OTHER.public_key.z32
# The vectors and servers here use private and loopback addresses: the rebinding filter is off
# for the recursion mechanics (tests/answer/test_rebind_answer.py covers it with them).
CFG = PkarrConfig(lookup_timeout=0.3, first_answer_window=0.0, dht_rate_limit=0,
                  rebind_protection=False)
MISSING = keypair(99).public_key.z32
OFF_CURVE = "c1bkg8tfsyy8wcedtmw4fwhdmm7bbzhgg3z58tf43m5ow8w9mbus"


def network(*packets: SignedPacket, unreachable: bool = False) -> FakeDht:
    by_key = {p.public_key.raw: p for p in packets}

    def script(raw: bytes) -> Script:
        if unreachable:
            return Script(responded=0)
        p = by_key.get(raw)
        return Script(items=[(0.0, item_of(p))]) if p else Script(responded=8, absent=True)

    return FakeDht(script)


def handler(*packets: SignedPacket, icann: FakeIcann | None = None, unreachable: bool = False,
            **cfg: Any) -> PkarrAnswerer:
    conf = dataclasses.replace(CFG, **cfg)
    dht = network(MAIN, OTHER, *packets, unreachable=unreachable)
    return PkarrAnswerer(source_over(dht, conf, FakeClock()), icann or FakeIcann(), conf)


async def ask(h: PkarrAnswerer, qname: str, qtype: str = "A", rd: bool = True) -> DNSRecord:
    query = DNSRecord.question(qname, qtype)
    query.header.rd = int(rd)
    resp = await h.answer(query, "10.9.9.9")
    assert resp.header.id == query.header.id and resp.q == query.q
    return DNSRecord.parse(resp.pack())


def rows(resp: DNSRecord) -> list[tuple[str, str, str]]:
    return [(str(rr.rname), QTYPE[rr.rtype], str(rr.rdata)) for rr in resp.rr]


def test_claims() -> None:
    h = handler()
    assert h.claims(Z) and h.claims(f"www.{Z}.key") and h.claims(f"x.{OFF_CURVE}")
    assert not h.claims("example.com") and not h.claims(f"{Z}.key.example.com")
    assert not PkarrAnswerer(h.source, None, dataclasses.replace(CFG, tld_suffix="")).claims(
        f"x.{Z}.key")


async def test_found_answer_is_authoritative() -> None:
    resp = await ask(handler(), f"{Z}.key")
    assert rows(resp) == [(f"{Z}.key.", "A", "1.1.1.1")]
    assert (resp.header.aa, resp.header.ra, resp.header.rd, resp.header.rcode) == (1, 1, 1, 0)


async def test_absent_key_is_nxdomain_with_soa() -> None:
    resp = await ask(handler(), f"www.{MISSING}.key")
    assert resp.header.rcode == RCODE.NXDOMAIN
    soa = resp.auth[0]
    assert QTYPE[soa.rtype] == "SOA" and str(soa.rname) == f"{MISSING}.key." and soa.ttl == 60


async def test_bad_key_label_is_nxdomain() -> None:
    resp = await ask(handler(), f"www.{OFF_CURVE}")
    assert resp.header.rcode == RCODE.NXDOMAIN and resp.rr == []


async def test_unreachable_dht_is_servfail() -> None:
    resp = await ask(handler(unreachable=True), Z)
    assert resp.header.rcode == RCODE.SERVFAIL and resp.header.aa == 0


async def test_source_outcomes_map_to_rcodes() -> None:
    class Fixed:
        def __init__(self, status: Status) -> None:
            self.status = status

        async def get(self, key: PublicKey, client_ip: str) -> SourceResult:
            return SourceResult(self.status)

    for status, rcode in ((Status.RATE_LIMITED, RCODE.REFUSED),
                          (Status.OVERLOADED, RCODE.SERVFAIL),
                          (Status.UNAVAILABLE, RCODE.SERVFAIL)):
        h = PkarrAnswerer(Fixed(status), FakeIcann(), CFG)
        assert (await ask(h, Z)).header.rcode == rcode


async def test_unexpected_error_is_servfail() -> None:
    class Broken:
        async def get(self, key: PublicKey, client_ip: str) -> SourceResult:
            raise RuntimeError("bug")

    resp = await ask(PkarrAnswerer(Broken(), FakeIcann(), CFG), Z)
    assert resp.header.rcode == RCODE.SERVFAIL


async def test_cname_to_icann_is_followed() -> None:
    icann = FakeIcann()
    icann.records[("example.com", QTYPE.A)] = [RR("example.com", QTYPE.A, ttl=50,
                                                  rdata=RR.fromZone(". A 93.184.216.34")[0].rdata)]
    resp = await ask(handler(icann=icann), f"ext.{Z}.key")
    assert rows(resp) == [(f"ext.{Z}.key.", "CNAME", "example.com."),
                          ("example.com.", "A", "93.184.216.34")]
    assert resp.header.aa == 0 and resp.header.rcode == RCODE.NOERROR
    assert icann.asked == [("example.com", QTYPE.A)]


async def test_cname_to_icann_nxdomain_keeps_the_chain() -> None:
    resp = await ask(handler(), f"ext.{Z}")
    assert resp.header.rcode == RCODE.NXDOMAIN and rows(resp)[0][1] == "CNAME"


async def test_cname_to_another_key_with_suffix() -> None:
    resp = await ask(handler(), f"far.{Z}.key")
    assert rows(resp) == [(f"far.{Z}.key.", "CNAME", f"www.{Z2}.key."),
                          (f"www.{Z2}.key.", "A", "10.0.0.2")]
    assert resp.header.aa == 1  # every record came from signed packets


async def test_rd0_gets_the_cname_only() -> None:
    icann = FakeIcann()
    resp = await ask(handler(icann=icann), f"ext.{Z}", rd=False)
    assert rows(resp) == [(f"ext.{Z}.", "CNAME", "example.com.")]
    assert icann.asked == [] and resp.header.rd == 0


async def test_cname_loop_across_keys_is_servfail() -> None:
    a, b = keypair(61), keypair(62)
    pa = packet(a, [f"x 60 IN CNAME y.{b.public_key.z32}."])
    pb = packet(b, [f"y 60 IN CNAME x.{a.public_key.z32}."])
    resp = await ask(handler(pa, pb), f"x.{a.public_key.z32}")
    assert resp.header.rcode == RCODE.SERVFAIL


async def test_depth_limit() -> None:
    kps = [keypair(70 + i) for i in range(6)]
    chain = [packet(kps[i], [f"n 60 IN CNAME n.{kps[i + 1].public_key.z32}."])
             for i in range(5)] + [packet(kps[5], ["n 60 IN A 10.1.2.3"])]
    start = f"n.{kps[0].public_key.z32}"
    assert (await ask(handler(*chain), start)).header.rcode == RCODE.NOERROR
    limited = await ask(handler(*chain, max_recursion_depth=3), start)
    assert limited.header.rcode == RCODE.SERVFAIL


async def test_icann_cname_back_into_pkarr() -> None:
    icann = FakeIcann()
    icann.records[("alias.example", QTYPE.A)] = RR.fromZone(f"alias.example. 30 CNAME www.{Z2}.")
    kp = keypair(63)
    p = packet(kp, ["go 60 IN CNAME alias.example."])
    resp = await ask(handler(p, icann=icann), f"go.{kp.public_key.z32}")
    assert [r[1] for r in rows(resp)] == ["CNAME", "CNAME", "A"]
    assert rows(resp)[-1] == (f"www.{Z2}.", "A", "10.0.0.2")


def _server(answer_zone: str) -> Callable[[DNSRecord], DNSRecord]:
    def reply(query: DNSRecord) -> DNSRecord:
        assert query.header.rd == 0
        resp = query.reply()
        for rr in RR.fromZone(answer_zone.format(q=str(query.q.qname))):
            resp.add_answer(rr)
        return resp
    return reply


async def test_ns_delegation_with_glue() -> None:
    icann = FakeIcann()
    icann.servers[("127.0.0.5", 53)] = _server("{q} 40 A 192.0.2.80")
    resp = await ask(handler(icann=icann), f"WWW.sub.{Z}.key")
    assert rows(resp) == [(f"www.sub.{Z}.key.", "A", "192.0.2.80")]
    assert icann.server_queries == [(("127.0.0.5", 53), f"www.sub.{Z}.")]
    assert resp.header.aa == 0


async def test_ns_delegation_without_glue_resolves_the_ns_name() -> None:
    icann = FakeIcann()
    icann.records[("ns.example.com", QTYPE.A)] = RR.fromZone("ns.example.com. 30 A 192.0.2.53")
    icann.servers[("192.0.2.53", 53)] = _server("{q} 40 TXT hello")
    resp = await ask(handler(icann=icann), f"away.{Z}", "TXT")
    assert rows(resp) == [(f"away.{Z}.", "TXT", '"hello"')]


async def test_ns_delegation_rd0_gets_the_referral() -> None:
    icann = FakeIcann()
    resp = await ask(handler(icann=icann), f"x.sub.{Z}", rd=False)
    assert resp.header.aa == 0 and resp.rr == []
    assert [QTYPE[r.rtype] for r in resp.auth] == ["NS"] and len(resp.ar) == 1
    assert icann.server_queries == []


async def test_dead_delegated_servers_are_servfail() -> None:
    resp = await ask(handler(), f"x.sub.{Z}")
    assert resp.header.rcode == RCODE.SERVFAIL


async def test_delegated_referral_is_followed_and_nxdomain_passed_through() -> None:
    icann = FakeIcann()

    def referral(query: DNSRecord) -> DNSRecord:
        resp = query.reply()
        resp.header.aa = 0
        resp.add_auth(*RR.fromZone(f"deep.sub.{Z}. 60 NS ns.deep.sub.{Z}."))
        resp.add_ar(*RR.fromZone(f"ns.deep.sub.{Z}. 60 A 127.0.0.7"))
        return resp

    def nxdomain(query: DNSRecord) -> DNSRecord:
        resp = query.reply()
        resp.header.rcode = RCODE.NXDOMAIN
        resp.add_auth(*RR.fromZone(f"deep.sub.{Z}. 60 SOA ns. host. 1 2 3 4 5"))
        return resp

    icann.servers[("127.0.0.5", 53)] = referral
    icann.servers[("127.0.0.7", 53)] = nxdomain
    resp = await ask(handler(icann=icann), f"x.deep.sub.{Z}.key")
    assert resp.header.rcode == RCODE.NXDOMAIN
    assert str(resp.auth[0].rname) == f"deep.sub.{Z}.key."
    assert [a for a, _ in icann.server_queries] == [("127.0.0.5", 53), ("127.0.0.7", 53)]


async def test_https_for_names_without_it_is_nodata_without_recursion() -> None:
    icann = FakeIcann()
    resp = await ask(handler(icann=icann), Z, "HTTPS")
    assert resp.header.rcode == RCODE.NOERROR and resp.rr == []
    assert QTYPE[resp.auth[0].rtype] == "SOA"
    assert icann.asked == [] and icann.server_queries == []
