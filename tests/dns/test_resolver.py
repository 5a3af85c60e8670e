"""The resolver entry point in-process: policy, stale, failures, coalescing, the pkarr seam."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dnslib
import pytest

from pkdns.clock import SYSTEM_CLOCK, Clock
from pkdns.config import CacheConfig, Config, DnsConfig
from pkdns.dns.cache import WireCache
from pkdns.dns.forwarder import Forwarder
from pkdns.dns.resolver import ClientInfo, Resolver
from pkdns.metrics import Metrics
from tests.support.clock import FakeClock
from tests.support.upstream import FakeUpstream, a_record, answer, rcode_only, silent


def make(*ups: FakeUpstream, clock: Clock = SYSTEM_CLOCK, dns_kw: dict[str, Any] | None = None,
         cache_kw: dict[str, Any] | None = None) -> Resolver:
    kw: dict[str, Any] = {"upstream_timeout": 0.2, "query_deadline": 1.0, **(dns_kw or {})}
    dns_cfg = DnsConfig(upstream=tuple((u.host, u.port) for u in ups), **kw)
    cache_cfg = CacheConfig(stale_client_timeout=0.3, **(cache_kw or {}))
    cfg = Config(dns=dns_cfg, cache=cache_cfg)
    metrics = Metrics()
    fwd = Forwarder(dns_cfg.upstream, dns_cfg.upstream_timeout, metrics)
    return Resolver(cfg, WireCache(cache_cfg), fwd, clock, metrics)


async def ask(r: Resolver, name: str = "www.example.test", rdtype: str = "A",
              ip: str = "127.0.0.1", transport: str = "udp", raw: bytes | None = None,
              **kw: Any) -> dns.message.Message | None:
    data = raw if raw is not None else dns.message.make_query(name, rdtype, **kw).to_wire()
    out = await r.resolve(data, ClientInfo(ip, transport), 1232 if transport == "udp" else 65535)
    return None if out is None else dns.message.from_wire(out)


async def test_forwards_then_serves_from_cache() -> None:
    with FakeUpstream(a_record("192.0.2.1")) as up:
        r = make(up)
        first = await ask(r)
        second = await ask(r, "WWW.example.TEST")
    assert first is not None and second is not None
    assert second.answer[0][0].address == "192.0.2.1"
    assert str(second.question[0].name) == "WWW.example.TEST."
    assert len(up.queries()) == 1
    assert b"pkdns_cache_hits_total 1.0" in r.metrics.render()


async def test_upstream_sees_the_question_with_rd() -> None:
    with FakeUpstream(a_record()) as up:
        r = make(up)
        q = dns.message.make_query("MiXeD.example.test", "A")
        await ask(r, raw=q.to_wire())
        sent = up.queries()[0].message
    assert str(sent.question[0].name).lower() == "mixed.example.test." and sent.flags & dns.flags.RD


@pytest.mark.parametrize(("name", "rdtype", "rdclass", "rcode"), [
    ("version.bind", "TXT", "CH", dns.rcode.REFUSED),
    ("www.example.test", "A", "HS", dns.rcode.REFUSED),
    ("example.test", "AXFR", "IN", dns.rcode.REFUSED),
    ("example.test", "IXFR", "IN", dns.rcode.REFUSED),
])
async def test_query_policy(name: str, rdtype: str, rdclass: str, rcode: int) -> None:
    with FakeUpstream(a_record()) as up:
        r = make(up)
        reply = await ask(r, name, rdtype, rdclass=rdclass)
        assert reply is not None and reply.rcode() == rcode
        assert not up.queries()


async def test_any_is_tc_over_udp_and_minimal_hinfo_over_tcp() -> None:
    with FakeUpstream(a_record()) as up:
        r = make(up)
        q = dns.message.make_query("example.test", "ANY")
        over_udp = await ask(r, raw=q.to_wire())
        over_tcp = await ask(r, raw=q.to_wire(), transport="tcp")
        assert not up.queries()
    assert over_udp is not None and over_udp.flags & dns.flags.TC and not over_udp.answer
    assert len(over_udp.to_wire()) <= len(q.to_wire())
    assert over_tcp is not None and len(over_tcp.answer) == 1
    assert over_tcp.answer[0].rdtype == 13 and over_tcp.answer[0][0].cpu == b"RFC8482"


async def test_acl_refuses_without_recursion() -> None:
    with FakeUpstream(a_record()) as up:
        r = make(up, dns_kw={"allow": ("127.0.0.0/24",)})
        reply = await ask(r, ip="127.0.1.5")
        assert reply is not None and reply.rcode() == dns.rcode.REFUSED
        assert not up.queries()
        ok = await ask(r, ip="127.0.0.5")
        assert ok is not None and ok.rcode() == dns.rcode.NOERROR


async def test_rate_limit_udp_drops_and_slips_tcp_refuses() -> None:
    with FakeUpstream(a_record()) as up:
        r = make(up, dns_kw={"rate_limit": 1.0, "rate_limit_burst": 3.0, "forwarders": ()})
        replies = [await ask(r) for _ in range(9)]
        answered = [m for m in replies if m is not None and not m.flags & dns.flags.TC]
        slipped = [m for m in replies if m is not None and m.flags & dns.flags.TC]
        assert len(answered) == 3 and len(slipped) == 3 and replies.count(None) == 3
        assert all(not m.answer for m in slipped)
        tcp = await ask(r, transport="tcp", ip="127.0.0.1")
        assert tcp is not None and tcp.rcode() == dns.rcode.REFUSED


async def test_silent_upstream_servfail_by_deadline_and_failure_remembered() -> None:
    with FakeUpstream(silent) as up:
        r = make(up)
        reply = await ask(r)
        assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL
        sent = len(up.queries())
        again = await ask(r)
        assert again is not None and again.rcode() == dns.rcode.SERVFAIL
        assert len(up.queries()) == sent


async def test_a_miss_that_fails_at_once_is_servfail_for_an_awaiting_caller() -> None:
    """With no upstream to try, the fetch ends inside the door's call; the SERVFAIL it sent
    then must still reach a caller that awaits the reply (DoH), not be lost as a drop."""
    r = make()
    for transport in ("doh", "doh"):
        reply = await ask(r, transport=transport)
        assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL


async def test_upstream_servfail_passed_through_not_cached() -> None:
    with FakeUpstream(rcode_only(dns.rcode.SERVFAIL)) as up:
        r = make(up)
        reply = await ask(r)
        assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL
        assert len(r.cache) == 0


async def test_garbage_from_upstream_is_servfail() -> None:
    with FakeUpstream(lambda d, _t: d[:2] + b"\x81\x80\x00\x01\x00\x05garbage") as up:
        reply = await ask(make(up))
    assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL


async def test_serve_stale_when_upstream_silent() -> None:
    clock = FakeClock()
    state = {"up": True}

    def handler(data: bytes, _t: str) -> bytes | None:
        return answer(data, "www.example.test. 60 IN A 192.0.2.1") if state["up"] else None

    with FakeUpstream(handler) as up:
        r = make(up, clock=clock, dns_kw={"query_deadline": 3.0})
        await ask(r)
        state["up"] = False
        clock.advance(3600)
        start = time.monotonic()
        stale = await ask(r)
        took = time.monotonic() - start
    assert stale is not None and stale.rcode() == 0 and stale.answer[0].ttl == 30
    assert took < 2.0     # at stale_client_timeout (0.3 s), not when the fetch fails (3 s)


async def test_stale_too_old_is_not_served() -> None:
    clock = FakeClock()
    with FakeUpstream(a_record(ttl=60)) as up:
        r = make(up, clock=clock, cache_kw={"stale_max_age": 100})
        await ask(r)
    with FakeUpstream(silent) as down:
        r.forwarder.upstreams = ((down.host, down.port),)
        clock.advance(200)
        reply = await ask(r)
    assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL


async def test_late_answer_fills_the_cache() -> None:
    clock = FakeClock()
    delay = {"s": 0.0}

    def handler(data: bytes, _t: str) -> bytes:
        time.sleep(delay["s"])
        return answer(data, "www.example.test. 60 IN A 192.0.2.2")

    with FakeUpstream(handler) as up:
        r = make(up, clock=clock, dns_kw={"upstream_timeout": 0.8})
        await ask(r)
        clock.advance(120)
        delay["s"] = 0.5
        stale = await ask(r)
        assert stale is not None and stale.answer[0].ttl == 30
        await asyncio.sleep(0.4)
        fresh = await ask(r)
    assert fresh is not None and fresh.answer[0].ttl == 60


async def test_identical_queries_are_coalesced() -> None:
    def handler(data: bytes, _t: str) -> bytes:
        time.sleep(0.1)
        return answer(data, "www.example.test. 60 IN A 192.0.2.3")

    with FakeUpstream(handler) as up:
        r = make(up, dns_kw={"upstream_timeout": 2.0, "query_deadline": 3.0})  # no retransmit
        replies = await asyncio.gather(*(ask(r) for _ in range(100)))
        assert len(up.queries()) == 1
    assert all(m is not None and m.answer[0][0].address == "192.0.2.3" for m in replies)


async def test_inflight_cap_answers_servfail_at_once() -> None:
    with FakeUpstream(silent) as up:
        r = make(up, dns_kw={"max_inflight": 2})
        tasks = [asyncio.ensure_future(ask(r, f"n{i}.example.test")) for i in range(2)]
        await asyncio.sleep(0.05)
        over = await ask(r, "n9.example.test")
        assert over is not None and over.rcode() == dns.rcode.SERVFAIL
        assert not [s for s in up.queries() if "n9" in str(s.message.question[0].name)]
        await asyncio.gather(*tasks)


async def test_malformed_ladder_through_the_entry_point() -> None:
    with FakeUpstream(a_record()) as up:
        r = make(up)
        assert await ask(r, raw=b"\x00" * 11) is None
        resp = dns.message.make_response(dns.message.make_query("x.test", "A")).to_wire()
        assert await ask(r, raw=resp) is None
        notimp = await ask(r, raw=b"\x12\x34\x28\x00" + b"\x00" * 8)
        assert notimp is not None and notimp.rcode() == dns.rcode.NOTIMP
        badvers = await ask(r, use_edns=1)
        assert badvers is not None and badvers.rcode() == dns.rcode.BADVERS
        assert not up.queries()


class FakePkarr:
    """Claims names under a fake 52-char TLD; answers A 10.0.0.1 (TTL 300)."""

    tld = "o" * 52

    def __init__(self) -> None:
        self.calls = 0

    def claims(self, qname: str) -> bool:
        return qname == self.tld or qname.endswith("." + self.tld)

    async def answer(self, query: dnslib.DNSRecord, client_ip: str) -> dnslib.DNSRecord:
        self.calls += 1
        reply = query.reply()
        reply.add_answer(dnslib.RR(query.q.qname, dnslib.QTYPE.A, rdata=dnslib.A("10.0.0.1"),
                                   ttl=300))
        return reply


async def test_pkarr_names_never_go_upstream_and_are_cached() -> None:
    pk = FakePkarr()
    with FakeUpstream(a_record()) as up:
        r = make(up)
        r.pkarr = pk
        name = "www." + pk.tld.upper()
        first = await ask(r, name)
        second = await ask(r, name.lower())
        assert not up.queries()
    assert first is not None and first.answer[0][0].address == "10.0.0.1"
    assert second is not None and str(second.question[0].name) == name.lower() + "."
    assert pk.calls == 1
