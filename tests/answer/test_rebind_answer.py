"""The rebinding filter in the pkarr handler (fake DHT + ICANN): what each kind of answer keeps,
NODATA when nothing is left, CNAME chains across keys and to ICANN, NS glue, exemptions."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, RR, DNSRecord

from pkdns.answer.answerer import PkarrAnswerer
from pkdns.config import PkarrConfig
from pkdns.metrics import Metrics
from pkdns.pkarr.signed_packet import SignedPacket
from tests.answer.fakes import FakeIcann, source_over
from tests.support.clock import FakeClock
from tests.support.pkarr_factory import keypair, packet
from tests.support.pkarr_fakes import FakeDht, Script, item_of

ATTACKER, NEIGHBOUR, OWN = keypair(131), keypair(132), keypair(133)
Z, Z2, ZOWN = ATTACKER.public_key.z32, NEIGHBOUR.public_key.z32, OWN.public_key.z32
V4 = ["0.0.0.0", "10.0.0.1", "100.64.0.1", "127.0.0.1", "169.254.1.1", "172.16.0.1",
      "192.168.1.1"]
V6 = ["::", "::1", "::ffff:7f00:1", "fc00::1", "fe80::1"]   # ::ffff:7f00:1 = ::ffff:127.0.0.1
CFG = PkarrConfig(lookup_timeout=0.3, first_answer_window=0.0, dht_rate_limit=0)


def _lines(name: str, addrs: list[str]) -> list[str]:
    return [f"{name} 300 IN {'AAAA' if ':' in a else 'A'} {a}" for a in addrs]


ATTACK = packet(ATTACKER, [
    *[f"v4-{i} 300 IN A {a}" for i, a in enumerate(V4)],
    *[f"v6-{i} 300 IN AAAA {a}" for i, a in enumerate(V6)],
    *_lines("all", V4 + V6),
    "mixed 300 IN A 192.0.2.7", "mixed 120 IN A 10.9.9.9",
    f"www 300 IN CNAME all.{Z}.", '_txt 300 IN TXT "still here"', "all 300 IN TXT x",
    f"far 300 IN CNAME lan.{Z2}.", "ext 300 IN CNAME localhost.example.",
    f"sub 300 IN NS ns.sub.{Z}.", "ns.sub 300 IN A 127.0.0.5",
    f"pub 300 IN NS ns.pub.{Z}.", "ns.pub 300 IN A 192.0.2.53", "ns.pub 300 IN A 10.0.0.53",
    "away 300 IN NS ns.example.",
])
NEIGHBOURS = packet(NEIGHBOUR, _lines("lan", ["192.168.1.20"]))
OWNS = packet(OWN, _lines("@", V4 + V6))


def handler(icann: FakeIcann | None = None, metrics: Metrics | None = None,
            **cfg: Any) -> PkarrAnswerer:
    by_key = {p.public_key.raw: p for p in (ATTACK, NEIGHBOURS, OWNS)}

    def script(raw: bytes) -> Script:
        p: SignedPacket | None = by_key.get(raw)
        return Script(items=[(0.0, item_of(p))]) if p else Script(responded=8, absent=True)

    conf = dataclasses.replace(CFG, **cfg)
    source = source_over(FakeDht(script), conf, FakeClock())
    return PkarrAnswerer(source, icann or FakeIcann(), conf, metrics=metrics)


async def ask(h: PkarrAnswerer, qname: str, qtype: str = "A", rd: bool = True) -> DNSRecord:
    query = DNSRecord.question(qname, qtype)
    query.header.rd = int(rd)
    return DNSRecord.parse((await h.answer(query, "10.9.9.9")).pack())


def addrs(resp: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in resp.rr if rr.rtype in (QTYPE.A, QTYPE.AAAA)]


@pytest.mark.parametrize("suffix", ["", ".key"])
@pytest.mark.parametrize(("name", "qtype"), [(f"v4-{i}", "A") for i in range(len(V4))]
                         + [(f"v6-{i}", "AAAA") for i in range(len(V6))])
async def test_each_attack_address_is_not_served(name: str, qtype: str, suffix: str) -> None:
    metrics = Metrics()
    resp = await ask(handler(metrics=metrics), f"{name}.{Z}{suffix}", qtype)
    assert resp.header.rcode == RCODE.NOERROR and resp.rr == []       # NODATA ...
    (soa,) = resp.auth                                                # ... with the zone's SOA
    assert soa.rtype == QTYPE.SOA and str(soa.rname) == f"{Z}{suffix}." and soa.ttl == 300
    text = metrics.render().decode()
    assert 'pkdns_rebind_filtered_total{source="pkarr"} 1.0' in text
    assert 'pkdns_rebind_emptied_total{source="pkarr"} 1.0' in text


async def test_all_at_once_and_other_types_stay() -> None:
    h = handler()
    for qtype in ("A", "AAAA", "ANY"):
        resp = await ask(h, f"all.{Z}", qtype)
        assert addrs(resp) == [] and resp.header.rcode == RCODE.NOERROR
    anyq = await ask(h, f"all.{Z}", "ANY")
    assert [QTYPE[rr.rtype] for rr in anyq.rr] == ["TXT"]    # ANY keeps the rest, no SOA
    assert anyq.auth == []
    assert (await ask(h, f"_txt.{Z}", "TXT")).rr[0].rdata.data == [b"still here"]


async def test_mixed_keeps_the_public_address() -> None:
    resp = await ask(handler(), f"mixed.{Z}.key")
    assert addrs(resp) == ["192.0.2.7"] and resp.auth == []


async def test_cname_inside_the_key_keeps_the_chain_then_nodata() -> None:
    resp = await ask(handler(), f"www.{Z}.key")
    assert [QTYPE[rr.rtype] for rr in resp.rr] == ["CNAME"]
    assert resp.header.rcode == RCODE.NOERROR and QTYPE[resp.auth[0].rtype] == "SOA"


async def test_cname_to_another_key_is_judged_by_the_asked_key() -> None:
    resp = await ask(handler(), f"far.{Z}")                 # attacker -> neighbour's LAN name
    assert [QTYPE[rr.rtype] for rr in resp.rr] == ["CNAME"] and addrs(resp) == []
    own = await ask(handler(rebind_allow=(Z2,)), f"lan.{Z2}")   # asked directly: allowed
    assert addrs(own) == ["192.168.1.20"]


async def test_cname_to_an_icann_name_with_a_loopback_address() -> None:
    icann = FakeIcann()
    icann.records[("localhost.example", QTYPE.A)] = RR.fromZone(
        "localhost.example. 60 A 127.0.0.1")
    resp = await ask(handler(icann), f"ext.{Z}")
    assert [QTYPE[rr.rtype] for rr in resp.rr] == ["CNAME"] and addrs(resp) == []


async def test_ns_glue_at_a_blocked_address_is_not_asked() -> None:
    icann = FakeIcann()
    icann.servers[("127.0.0.5", 53)] = lambda q: q.reply()
    metrics = Metrics()
    resp = await ask(handler(icann, metrics), f"x.sub.{Z}")
    assert resp.header.rcode == RCODE.SERVFAIL and icann.server_queries == []
    assert 'pkdns_rebind_filtered_total{source="pkarr"} 1.0' in metrics.render().decode()


async def test_ns_glue_keeps_the_public_address() -> None:
    icann = FakeIcann()

    def server(q: DNSRecord) -> DNSRecord:
        r = q.reply()
        r.add_answer(*RR.fromZone(f"{q.q.qname} 60 A 192.0.2.99"))
        return r

    icann.servers[("192.0.2.53", 53)] = server
    resp = await ask(handler(icann), f"x.pub.{Z}")
    assert addrs(resp) == ["192.0.2.99"]
    assert [a for a, _ in icann.server_queries] == [("192.0.2.53", 53)]


async def test_ns_name_resolving_to_a_blocked_address_is_not_asked() -> None:
    icann = FakeIcann()
    icann.records[("ns.example", QTYPE.A)] = RR.fromZone("ns.example. 60 A 10.0.0.53")
    icann.servers[("10.0.0.53", 53)] = lambda q: q.reply()
    resp = await ask(handler(icann), f"away.{Z}")
    assert resp.header.rcode == RCODE.SERVFAIL and icann.server_queries == []


async def test_referral_for_rd0_loses_the_blocked_glue() -> None:
    resp = await ask(handler(), f"x.pub.{Z}", rd=False)
    assert [QTYPE[r.rtype] for r in resp.auth] == ["NS"]
    assert [str(r.rdata) for r in resp.ar] == ["192.0.2.53"]


async def test_delegated_server_answers_are_filtered() -> None:
    icann = FakeIcann()

    def server(q: DNSRecord) -> DNSRecord:
        r = q.reply()
        r.add_answer(*RR.fromZone(f"{q.q.qname} 60 A 169.254.169.254"))
        return r

    icann.servers[("192.0.2.53", 53)] = server
    resp = await ask(handler(icann), f"meta.pub.{Z}")
    assert addrs(resp) == [] and resp.header.rcode == RCODE.NOERROR


async def test_allowlisted_key_is_served_as_published() -> None:
    h = handler(rebind_allow=(f"pk:{Z}",))                 # any form PublicKey.parse takes
    assert addrs(await ask(h, f"all.{Z}")) == V4
    assert addrs(await ask(h, f"all.{Z}.key", "AAAA")) == V6


async def test_own_zone_key_is_served_as_published() -> None:
    h = handler()
    assert addrs(await ask(h, ZOWN)) == []
    h.set_own_keys([ZOWN])                                 # what [[zones]] seeds give
    assert addrs(await ask(h, f"{ZOWN}.key")) == V4
    assert addrs(await ask(h, ZOWN, "AAAA")) == V6


async def test_the_option_turns_it_off() -> None:
    assert addrs(await ask(handler(rebind_protection=False), f"all.{Z}")) == V4
