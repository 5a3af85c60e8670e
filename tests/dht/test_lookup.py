"""Iterative lookups on the in-memory network: convergence, streaming, put, timeouts."""

from __future__ import annotations

import random
from collections.abc import Callable

from pkdns.dht import krpc
from pkdns.dht.getlookup import GetMutableLookup
from pkdns.dht.ids import distance, make_node_id
from pkdns.dht.item import sign_item
from pkdns.dht.krpc import Address, ErrorMessage, Query
from pkdns.dht.lookup import IterativeLookup
from tests.support.clock import FakeClock
from tests.support.dhtnet import FakeNet, Reply

OWN = make_node_id(random.Random(99))
SEED = bytes(range(32))


def _net(clock: FakeClock, n: int = 200) -> FakeNet:
    net = FakeNet(clock)
    net.add_many(n)
    net.connect_all()
    return net


def _seeds(net: FakeNet, count: int = 3) -> list[tuple[bytes | None, Address]]:
    return [(None, addr) for addr in list(net.honest)[:count]]


def test_find_node_converges_on_the_true_closest(fake_clock: FakeClock) -> None:
    net = _net(fake_clock)
    target = make_node_id(random.Random(5))
    lookup = IterativeLookup(target, _seeds(net), fake_clock.monotonic(), own_id=OWN, k=8)
    net.run(lookup, OWN)
    truth = sorted(net.honest.values(), key=lambda n: distance(n.id, target))[:8]
    assert [c.id for c in lookup.closest_responded(8)] == [n.id for n in truth]
    assert lookup.outcome.queried <= 60 and lookup.outcome.timed_out == 0


def test_put_then_get_streams_the_item(fake_clock: FakeClock) -> None:
    net = _net(fake_clock)
    item = sign_item(SEED, 1_700_000_000_000_000, b"\x00" * 100)
    result = net.put(item, _seeds(net), OWN)
    assert result.stored == 20 and result.error is None
    holders = [n for n in net.honest.values() if n.store.get(item.target)]
    truth = sorted(net.honest.values(), key=lambda n: distance(n.id, item.target))[:8]
    assert len(holders) == 20 and {n.addr for n in truth} <= {n.addr for n in holders}

    get = GetMutableLookup(item.k, _seeds(net, 1), fake_clock.monotonic(), own_id=OWN)
    assert net.run(get, OWN) == [item]
    assert get.outcome.values >= 8 and get.outcome.invalid_values == 0


def test_newer_items_stream_in_order_and_floor_applies(fake_clock: FakeClock) -> None:
    net = _net(fake_clock, 60)
    old, new = sign_item(SEED, 10, b"old"), sign_item(SEED, 20, b"new")
    nodes = list(net.honest.values())
    for n in nodes[::2]:
        n.store.put(old.k, old.seq, old.v, old.sig)
    for n in nodes[1::7]:
        n.store.put(new.k, new.seq, new.v, new.sig)
    get = GetMutableLookup(old.k, _seeds(net), fake_clock.monotonic(), own_id=OWN)
    got = net.run(get, OWN)
    assert got[-1] == new and all(a.seq < b.seq for a, b in zip(got, got[1:], strict=False))
    floor = GetMutableLookup(old.k, _seeds(net), fake_clock.monotonic(), own_id=OWN, seq_floor=20)
    assert net.run(floor, OWN) == []
    assert floor.outcome.responded >= 8  # "found nothing after enough nodes answered"


def test_silent_nodes_time_out_without_stalling(fake_clock: FakeClock) -> None:
    net = _net(fake_clock, 100)
    item = sign_item(SEED, 1, b"x")
    assert net.put(item, _seeds(net), OWN).stored == 20
    silent = sorted(net.honest.values(), key=lambda n: distance(n.id, item.target))[:6]
    for n in silent:
        net.handlers[n.addr] = lambda q, src, now: None
    start = fake_clock.monotonic()
    get = GetMutableLookup(item.k, _seeds(net), start, own_id=OWN)
    assert net.run(get, OWN) == [item]
    assert get.outcome.queried == 20 and get.outcome.responded == 14
    # The silent six stop holding the closest-20 window at their give-up time (answers here
    # take no time, so the 0.5 s floor), not at the 2 s request timeout, nor one after another.
    assert fake_clock.monotonic() - start <= 1.0


def test_all_silent_is_a_timeout_not_a_not_found(fake_clock: FakeClock) -> None:
    net = FakeNet(fake_clock)
    for i in range(5):
        net.handlers[(f"10.9.{i}.1", 1)] = lambda q, src, now: None
    get = GetMutableLookup(SEED, [(None, a) for a in net.handlers], fake_clock.monotonic(),
                           own_id=OWN)
    assert net.run(get, OWN) == []
    assert get.outcome.responded == 0 and get.outcome.timed_out == 5


