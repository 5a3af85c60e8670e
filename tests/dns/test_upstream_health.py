"""Upstream health: an upstream that answers nothing at all is probed with backoff -- at most
one query per second -- instead of getting every cache miss, and comes back on the first reply;
a name that is slow (its zone's servers never answer the upstream) never takes it down. Pure
decisions on a fake clock, then the forwarder against fake upstreams on loopback."""

from __future__ import annotations

import asyncio

import dns.message
import pytest

from pkdns.dns import wire
from pkdns.dns.forwarder import Forwarder
from pkdns.dns.health import DOWN_AFTER, PROBE_MAX, Health, zone_of
from pkdns.errors import UpstreamError
from tests.support.upstream import Delayed, FakeUpstream, Reply, a_record, answer

UP = ("192.0.2.53", 53)


def qn(name: str) -> bytes:
    return wire.name_wire(name) + b"\x00\x01\x00\x01"


def test_zone_is_the_last_two_labels() -> None:
    assert zone_of(qn("a.b.slow.example")) == wire.name_wire("slow.example")
    assert zone_of(qn("slow.example")) == wire.name_wire("slow.example")
    assert zone_of(qn("test")) == wire.name_wire("test")
    assert zone_of(b"\x00\x00\x01\x00\x01") == b"\x00"


def test_down_after_silent_attempts_then_probes_with_backoff() -> None:
    h = Health()
    srv = h.server(UP)
    for k in range(DOWN_AFTER - 1):
        h.no_reply(srv, qn(f"n{k}.zone{k}.test"), 10.0 + k)
    assert not h.down and h.may_use(UP, qn("x.test"), 20.0)
    h.no_reply(srv, qn("last.zone.test"), 20.0)
    assert h.down
    probes = [t / 10 for t in range(200, 600) if h.may_use(UP, qn("x.test"), t / 10)]
    assert probes[:5] == [21.0, 23.0, 27.0, 35.0, 35.0 + PROBE_MAX]
    assert all(b - a <= PROBE_MAX for a, b in zip(probes, probes[1:], strict=False))
    h.replied(srv)
    assert not h.down and not srv.silent and h.may_use(UP, qn("x.test"), 60.0)


def test_a_reply_resets_the_count() -> None:
    h = Health()
    srv = h.server(UP)
    for k in range(3 * DOWN_AFTER):
        h.no_reply(srv, qn(f"n{k}.zone{k}.test"), float(k))
        if k % (DOWN_AFTER - 1) == DOWN_AFTER - 2:
            h.replied(srv)
    assert not h.down


def test_one_slow_zone_never_takes_a_server_down() -> None:
    """Every attempt silent, the server answering nothing else, but all of them under one
    domain: that domain is slow, not the server (one client's random names did this)."""
    h = Health()
    srv = h.server(UP)
    for k in range(20 * DOWN_AFTER):
        h.no_reply(srv, qn(f"r{k}.x{k}.slow.example"), k / 10)
    assert not h.down and h.may_use(UP, qn("www.example.test"), 100.0)


def test_a_hard_error_is_about_the_server_whatever_the_zone() -> None:
    h = Health()
    srv = h.server(UP)
    for k in range(DOWN_AFTER - 1):
        h.no_reply(srv, qn(f"r{k}.slow.example"), 1.0)
    assert not h.down
    h.no_reply(srv, None, 1.0)                   # ICMP port unreachable / send failed
    assert h.down


def test_silent_zone_names_do_not_spend_the_probe() -> None:
    """Down, with one zone among the silent ones: its names may not probe until the probe is
    PROBE_MAX overdue, so a probe goes to another name first (an attacker's names would
    otherwise keep spending every probe and keep the server down)."""
    h = Health()
    srv = h.server(UP)
    for k in range(DOWN_AFTER):
        h.no_reply(srv, qn(f"r{k}.slow.example" if k % 2 else f"r{k}.dead.example"), 0.0)
    assert h.down
    assert not h.may_use(UP, qn("new.slow.example"), 1.5)
    assert h.may_use(UP, qn("www.example.test"), 1.5)           # the probe, at once
    assert not h.may_use(UP, qn("www.example.test"), 1.6)       # next one in 2 s
    assert not h.may_use(UP, qn("other.slow.example"), 3.6)
    assert h.may_use(UP, qn("other.slow.example"), 3.5 + PROBE_MAX)     # overdue: may probe


def test_answered_since_tells_a_slow_name_from_a_silent_server() -> None:
    h = Health()
    srv = h.server(UP)
    mark = srv.answers
    assert not srv.answered_since(mark)
    srv.answers += 1
    assert srv.answered_since(mark)


def q(i: int) -> bytes:
    return qn(f"n{i}.zone{i % 5}.test")       # several zones, as real traffic has


class Switch:
    """Silent until ``on`` is set, then an A record for every question."""

    def __init__(self) -> None:
        self.on = False

    def __call__(self, data: bytes, transport: str) -> Reply:
        return a_record()(data, transport) if self.on else None


