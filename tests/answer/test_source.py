"""The packet source: cache, single flight, windows, negative caching, limits (fake DHT)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from pkdns.answer.source import PkarrSource, Status
from pkdns.config import PkarrConfig
from pkdns.dht.item import MutableItem
from pkdns.pkarr.keys import Keypair, PublicKey
from pkdns.pkarr.signed_packet import SignedPacket
from tests.answer.fakes import source_over
from tests.support.clock import FakeClock
from tests.support.pkarr_factory import keypair, packet
from tests.support.pkarr_fakes import FakeDht, FnRelay, Script, item_of

CFG = PkarrConfig(lookup_timeout=0.3, first_answer_window=0.03, negative_ttl=60, min_ttl=60,
                  max_ttl=86400, stale_max_age=3600, dht_rate_limit=0)
KP = keypair(7)
KEY = KP.public_key


def pkt(ts_offset_s: float = 0.0, ttl: int = 300, ip: str = "10.0.0.1",
        kp: Keypair = KP) -> SignedPacket:
    return packet(kp, [f"@ {ttl} IN A {ip}"], ts=FakeClock().wall_us() + int(ts_offset_s * 1e6))


def source(dht: FakeDht, clock: FakeClock, **cfg: Any) -> PkarrSource:
    return source_over(dht, dataclasses.replace(CFG, **cfg), clock)


def found(p: SignedPacket) -> Script:
    return Script(items=[(0.0, item_of(p))])


async def test_cold_lookup_finds_the_packet_then_serves_it_from_cache() -> None:
    clock, p = FakeClock(), pkt()
    dht = FakeDht(lambda k: found(p))
    src = source(dht, clock)
    first = await src.get(KEY, "10.1.1.1")
    assert first.status is Status.FOUND and first.packet == p and not first.stale
    clock.advance(100)
    again = await src.get(KEY, "10.1.1.1")
    assert again.status is Status.FOUND and again.age == 100 and not again.stale
    assert len(dht.calls) == 1 and dht.calls[0] == KEY.raw
    assert src.query_count(KEY) == 2
    assert [c.packet for c in src.cached()] == [p]


async def test_1000_concurrent_queries_for_a_cold_key_make_one_lookup() -> None:
    p = pkt()
    dht = FakeDht(lambda k: Script(items=[(0.05, item_of(p))]))
    src = source(dht, FakeClock(), dht_rate_limit=5.0, dht_rate_limit_burst=5.0)
    results = await asyncio.gather(*(src.get(KEY, "10.1.1.1") for _ in range(1000)))
    assert len(dht.calls) == 1 and src.lookups_started == 1
    assert {r.status for r in results} == {Status.FOUND}
    assert {r.packet for r in results} == {p}


async def test_stale_packet_is_served_at_once_and_refreshed_in_background() -> None:
    clock, old, new = FakeClock(), pkt(0, ip="10.0.0.1"), pkt(10, ip="10.0.0.2")
    answers = [found(old), Script(items=[(0.05, item_of(new))])]
    dht = FakeDht(lambda k: answers.pop(0))
    src = source(dht, clock)
    await src.get(KEY, "10.1.1.1")
    clock.advance(301)  # past the packet TTL (300)
    stale = await src.get(KEY, "10.1.1.1")
    assert stale.status is Status.FOUND and stale.stale and stale.packet == old
    await asyncio.sleep(0.01)
    assert len(dht.calls) == 2
    await asyncio.sleep(0.2)
    fresh = await src.get(KEY, "10.1.1.1")
    assert fresh.packet == new and not fresh.stale and fresh.age == 0


async def test_refresh_that_confirms_the_held_packet_makes_it_fresh_again() -> None:
    clock, p = FakeClock(), pkt()
    dht = FakeDht(lambda k: found(p))
    src = source(dht, clock)
    await src.get(KEY, "ip")
    clock.advance(400)
    assert (await src.get(KEY, "ip")).stale
    await asyncio.sleep(0.1)
    after = await src.get(KEY, "ip")
    assert not after.stale and after.age == 0 and len(dht.calls) == 2


async def test_stale_refresh_is_not_retried_on_every_query() -> None:
    clock, p = FakeClock(), pkt()
    scripts = [found(p)]
    dht = FakeDht(lambda k: scripts.pop(0) if scripts else Script(responded=0))
    src = source(dht, clock)
    await src.get(KEY, "ip")
    clock.advance(400)
    for _ in range(5):
        assert (await src.get(KEY, "ip")).stale
        await asyncio.sleep(0.01)
    assert len(dht.calls) == 2  # one refresh; the next waits negative_ttl
    clock.advance(61)
    assert (await src.get(KEY, "ip")).stale
    await asyncio.sleep(0.01)
    assert len(dht.calls) == 3


async def test_too_old_packet_is_dropped_and_looked_up_cold() -> None:
    clock, p = FakeClock(), pkt()
    scripts = [found(p), Script(responded=0)]
    dht = FakeDht(lambda k: scripts.pop(0))
    src = source(dht, clock)
    await src.get(KEY, "ip")
    clock.advance(300 + 3600 + 1)
    assert (await src.get(KEY, "ip")).status is Status.UNAVAILABLE


async def test_nothing_found_is_not_found_and_negatively_cached() -> None:
    clock = FakeClock()
    dht = FakeDht(lambda k: Script(responded=8, absent=True))
    src = source(dht, clock)
    miss = await src.get(KEY, "ip")
    assert miss.status is Status.NOT_FOUND and miss.negative_ttl == 60
    clock.advance(30)
    again = await src.get(KEY, "ip")
    assert again.status is Status.NOT_FOUND and again.negative_ttl == 30
    assert len(dht.calls) == 1
    clock.advance(31)
    await src.get(KEY, "ip")
    assert len(dht.calls) == 2


async def test_no_dht_answer_is_unavailable_and_not_cached() -> None:
    dht = FakeDht(lambda k: Script(responded=0))
    src = source(dht, FakeClock())
    assert (await src.get(KEY, "ip")).status is Status.UNAVAILABLE
    assert (await src.get(KEY, "ip")).status is Status.UNAVAILABLE
    assert len(dht.calls) == 2


async def test_dht_deadline_is_unavailable_not_nxdomain() -> None:
    dht = FakeDht(lambda k: Script(responded=3, deadline_hit=True))
    src = source(dht, FakeClock())
    assert (await src.get(KEY, "ip")).status is Status.UNAVAILABLE


@pytest.mark.parametrize(("responded", "absent", "status"), [
    (8, True, Status.NOT_FOUND),       # the k closest answered without the item
    (1, True, Status.NOT_FOUND),       # a small network: every node it knew answered
    (20, False, Status.UNAVAILABLE),   # many answered, but a closer node stayed silent
    (0, False, Status.UNAVAILABLE),    # an empty routing table proves nothing
])
async def test_not_found_only_when_the_lookup_proved_absence(responded: int, absent: bool,
                                                             status: Status) -> None:
    dht = FakeDht(lambda k: Script(responded=responded, absent=absent))
    src = source(dht, FakeClock())
    assert (await src.get(KEY, "ip")).status is status


async def test_enough_responders_after_the_deadline_is_unavailable() -> None:
    dht = FakeDht(lambda k: Script(responded=20, queried=30, deadline_hit=True))
    assert (await source(dht, FakeClock()).get(KEY, "ip")).status is Status.UNAVAILABLE


async def test_hanging_lookup_answers_unavailable_at_the_deadline() -> None:
    dht = FakeDht(lambda k: Script(hang=True))
    src = source(dht, FakeClock(), lookup_timeout=0.2)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert (await src.get(KEY, "ip")).status is Status.UNAVAILABLE
    assert 0.15 < loop.time() - start < 0.35
    await src.close()
    assert dht.streams[0].cancelled


async def test_broken_dht_is_unavailable() -> None:
    class Broken:
        def get_mutable(self, public_key: bytes, seq_floor: int | None = None, *,
                        timeout: float = 5.0) -> object:
            raise OSError("socket closed")

        def reachable(self) -> bool:
            return True

    src = source_over(Broken(), CFG, FakeClock())
    assert (await src.get(KEY, "ip")).status is Status.UNAVAILABLE


async def test_newer_packet_within_the_window_wins() -> None:
    old, new = pkt(0, ip="10.0.0.1"), pkt(5, ip="10.0.0.2")
    dht = FakeDht(lambda k: Script(items=[(0.0, item_of(old)), (0.01, item_of(new))]))
    src = source(dht, FakeClock(), first_answer_window=0.1)
    assert (await src.get(KEY, "ip")).packet == new


async def test_answer_after_the_window_and_cache_updated_later() -> None:
    old, new = pkt(0, ip="10.0.0.1"), pkt(5, ip="10.0.0.2")
    dht = FakeDht(lambda k: Script(items=[(0.0, item_of(old)), (0.15, item_of(new))]))
    src = source(dht, FakeClock(), first_answer_window=0.02)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert (await src.get(KEY, "ip")).packet == old
    assert loop.time() - start < 0.12
    await asyncio.sleep(0.25)
    assert (await src.get(KEY, "ip")).packet == new


async def test_rollback_is_refused() -> None:
    clock, old, new = FakeClock(), pkt(0, ip="10.0.0.1"), pkt(5, ip="10.0.0.2")
    scripts = [found(new), found(old)]
    dht = FakeDht(lambda k: scripts.pop(0))
    src = source(dht, clock)
    assert (await src.get(KEY, "ip")).packet == new
    assert not src.insert(old)
    clock.advance(400)
    await src.get(KEY, "ip")  # stale: the refresh only finds the older packet
    await asyncio.sleep(0.1)
    assert [c.packet for c in src.cached()] == [new]


async def test_packets_from_the_far_future_are_rejected() -> None:
    future = pkt(2 * 3600)
    near = pkt(1800)
    dht = FakeDht(lambda k: Script(items=[(0.0, item_of(future))], absent=True))
    src = source(dht, FakeClock())
    assert (await src.get(KEY, "ip")).status is Status.NOT_FOUND
    dht2 = FakeDht(lambda k: found(near))
    assert (await source(dht2, FakeClock()).get(KEY, "ip")).packet == near


async def test_invalid_values_are_ignored() -> None:
    p = pkt()
    forged = MutableItem(p.public_key.raw, p.timestamp + 1, p.packet, bytes(64))
    wrong_key = item_of(pkt(kp=keypair(8)))
    dht = FakeDht(lambda k: Script(items=[(0.0, forged), (0.0, wrong_key)], absent=True))
    assert (await source(dht, FakeClock()).get(KEY, "ip")).status is Status.NOT_FOUND


async def test_relays_are_asked_in_parallel() -> None:
    p = pkt()

    async def relay_has(key: PublicKey) -> SignedPacket | None:
        return p if key == KEY else None

    async def relay_down(key: PublicKey) -> SignedPacket | None:
        raise ConnectionError("relay unreachable")

    dead_dht = FakeDht(lambda k: Script(responded=0))
    src = source_over(dead_dht, CFG, FakeClock(), [FnRelay(relay_down), FnRelay(relay_has)])
    assert (await src.get(KEY, "ip")).packet == p
    only_down = source_over(None, CFG, FakeClock(), [FnRelay(relay_down)])
    assert (await only_down.get(KEY, "ip")).status is Status.UNAVAILABLE


async def test_relay_404_with_the_dht_unavailable_is_unavailable() -> None:
    """A relay knows what was put through it (or what its own lookup found): no proof."""
    async def relay_404(key: PublicKey) -> SignedPacket | None:
        return None

    dead_dht = FakeDht(lambda k: Script(responded=0))
    src = source_over(dead_dht, CFG, FakeClock(), [FnRelay(relay_404)])
    assert (await src.get(KEY, "ip")).status is Status.UNAVAILABLE
    healthy = FakeDht(lambda k: Script(responded=8, absent=True))
    src = source_over(healthy, CFG, FakeClock(), [FnRelay(relay_404)])
    assert (await src.get(KEY, "ip")).status is Status.NOT_FOUND
    relay_only = source_over(None, CFG, FakeClock(), [FnRelay(relay_404)])
    assert (await relay_only.get(KEY, "ip")).status is Status.NOT_FOUND


async def test_a_round_that_heard_nobody_is_followed_by_another() -> None:
    """The first lookup ends early with every node silent (a lossy moment): the source asks
    again within its deadline instead of answering SERVFAIL; a proven absence ends it."""
    p = pkt()
    rounds = [Script(responded=0, queried=8, end_after=0.25), found(p)]
    dht = FakeDht(lambda k: rounds.pop(0) if rounds else Script(responded=0))
    src = source(dht, FakeClock(), lookup_timeout=1.0)
    assert (await src.get(KEY, "ip")).packet == p
    assert len(dht.calls) == 2
    absent = FakeDht(lambda k: Script(responded=8, absent=True))
    assert (await source(absent, FakeClock()).get(KEY, "ip")).status is Status.NOT_FOUND
    assert len(absent.calls) == 1


async def test_unreachable_dht_with_relays_answers_without_a_dht_deadline() -> None:
    """UDP blocked: the relays answer at once (the packet, or SERVFAIL when they have
    nothing -- never NXDOMAIN), no DHT lookup is started; once the DHT answers again it is
    asked again."""
    p, other = pkt(), keypair(8).public_key

    async def relay(key: PublicKey) -> SignedPacket | None:
        return p if key == KEY else None

    lookup_takes = [600.0]   # while down, a lookup (were one started) hears nobody for 10 min
    silent = FakeDht(lambda k: Script(responded=0, end_after=lookup_takes[0]))
    silent.up = False
    # A DHT deadline of ten minutes: answering within the one-minute bound below proves it was
    # not waited for, with a margin no loaded machine eats up (the answers take milliseconds).
    src = source_over(silent, dataclasses.replace(CFG, lookup_timeout=600.0), FakeClock(),
                      [FnRelay(relay)])
    async with asyncio.timeout(60):
        assert (await src.get(KEY, "ip")).packet == p
        assert (await src.get(other, "ip")).status is Status.UNAVAILABLE
    assert silent.calls == []
    silent.up, lookup_takes[0] = True, 0.0
    third = keypair(9).public_key
    assert (await src.get(third, "ip")).status is Status.UNAVAILABLE
    assert silent.calls == [third.raw]
    await src.close()


async def test_node_budget_queues_cold_lookups_instead_of_refusing() -> None:
    """One address (a router, 127.0.0.1) gets the node's whole burst; past it lookups wait
    for the next token and start, and cached answers are not limited."""
    clock = FakeClock()
    dht = FakeDht(lambda k: Script(responded=8, absent=True))
    src = source(dht, clock, dht_rate_limit=20.0, dht_rate_limit_burst=3.0)
    keys = [keypair(20 + i).public_key for i in range(4)]
    results = [asyncio.create_task(src.get(k, "10.0.0.9")) for k in keys]
    await asyncio.sleep(0.01)
    assert src.lookups_started == 3 and src.gate.budget.waiting == 1
    clock.advance(0.05)                           # one token later (20/s)
    done = await asyncio.wait_for(asyncio.gather(*results), 2)
    assert {r.status for r in done} == {Status.NOT_FOUND} and src.lookups_started == 4
    assert (await src.get(keys[0], "10.0.0.9")).status is Status.NOT_FOUND
    assert src.lookups_started == 4


async def test_a_strangers_share_of_the_waiting_room_is_bounded() -> None:
    dht = FakeDht(lambda k: Script(hang=True))
    src = source_over(dht, dataclasses.replace(CFG, max_concurrent_lookups=1, lookup_timeout=5.0,
                                               dht_queue_per_client=1),
                      FakeClock(), forwarders=("127.0.0.0/8",))
    keys = [keypair(50 + i).public_key for i in range(5)]
    running = asyncio.create_task(src.get(keys[0], "10.0.0.9"))
    waiting = asyncio.create_task(src.get(keys[1], "10.0.0.9"))
    await asyncio.sleep(0.01)
    assert (await src.get(keys[2], "10.0.0.9")).status is Status.RATE_LIMITED
    via_router = [asyncio.create_task(src.get(k, "127.0.0.1")) for k in keys[2:]]
    await asyncio.sleep(0.01)
    assert src.gate.budget.waiting == 4 and not any(t.done() for t in via_router)
    await src.close()
    for t in [running, waiting, *via_router]:
        assert (await asyncio.wait_for(t, 1)).status is Status.UNAVAILABLE


async def test_a_lookup_that_waits_too_long_is_overloaded() -> None:
    clock = FakeClock()
    dht = FakeDht(lambda k: Script(hang=True))
    src = source(dht, clock, max_concurrent_lookups=1, lookup_timeout=5.0)
    src.gate.budget.max_wait = 0.05
    first = asyncio.create_task(src.get(KEY, "ip"))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(src.get(keypair(30).public_key, "ip"))
    await asyncio.sleep(0.01)
    clock.advance(0.05)
    assert (await asyncio.wait_for(second, 1)).status is Status.OVERLOADED
    await src.close()
    assert (await asyncio.wait_for(first, 1)).status is Status.UNAVAILABLE


async def test_insert_hook_and_bounded_cache() -> None:
    clock = FakeClock()
    src = source(FakeDht(lambda k: Script()), clock, packet_cache_size=2)
    packets = [pkt(kp=keypair(40 + i)) for i in range(3)]
    for p in packets:
        assert src.insert(p, fetched_at=clock.monotonic() - 10)
    held = [c.packet for c in src.cached()]
    assert held == packets[1:]
    hit = await src.get(packets[2].public_key, "ip")
    assert hit.status is Status.FOUND and hit.age == 10


async def test_insert_refuses_packets_from_the_far_future() -> None:
    """The one-hour bound on future timestamps of DHT lookups, for relay PUTs, the state dir
    and republishing too."""
    clock = FakeClock()
    src = source(FakeDht(lambda k: Script(responded=0)), clock)
    assert not src.insert(pkt(3601))
    assert list(src.cached()) == []
    near = pkt(3599)
    assert src.insert(near)
    assert not src.insert(pkt(2 * 3600))          # nor does it replace a held packet
    assert [c.packet for c in src.cached()] == [near]
    clock.advance(7200)                           # time caught up: now it is acceptable
    later = pkt(7200 + 3599)
    assert src.insert(later)