def test_deadline_bounds_a_lookup(fake_clock: FakeClock) -> None:
    net = _net(fake_clock, 50)
    for addr in list(net.honest)[10:]:
        net.handlers[addr] = lambda q, src, now: None
    get = GetMutableLookup(SEED, _seeds(net), fake_clock.monotonic(), own_id=OWN, timeout=1.0)
    start = fake_clock.monotonic()
    net.run(get, OWN)
    assert fake_clock.monotonic() - start <= 1.01 and get.outcome.deadline_hit


def test_put_reports_most_common_error(fake_clock: FakeClock) -> None:
    net = _net(fake_clock, 40)
    newer = sign_item(SEED, 50, b"newer")
    for n in net.honest.values():
        n.store.put(newer.k, newer.seq, newer.v, newer.sig)
    stale = sign_item(SEED, 10, b"stale")
    result = net.put(stale, _seeds(net), OWN)
    assert result.stored == 0
    assert result.error == (302, "Sequence number less than current.")


def test_identical_republish_refused_with_302_counts_as_stored(fake_clock: FakeClock) -> None:
    """bittorrent-dht answers 302 to an equal-seq put even with the same value."""
    net = _net(fake_clock, 40)
    item = sign_item(SEED, 7, b"same")
    for n in net.honest.values():
        n.store.put(item.k, item.seq, item.v, item.sig)
        net.handlers[n.addr] = _refuse_puts(n.addr, n.handle)
    result = net.put(item, _seeds(net), OWN)
    assert result.stored == result.asked >= 8 and result.error is None
    other = sign_item(SEED, 8, b"newer one")
    assert net.put(other, _seeds(net), OWN).error == (302, "old")


def _refuse_puts(addr: Address, inner: Callable[[Query, Address, float], Reply]
                 ) -> Callable[[Query, Address, float], Reply]:
    def handler(q: Query, src: Address, now: float) -> Reply:
        if q.method == "put":
            return addr, krpc.encode(ErrorMessage(q.tid, 302, "old"))
        return inner(q, src, now)
    return handler


def test_settled_once_a_quorum_agrees_and_nobody_holds_older(fake_clock: FakeClock) -> None:
    """A one-shot client stops when QUORUM nodes gave the newest packet and nobody an older
    one; until then (or with an older one about) it goes on."""
    net = _net(fake_clock, 80)
    old, new = sign_item(SEED, 10, b"old"), sign_item(SEED, 20, b"new")
    holders = sorted(net.honest.values(), key=lambda n: distance(n.id, new.target))[:20]
    for n in holders:
        n.store.put(new.k, new.seq, new.v, new.sig)
    get = GetMutableLookup(new.k, _seeds(net), fake_clock.monotonic(), own_id=OWN)
    assert not get.settled()
    assert net.run(get, OWN) == [new]
    assert get.settled()
    # three agree: not yet
    three = GetMutableLookup(new.k, [], fake_clock.monotonic(), own_id=OWN)
    for n in holders[:3]:
        three.add_seeds([(n.id, n.addr)])
    now = fake_clock.monotonic()
    for c in three.next_requests(now):
        reply = net.exchange(c.addr, Query(tid=b"t", method="get", id=OWN, target=new.target))
        assert isinstance(reply, krpc.Response)
        three.on_response(c.addr, reply, now)
    assert three.best == new and not three.settled()
    # a node that still holds the older packet: not settled whoever agrees
    net2 = _net(fake_clock, 80)
    closest = sorted(net2.honest.values(), key=lambda n: distance(n.id, new.target))[:20]
    closest[0].store.put(old.k, old.seq, old.v, old.sig)
    for n in closest[1:]:
        n.store.put(new.k, new.seq, new.v, new.sig)
    mixed = GetMutableLookup(new.k, _seeds(net2), fake_clock.monotonic(), own_id=OWN)
    assert net2.run(mixed, OWN)[-1] == new and not mixed.settled()


def test_a_query_pacing_kept_back_is_no_loss(fake_clock: FakeClock) -> None:
    """Counted as a loss, a skipped query lowered the answer rate and widened every lookup
    (more queries to the same few nodes, more of them skipped: kernel lab, 50 % loss, more
    queries paced than sent)."""
    net = _net(fake_clock, 40)
    seeds = [(n.id, n.addr) for n in list(net.honest.values())[:30]]
    now = fake_clock.monotonic()
    skipped = IterativeLookup(SEED[:20], seeds, now, own_id=OWN)
    lost = IterativeLookup(SEED[:20], seeds, now, own_id=OWN)
    first = skipped.next_requests(now)
    for c in first:
        skipped.on_skipped(c.addr, now)
    for c in lost.next_requests(now):
        lost.on_timeout(c.addr, now)
    assert skipped.outcome.skipped == len(first) and skipped.outcome.timed_out == 0
    assert skipped.rtt.answer_rate > lost.rtt.answer_rate
    assert len(skipped.next_requests(now)) == len(first) < len(lost.next_requests(now))
    assert not skipped.proves_absence()  # nodes never asked answered nothing