async def test_silent_upstream_is_probed_not_asked_and_comes_back() -> None:
    """Against a real silent server: 20 new names a second take it down within 30 queries;
    then a name with no probe due is not sent at all, and once the server answers, a probe
    brings it back. The probe times themselves: test_exchange.py, on a made-up clock."""
    switch = Switch()
    with FakeUpstream(switch) as up:
        fwd = Forwarder(((up.host, up.port),), 0.2)
        loop = asyncio.get_running_loop()

        async def one(i: int) -> bytes | None:
            try:
                return await fwd.exchange(q(i), False, False, 0.5)
            except UpstreamError:
                return None

        tasks = []
        went_down = None
        for i in range(80):                     # 20 new names a second, until down
            tasks.append(loop.create_task(one(i)))
            await asyncio.sleep(0.05)
            if fwd.health.down:
                went_down = len(up.queries())
                break
        assert not any(await asyncio.gather(*tasks))
        assert went_down is not None and went_down < 30, went_down
        srv = fwd.health.down[(up.host, up.port)]
        srv.probe_at = float("inf")            # no probe due
        before = len(up.queries())
        assert await one(1000) is None and len(up.queries()) == before
        srv.probe_at = 0.0
        switch.on = True
        answered = None
        for i in range(20):                     # bounded: one probe is due at once
            answered = await one(2000 + i)
            if answered is not None:
                break
            await asyncio.sleep(0.1)
        assert answered is not None and not fwd.health.down
        reply = dns.message.from_wire(answered)
        assert reply.answer[0][0].address == "192.0.2.1"


async def test_a_down_upstream_is_skipped_for_a_live_one() -> None:
    with FakeUpstream(lambda _d, _t: None) as dead, FakeUpstream(a_record()) as live:
        fwd = Forwarder(((dead.host, dead.port), (live.host, live.port)), 0.2)
        dead_srv = fwd.health.server((dead.host, dead.port))
        dead_srv.probe_at = float("inf")
        fwd.health.down[(dead.host, dead.port)] = dead_srv
        fwd.preferred = 0
        reply = await fwd.exchange(q(1), False, False, 1.0)
        assert not dead.queries()
    assert dns.message.from_wire(reply).answer


@pytest.mark.parametrize("rcode", [2, 5])
async def test_error_rcodes_keep_an_upstream_up(rcode: int) -> None:
    with FakeUpstream(lambda d, _t: answer(d, rcode=rcode)) as up:
        fwd = Forwarder(((up.host, up.port),), 0.2)
        for i in range(2 * DOWN_AFTER):
            await fwd.exchange(q(i), False, False, 0.5)
    assert not fwd.health.down and not fwd.health.server((up.host, up.port)).silent


async def test_exchange_in_flight_keeps_waiting_when_its_upstream_goes_down() -> None:
    """Marked down meanwhile (here: its own first timeout is the 8th silent attempt), an
    upstream's late reply to an attempt already sent is still taken, until the deadline."""
    def late(data: bytes, _t: str) -> Reply:
        name = dns.message.from_wire(data).question[0].name
        return Delayed(answer(data, f"{name} 300 IN A 192.0.2.9"), 0.5)

    with FakeUpstream(late) as up:
        fwd = Forwarder(((up.host, up.port),), 0.2)
        srv = fwd.health.server((up.host, up.port))
        srv.silent, srv.hard = DOWN_AFTER - 1, True
        reply = await fwd.exchange(q(1), False, False, 1.0)
        assert len(up.queries()) == 1
    assert dns.message.from_wire(reply).answer[0][0].address == "192.0.2.9"
    assert not fwd.health.down


SLOW = "slow.example"


def all_but_one_zone(data: bytes, transport: str) -> Reply:
    """An upstream that answers everything at once except names under SLOW (whose servers,
    as far as it is concerned, never answer)."""
    name = str(dns.message.from_wire(data).question[0].name).lower()
    return None if name.endswith(f".{SLOW}.") else a_record()(data, transport)


async def test_a_slow_zone_does_not_take_a_live_upstream_down() -> None:
    """A burst of 8 random names under SLOW with nothing else going on, then 3 s of 10 such
    names a second beside 10 other names a second: every other name is answered and the
    upstream never counts as down (the burst alone took it down for a second)."""
    with FakeUpstream(all_but_one_zone) as up:
        fwd = Forwarder(((up.host, up.port),), 0.2)
        loop = asyncio.get_running_loop()

        async def one(name: str) -> bytes | None:
            try:
                return await fwd.exchange(qn(name), False, False, 0.5)
            except UpstreamError:
                return None

        assert not any(await asyncio.gather(*(one(f"b{i}.{SLOW}") for i in range(8))))
        assert await one("after-burst.example.test") is not None
        slow, legit = [], []
        for i in range(30):
            slow.append(loop.create_task(one(f"r{i}.{SLOW}")))
            legit.append(loop.create_task(one(f"n{i}.example.test")))
            await asyncio.sleep(0.1)
            assert not fwd.health.down
        answered = sum(r is not None for r in await asyncio.gather(*legit))
        assert answered == len(legit)
        assert not any(await asyncio.gather(*slow))
        assert len([s for s in up.queries() if SLOW in str(s.message.question[0].name).lower()]
                   ) >= 2 * 38                        # every slow name was really asked
