"""The UDP hot path: memoised replies (ReplyMemo) must be exactly what the cache would render.

In-process: a real Resolver + WireCache on a fake clock, a UdpServer whose transport records
what it sends. Each test compares the memoised answer with the full path or checks that policy
(ACL, rate limit, expiry, drain) still applies to it, once per query.
"""

from __future__ import annotations

import asyncio
import struct
import weakref
from dataclasses import replace
from typing import Any

import dns.message
import dns.rcode

from pkdns.config import CacheConfig, Config, DnsConfig
from pkdns.dns import wire
from pkdns.dns.cache import WireCache, inspect_reply
from pkdns.dns.forwarder import Forwarder
from pkdns.dns.resolver import Resolver
from pkdns.metrics import Metrics
from pkdns.server.udp import UdpServer
from tests.dns.test_cache import reply_for
from tests.support.clock import FakeClock
from tests.support.upstream import FakeUpstream, a_record

CLIENT = ("127.0.0.1", 40000)
CONFIGS: weakref.WeakKeyDictionary[UdpServer, Config] = weakref.WeakKeyDictionary()


class Recorder:
    """A datagram transport that keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def setup(clock: FakeClock, upstream: tuple[str, int] = ("127.0.0.1", 9),
          rate_limit: float = 0.0) -> tuple[UdpServer, Recorder]:
    dns_cfg = DnsConfig(upstream=(upstream,), upstream_timeout=0.2, query_deadline=1.0,
                        rate_limit=rate_limit, rate_limit_burst=1.0)
    cfg = Config(dns=dns_cfg, cache=CacheConfig())
    metrics = Metrics()
    fwd = Forwarder(dns_cfg.upstream, dns_cfg.upstream_timeout, metrics)
    resolver = Resolver(cfg, WireCache(cfg.cache), fwd, clock, metrics)
    server = UdpServer(resolver, 1232)
    rec = Recorder()
    server.connection_made(rec)  # type: ignore[arg-type]
    CONFIGS[server] = cfg
    return server, rec


def reconfigure(server: UdpServer, **dns: Any) -> None:
    """Apply changed ``dns`` options to the running resolver, as a SIGHUP reload does."""
    old = CONFIGS[server]
    CONFIGS[server] = new = replace(old, dns=replace(old.dns, **dns))
    server.resolver.reconfigure(old, new)


def query(name: str = "www.example.test", qid: int = 1, **kw: Any) -> bytes:
    q = dns.message.make_query(name, "A", **kw)
    q.id = qid
    return q.to_wire()


def cache_answer(server: UdpServer, clock: FakeClock, ttl: int = 300,
                 name: str = "www.example.test") -> None:
    q = wire.parse_query(query(name))
    rwire = reply_for(query(name), f"{name}. {ttl} IN A 192.0.2.1")
    server.resolver.cache.store(q.key, inspect_reply(rwire), clock.monotonic())


def ask(server: UdpServer, rec: Recorder, data: bytes) -> bytes | None:
    before = len(rec.sent)
    server.datagram_received(data, CLIENT)
    return rec.sent[-1] if len(rec.sent) > before else None


def test_memo_reply_equals_rendered_reply_with_own_id(fake_clock: FakeClock) -> None:
    server, rec = setup(fake_clock)
    cache_answer(server, fake_clock)
    first = ask(server, rec, query(qid=1))
    assert len(server.memo) == 1
    second = ask(server, rec, query(qid=0xBEEF))
    assert first is not None and second is not None
    assert second[:2] == b"\xbe\xef" and second[2:] == first[2:]
    metrics = server.resolver.metrics.render().decode()
    assert "pkdns_cache_hits_total 2.0" in metrics
    assert 'pkdns_queries_total{kind="icann",rcode="NOERROR",transport="udp"} 2.0' in metrics


def test_memo_follows_the_ttl_second(fake_clock: FakeClock) -> None:
    server, rec = setup(fake_clock)
    fake_clock.advance(0.7)                  # stored at a fractional time
    cache_answer(server, fake_clock, ttl=300)
    ttls = []
    for step in (0.0, 0.29, 0.72, 0.5, 0.48, 0.02):
        fake_clock.advance(step)
        out = ask(server, rec, query(qid=7))
        assert out is not None
        ttls.append(dns.message.from_wire(out).answer[0].ttl)
    assert ttls == [300, 300, 299, 299, 299, 298]


def test_question_case_and_edns_are_separate_memo_entries(fake_clock: FakeClock) -> None:
    server, rec = setup(fake_clock)
    cache_answer(server, fake_clock)
    plain = ask(server, rec, query())
    mixed = ask(server, rec, query("WwW.ExAmple.TEST"))
    edns = ask(server, rec, query(use_edns=0, payload=1232))
    assert plain is not None and mixed is not None and edns is not None
    assert str(dns.message.from_wire(mixed).question[0].name) == "WwW.ExAmple.TEST."
    assert dns.message.from_wire(edns).edns == 0 and dns.message.from_wire(plain).edns == -1
    assert len(server.memo) == 3


async def test_memo_never_serves_past_expiry(fake_clock: FakeClock) -> None:
    with FakeUpstream(a_record("192.0.2.99")) as up:
        server, rec = setup(fake_clock, (up.host, up.port))
        cache_answer(server, fake_clock, ttl=2)
        assert ask(server, rec, query()) is not None
        fake_clock.advance(1.999)
        out = ask(server, rec, query())
        assert out is not None and dns.message.from_wire(out).answer[0].ttl == 1
        fake_clock.advance(0.001)
        assert ask(server, rec, query()) is None       # a miss: goes upstream
        for _ in range(100):
            if len(rec.sent) == 3:
                break
            await asyncio.sleep(0.01)
    fresh = dns.message.from_wire(rec.sent[-1])
    assert fresh.answer[0][0].address == "192.0.2.99" and len(up.queries()) == 1


def test_acl_change_applies_to_memoised_answers(fake_clock: FakeClock) -> None:
    server, rec = setup(fake_clock)
    cache_answer(server, fake_clock)
    assert ask(server, rec, query()) is not None
    reconfigure(server, allow=("10.0.0.0/8",))          # what a SIGHUP reload does
    out = ask(server, rec, query())
    assert out is not None and dns.message.from_wire(out).rcode() == dns.rcode.REFUSED


def test_rate_limit_applies_to_memoised_answers(fake_clock: FakeClock) -> None:
    server, rec = setup(fake_clock)
    cache_answer(server, fake_clock)
    assert ask(server, rec, query()) is not None
    reconfigure(server, rate_limit=1.0, rate_limit_burst=1.0, forwarders=())   # 127.0.0.1 too
    outs = [ask(server, rec, query(qid=i)) for i in range(4)]
    assert outs[0] is not None and dns.message.from_wire(outs[0]).answer
    assert outs[1] is None                                # dropped
    slip = outs[2]
    assert slip is not None and slip[2] & 0x02 and not dns.message.from_wire(slip).answer
    assert outs[3] is None


def test_a_memoised_answer_takes_one_token(fake_clock: FakeClock) -> None:
    """Policy runs once per query, before the memo: a burst of 3 is 3 answers, memo or not."""
    server, rec = setup(fake_clock, rate_limit=0.001)
    reconfigure(server, rate_limit_burst=3.0, forwarders=())
    cache_answer(server, fake_clock)
    outs = [ask(server, rec, query(qid=i)) for i in range(4)]
    assert all(o is not None and dns.message.from_wire(o).answer for o in outs[:3])
    assert len(server.memo) == 1 and outs[3] is None


async def test_drain_clears_the_memo(fake_clock: FakeClock) -> None:
    server, rec = setup(fake_clock)
    cache_answer(server, fake_clock)
    assert ask(server, rec, query()) is not None
    await server.drain(0.1)
    assert len(server.memo) == 0 and ask(server, rec, query()) is None


def test_memo_is_bounded(fake_clock: FakeClock) -> None:
    server, rec = setup(fake_clock)
    server.memo.max_entries = 8
    for i in range(20):
        cache_answer(server, fake_clock, name=f"n{i}.example.test")
        out = ask(server, rec, query(f"n{i}.example.test", qid=i))
        assert out is not None and struct.unpack(">H", out[:2])[0] == i
    assert 0 < len(server.memo) <= 8


async def test_no_usable_upstream_answers_servfail_at_once(fake_clock: FakeClock) -> None:
    # connect() to the broadcast address fails in the kernel (EACCES without SO_BROADCAST), so
    # the fetch fails while it is being started: the waiter must still get its SERVFAIL.
    server, rec = setup(fake_clock, ("255.255.255.255", 53))
    out = ask(server, rec, query("unreachable.example.test"))
    assert out is not None and dns.message.from_wire(out).rcode() == dns.rcode.SERVFAIL
    assert server.resolver.forwarder.sent == 0
    again = ask(server, rec, query("unreachable.example.test"))     # remembered (RFC 9520)
    assert again is not None and dns.message.from_wire(again).rcode() == dns.rcode.SERVFAIL
