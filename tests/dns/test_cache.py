"""The wire cache with a fake clock: TTL decrement, clamps, negative caching, stale, bounds."""

from __future__ import annotations

import gc
from typing import Any

import dns.message
import dns.rcode
import dns.rrset

from pkdns.config import CacheConfig
from pkdns.dns import wire
from pkdns.dns.cache import EXPIRES, STALE_UNTIL, WireCache, inspect_reply, render
from tests.support.clock import FakeClock
from tests.support.upstream import rrset


def query(name: str = "www.example.test", rdtype: str = "A", **kw: Any) -> bytes:
    return dns.message.make_query(name, rdtype, **kw).to_wire()


def reply_for(qwire: bytes, *rrs: str, rcode: int = 0, authority: tuple[str, ...] = (),
              additional: tuple[str, ...] = ()) -> bytes:
    m = dns.message.from_wire(qwire)
    r = dns.message.make_response(m)
    r.set_rcode(dns.rcode.Rcode.make(rcode))
    for text in rrs:
        r.answer.append(rrset(text))
    for text in authority:
        r.authority.append(rrset(text))
    for text in additional:
        r.additional.append(rrset(text))
    return r.to_wire()


SOA = "example.test. 600 IN SOA ns.example.test. h.example.test. 1 3600 600 86400 60"


def stored(cache: WireCache, clock: FakeClock, qwire: bytes, rwire: bytes) -> bytes:
    q = wire.parse_query(qwire)
    cache.store(q.key, inspect_reply(rwire), clock.monotonic())
    return q.key


def serve(cache: WireCache, clock: FakeClock, qwire: bytes, max_size: int = 1232,
          stale_ttl: int = 0) -> dns.message.Message | None:
    scanned = wire.scan(qwire)
    assert scanned is not None
    key, qend, size, do = scanned
    entry = cache.get(key)
    if entry is None or (not stale_ttl and clock.monotonic() >= entry[EXPIRES]):
        return None
    out = render(entry, qwire, qend, size, bool(do), max_size, clock.monotonic(), stale_ttl)
    return dns.message.from_wire(out)


def make(clock: FakeClock, **kw: Any) -> WireCache:
    return WireCache(CacheConfig(**kw))


def test_ttl_decrements_and_expires(fake_clock: FakeClock) -> None:
    cache = make(fake_clock)
    qw = query()
    stored(cache, fake_clock, qw, reply_for(qw, "www.example.test. 300 IN A 192.0.2.1"))
    fake_clock.advance(100.4)
    r = serve(cache, fake_clock, query())
    assert r is not None and r.answer[0].ttl == 200 and r.answer[0][0].address == "192.0.2.1"
    fake_clock.advance(200)
    assert serve(cache, fake_clock, query()) is None


def test_answers_echo_question_case_and_client_id(fake_clock: FakeClock) -> None:
    cache = make(fake_clock)
    qw = query()
    stored(cache, fake_clock, qw, reply_for(qw, "www.example.test. 300 IN A 192.0.2.1"))
    asked = dns.message.make_query("WwW.ExAmPlE.TeSt", "A")
    r = serve(cache, fake_clock, asked.to_wire())
    assert r is not None and r.id == asked.id
    assert str(r.question[0].name) == "WwW.ExAmPlE.TeSt." and asked.is_response(r)


def test_clamps_and_top_bit_ttl(fake_clock: FakeClock) -> None:
    cache = make(fake_clock, min_ttl=60, max_ttl=3600)
    qw = query()
    stored(cache, fake_clock, qw, reply_for(qw, "www.example.test. 2147483647 IN A 192.0.2.1"))
    r = serve(cache, fake_clock, qw)
    assert r is not None and r.answer[0].ttl == 3600
    qw2 = query("low.example.test")
    stored(cache, fake_clock, qw2, reply_for(qw2, "low.example.test. 5 IN A 192.0.2.2"))
    r2 = serve(cache, fake_clock, qw2)
    assert r2 is not None and r2.answer[0].ttl == 60
    qw3 = query("neg.example.test")
    raw = bytearray(reply_for(qw3, "neg.example.test. 5 IN A 192.0.2.3"))
    raw[-10:-6] = b"\x80\x00\x00\x01"                    # TTL with the top bit set -> 0 -> min
    stored(cache, fake_clock, qw3, bytes(raw))
    r3 = serve(cache, fake_clock, qw3)
    assert r3 is not None and r3.answer[0].ttl == 60


def test_negative_caching_uses_soa_minimum(fake_clock: FakeClock) -> None:
    cache = make(fake_clock)
    qw = query("nope.example.test")
    stored(cache, fake_clock, qw, reply_for(qw, rcode=dns.rcode.NXDOMAIN, authority=(SOA,)))
    fake_clock.advance(10)
    r = serve(cache, fake_clock, qw)
    assert r is not None and r.rcode() == dns.rcode.NXDOMAIN and r.authority[0].ttl == 50
    fake_clock.advance(50)
    assert serve(cache, fake_clock, qw) is None
    qw2 = query("nosoa.example.test")
    stored(cache, fake_clock, qw2, reply_for(qw2, rcode=dns.rcode.NXDOMAIN))
    assert cache.get(wire.parse_query(qw2).key) is None          # RFC 2308 §5: no SOA, no cache
    qw3 = query("www.example.test", "AAAA")
    stored(cache, fake_clock, qw3, reply_for(qw3, authority=(SOA,)))    # NODATA
    r3 = serve(cache, fake_clock, qw3)
    assert r3 is not None and r3.rcode() == 0 and not r3.answer and r3.authority[0].ttl == 60


