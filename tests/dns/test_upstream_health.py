"""Upstream health: an upstream that stays silent is probed with backoff --
at most one query per second -- instead of getting every cache miss, and comes back on the first
reply. Pure decisions on a fake clock, then the forwarder against a fake upstream on loopback."""

from __future__ import annotations

import asyncio
import time

import dns.message
import pytest

from pkdns.dns import wire
from pkdns.dns.forwarder import DOWN_AFTER, PROBE_MAX, Forwarder, Health
from pkdns.errors import UpstreamError
from tests.support.upstream import Delayed, FakeUpstream, Reply, a_record, answer

UP = ("192.0.2.53", 53)


def test_down_after_silent_attempts_then_probes_with_backoff() -> None:
    h = Health()
    for k in range(DOWN_AFTER - 1):
        h.no_reply(UP, 10.0 + k)
    assert not h.down and h.may_use(UP, 20.0)
    h.no_reply(UP, 20.0)
    assert h.down
    probes = [t / 10 for t in range(200, 600) if h.may_use(UP, t / 10)]     # 20 s .. 60 s
    assert probes[:5] == [21.0, 23.0, 27.0, 35.0, 35.0 + PROBE_MAX]
    assert all(b - a <= PROBE_MAX for a, b in zip(probes, probes[1:], strict=False))
    h.replied(UP)
    assert not h.down and not h.silent and h.may_use(UP, 60.0)


def test_a_reply_resets_the_count() -> None:
    h = Health()
    for k in range(3 * DOWN_AFTER):
        h.no_reply(UP, float(k))
        if k % (DOWN_AFTER - 1) == DOWN_AFTER - 2:
            h.replied(UP)
    assert not h.down


def q(i: int) -> bytes:
    return wire.name_wire(f"n{i}.example.test") + b"\x00\x01\x00\x01"


class Switch:
    """Silent until ``on`` is set, then an A record for every question."""

    def __init__(self) -> None:
        self.on = False

    def __call__(self, data: bytes, transport: str) -> Reply:
        return a_record()(data, transport) if self.on else None


async def test_silent_upstream_gets_at_most_one_query_per_second() -> None:
    switch = Switch()
    with FakeUpstream(switch) as up:
        fwd = Forwarder(((up.host, up.port),), 0.2)
        loop = asyncio.get_running_loop()

        async def one(i: int) -> bytes | None:
            try:
                return await fwd.exchange(q(i), False, False, loop.time() + 0.5)
            except UpstreamError:
                return None

        tasks = []
        went_down: tuple[float, int] | None = None
        for i in range(80):                     # 20 new names a second for 4 s
            tasks.append(loop.create_task(one(i)))
            await asyncio.sleep(0.05)
            if went_down is None and fwd.health.down:
                went_down = (time.monotonic(), len(up.queries()))
        assert not any(await asyncio.gather(*tasks))
        assert went_down is not None and went_down[1] < 30, went_down
        since, probes = time.monotonic() - went_down[0], len(up.queries()) - went_down[1]
        assert since > 3 and probes <= since + 1, (since, probes)      # not 3 per name
        start = time.monotonic()
        fast = await one(1000)                  # down and no probe due: fails at once
        assert fast is None and time.monotonic() - start < 0.05
        switch.on = True
        deadline = time.monotonic() + PROBE_MAX + 1
        answered = None
        while answered is None and time.monotonic() < deadline:
            answered = await one(2000)
            await asyncio.sleep(0.1)
        assert answered is not None and not fwd.health.down
        reply = dns.message.from_wire(answered)
        assert reply.answer[0][0].address == "192.0.2.1"


async def test_a_down_upstream_is_skipped_for_a_live_one() -> None:
    with FakeUpstream(lambda _d, _t: None) as dead, FakeUpstream(a_record()) as live:
        fwd = Forwarder(((dead.host, dead.port), (live.host, live.port)), 0.2)
        fwd.health.down[(dead.host, dead.port)] = float("inf")
        fwd.preferred = 0
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        reply = await fwd.exchange(q(1), False, False, loop.time() + 1.0)
        assert time.monotonic() - start < 0.1 and not dead.queries()
    assert dns.message.from_wire(reply).answer


@pytest.mark.parametrize("rcode", [2, 5])
async def test_error_rcodes_keep_an_upstream_up(rcode: int) -> None:
    with FakeUpstream(lambda d, _t: answer(d, rcode=rcode)) as up:
        fwd = Forwarder(((up.host, up.port),), 0.2)
        loop = asyncio.get_running_loop()
        for i in range(2 * DOWN_AFTER):
            await fwd.exchange(q(i), False, False, loop.time() + 0.5)
    assert not fwd.health.down and not fwd.health.silent


async def test_exchange_in_flight_keeps_waiting_when_its_upstream_goes_down() -> None:
    """Marked down meanwhile (here: its own first timeout is the 8th silent attempt), an
    upstream's late reply to an attempt already sent is still taken, until the deadline."""
    def late(data: bytes, _t: str) -> Reply:
        name = dns.message.from_wire(data).question[0].name
        return Delayed(answer(data, f"{name} 300 IN A 192.0.2.9"), 0.5)

    with FakeUpstream(late) as up:
        fwd = Forwarder(((up.host, up.port),), 0.2)
        fwd.health.silent[(up.host, up.port)] = DOWN_AFTER - 1
        loop = asyncio.get_running_loop()
        reply = await fwd.exchange(q(1), False, False, loop.time() + 1.0)
        assert len(up.queries()) == 1
    assert dns.message.from_wire(reply).answer[0][0].address == "192.0.2.9"
    assert not fwd.health.down