def test_servfail_is_never_cached(fake_clock: FakeClock) -> None:
    cache = make(fake_clock)
    qw = query()
    key = stored(cache, fake_clock, qw, reply_for(qw, rcode=dns.rcode.SERVFAIL))
    assert cache.get(key) is None
    cache.note_failure(key, fake_clock.monotonic())
    assert cache.failing(key, fake_clock.monotonic())
    fake_clock.advance(5.1)
    assert not cache.failing(key, fake_clock.monotonic())


def test_serve_stale_within_max_age(fake_clock: FakeClock) -> None:
    cache = make(fake_clock, stale_max_age=1000)
    qw = query()
    key = stored(cache, fake_clock, qw, reply_for(qw, "www.example.test. 300 IN A 192.0.2.1"))
    fake_clock.advance(900)
    assert serve(cache, fake_clock, qw) is None
    r = serve(cache, fake_clock, qw, stale_ttl=30)
    assert r is not None and r.answer[0].ttl == 30
    fake_clock.advance(500)
    entry = cache.get(key)
    assert entry is None or fake_clock.monotonic() >= entry[STALE_UNTIL]


def test_do_and_cd_are_separate_entries(fake_clock: FakeClock) -> None:
    cache = make(fake_clock)
    qw = query()
    stored(cache, fake_clock, qw, reply_for(qw, "www.example.test. 300 IN A 192.0.2.1"))
    assert serve(cache, fake_clock, query(want_dnssec=True)) is None


def test_edns_opt_follows_the_client(fake_clock: FakeClock) -> None:
    cache = make(fake_clock)
    qw = query(use_edns=0)
    stored(cache, fake_clock, qw, reply_for(qw, "www.example.test. 300 IN A 192.0.2.1"))
    plain = serve(cache, fake_clock, query(use_edns=False))
    with_edns = serve(cache, fake_clock, query(use_edns=0, payload=4096))
    assert plain is not None and plain.edns == -1
    assert with_edns is not None and with_edns.edns == 0 and with_edns.payload == 1232


def test_truncation_to_client_size(fake_clock: FakeClock) -> None:
    cache = make(fake_clock)
    qw = query("big.example.test", "TXT")
    rrs = [f'big.example.test. 300 IN TXT "{i:02d}{"x" * 200}"' for i in range(8)]
    m = dns.message.make_response(dns.message.from_wire(qw))
    m.answer.append(dns.rrset.from_text_list("big.example.test.", 300, "IN", "TXT",
                                             [r.split(None, 4)[4] for r in rrs]))
    stored(cache, fake_clock, qw, m.to_wire())
    r = serve(cache, fake_clock, query("big.example.test", "TXT", use_edns=False), max_size=512)
    assert r is not None and r.flags & dns.flags.TC and not r.answer
    full = serve(cache, fake_clock, qw, max_size=65535)
    assert full is not None and len(full.answer[0]) == 8


def test_out_of_chain_answers_are_scrubbed(fake_clock: FakeClock) -> None:
    cache = make(fake_clock)
    qw = query()
    rw = reply_for(qw, "www.example.test. 300 IN CNAME alias.example.test.",
                   "alias.example.test. 300 IN A 192.0.2.7",
                   "evil.example.net. 300 IN A 203.0.113.66")
    stored(cache, fake_clock, qw, rw)
    r = serve(cache, fake_clock, qw)
    assert r is not None
    names = {str(rr.name) for rr in r.answer}
    assert names == {"www.example.test.", "alias.example.test."}


def test_byte_bound_evicts(fake_clock: FakeClock) -> None:
    cache = make(fake_clock, max_bytes=20_000)
    for i in range(500):
        qw = query(f"n{i}.example.test")
        stored(cache, fake_clock, qw, reply_for(qw, f"n{i}.example.test. 300 IN A 192.0.2.1"))
    assert cache.bytes_used <= 20_000 and 0 < len(cache) < 500


def test_entries_past_their_stale_window_are_swept(fake_clock: FakeClock) -> None:
    cache = make(fake_clock, stale_max_age=100)
    qa, qb = query("a.example.test"), query("b.example.test")
    stored(cache, fake_clock, qa, reply_for(qa, "a.example.test. 60 IN A 192.0.2.1"))
    fake_clock.advance(161)
    stored(cache, fake_clock, qb, reply_for(qb, "b.example.test. 60 IN A 192.0.2.2"))
    for i in range(6):              # the sweep runs every 8th store: this is store 3..8
        assert len(cache) == 2 + i
        qn = query(f"n{i}.example.test")
        stored(cache, fake_clock, qn, reply_for(qn, f"n{i}.example.test. 60 IN A 192.0.2.3"))
    assert len(cache) == 7 and serve(cache, fake_clock, qb) is not None


def test_cached_entries_are_not_tracked_by_the_garbage_collector(fake_clock: FakeClock) -> None:
    cache = make(fake_clock)
    qw = query()
    key = stored(cache, fake_clock, qw, reply_for(qw, "www.example.test. 300 IN A 192.0.2.1"))
    gc.collect()        # the inner tuples (TTLs, offsets) are untracked first,
    gc.collect()        # then the entry itself
    assert not gc.is_tracked(cache.get(key))
