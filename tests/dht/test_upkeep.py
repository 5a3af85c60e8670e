"""Routing-table upkeep: pure decisions, the node's rounds on the fake network (fake clock, no
sleeps), per-destination pacing, and the background task on real loopback sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable
from typing import cast

from pkdns.dht import ids
from pkdns.dht.item import MutableItem, sign_item
from pkdns.dht.krpc import Address, ErrorMessage, Query, Response
from pkdns.dht.node import DhtNode
from pkdns.dht.outbound import Skipped
from pkdns.dht.pacing import SendPacer
from pkdns.dht.routing import (
    MAX_FAILS,
    REFRESH_AFTER,
    STALE_AFTER,
    RoutingTable,
    random_id_in_bucket,
)
from pkdns.dht.testnet import Testnet
from pkdns.dht.transport import KrpcProtocol, Reply
from pkdns.dht.upkeep import Upkeep
from tests.support.clock import FakeClock
from tests.support.dhtnet import FakeNet

NID = bytes(20)


def _id(i: int) -> bytes:
    return i.to_bytes(20, "big")


# -- pure parts -------------------------------------------------------------------------------
def test_random_id_lands_in_the_bucket() -> None:
    rng = random.Random(1)
    own = rng.getrandbits(160).to_bytes(20, "big")
    for index in (0, 1, 7, 80, 158, 159):
        for _ in range(20):
            assert ids.bucket_index(own, random_id_in_bucket(own, index, rng)) == index


def test_questionable_and_stale_buckets() -> None:
    t = RoutingTable(_id(0), now=0.0)
    assert t.depth() == -1 and t.stale_buckets(10_000.0) == []
    t.add(_id(1 << 159), "10.0.1.1", 1, 0.0)           # bucket 0
    t.add(_id(1 << 157), "10.0.2.1", 1, 600.0)         # bucket 2
    assert t.depth() == 3
    assert t.questionable(STALE_AFTER + 1) == [t.closest(_id(1 << 159), 1)[0]]
    due = t.stale_buckets(REFRESH_AFTER + 1)
    assert set(due) == {0, 1, 3}                       # bucket 2 changed at 600
    t.refreshed(0, REFRESH_AFTER + 1)
    assert 0 not in t.stale_buckets(REFRESH_AFTER + 2)
    t.add(_id(1 << 157), "10.0.2.1", 1, 5000.0)        # heard again: bucket 2 changed
    assert 2 not in t.stale_buckets(5000.0 + REFRESH_AFTER - 1)


def test_bootstrap_backoff_1s_to_60s_and_reset() -> None:
    table = RoutingTable(NID)
    up = Upkeep(0.0, random.Random(2), min_nodes=2)
    now, delays = 0.0, []
    for _ in range(9):
        plan = up.due(table, now)
        assert plan.bootstrap
        delays.append(up.bootstrapped(0, now))
        assert not up.due(table, now + delays[-1] - 0.01).bootstrap
        assert up.next_wakeup(table, now) == now + delays[-1]
        now += delays[-1]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    table.add(_id(1 << 150), "10.0.0.1", 1, now)
    table.add(_id(1 << 140), "10.0.1.1", 1, now)
    assert not up.due(table, now).bootstrap and up.delay == 1.0
    assert up.next_wakeup(table, now) == now + up.interval


def test_send_pacer_sliding_window() -> None:
    p = SendPacer(limit=3, window=10.0)
    assert [p.allow("10.0.0.1", t) for t in (0, 1, 2, 3)] == [True, True, True, False]
    assert p.allow("10.0.0.2", 3)                      # per destination
    assert not p.allow("10.0.0.1", 9.9)
    assert p.allow("10.0.0.1", 10.0)                   # the send at 0 left the window
    assert SendPacer(limit=0).allow("x", 0)


# -- the node on the fake network -------------------------------------------------------------
class FakeProtocol:
    """Stands in for KrpcProtocol: every request goes through FakeNet (silence: None at once)."""

    def __init__(self, net: FakeNet) -> None:
        self.net = net
        self.sent: list[tuple[Address, Query]] = []
        self._tid = 0

    async def request(self, addr: Address, query: Query, timeout: float,
                      resend: object = (), may_resend: object = None,
                      on_copy: Callable[[bytes], None] | None = None) -> Reply | None:
        self._tid += 1
        q = dataclasses.replace(query, tid=self._tid.to_bytes(2, "big"))
        self.sent.append((addr, q))
        if on_copy is not None:
            on_copy(q.tid)
        reply = self.net.exchange(addr, q)
        return reply if isinstance(reply, Response | ErrorMessage) else None

    def send(self, msg: object, addr: Address) -> None:
        raise AssertionError("a read-only node sends no replies")

    def close(self) -> None:
        return None


async def _literal(host: str, port: int) -> list[Address]:
    return [(host, port)]


def _node(net: FakeNet, clock: FakeClock, **kw: int) -> tuple[DhtNode, FakeProtocol]:
    # join_resend=0: the fake network's silence is instant, so one hello per round
    # (resends are timed on the event loop; tests/dht/test_join.py covers them)
    node = DhtNode(clock=clock, resolve_host=_literal, rng=random.Random(5), join_resend=0,
                   **kw)
    proto = FakeProtocol(net)
    node._protocol = cast(KrpcProtocol, proto)
    return node, proto


async def test_rebootstrap_with_backoff_until_the_network_appears(fake_clock: FakeClock) -> None:
    net = FakeNet(fake_clock)
    node, proto = _node(net, fake_clock)
    boot = [("10.0.0.1", 6881)]
    waits = []
    for _ in range(4):                                  # nobody there yet
        next_at = await node.maintain(boot)
        waits.append(next_at - fake_clock.monotonic())
        fake_clock.advance(waits[-1])
    assert waits == [1.0, 2.0, 4.0, 8.0] and not node.joined.is_set()
    assert len(proto.sent) == 4                         # one find_node per round, no more
    net.add_many(40)
    net.connect_all()
    next_at = await node.maintain(boot)
    assert node.joined.is_set() and len(node.table) >= 8
    assert next_at == fake_clock.monotonic() + node.upkeep.interval
    assert node.upkeep.delay == 1.0


async def _joined(net: FakeNet, clock: FakeClock, n: int = 60) -> tuple[DhtNode, FakeProtocol]:
    net.add_many(n)
    net.connect_all()
    node, proto = _node(net, clock)
    await node.maintain([("10.0.0.1", 6881)])
    assert len(node.table) >= 8
    return node, proto


async def test_questionable_nodes_are_pinged_and_silent_ones_turn_bad(
        fake_clock: FakeClock) -> None:
    """Silent entries become bad (no seeds while good ones are left, replaced by any
    newcomer for their bucket) and go after DROP_AFTER timeouts; live ones stay."""
    net = FakeNet(fake_clock)
    node, proto = await _joined(net, fake_clock)
    entries = node.table.entries()
    silent = {e.addr for e in entries[: len(entries) // 2]}
    for addr in silent:
        net.handlers.pop(addr)
    fake_clock.advance(STALE_AFTER + 1)
    for _ in range(6):                                  # a few one-minute rounds
        proto.sent.clear()
        fake_clock.advance(await node.maintain([]) - fake_clock.monotonic())
    good = [e for e in node.table.entries() if e.fails < MAX_FAILS]
    assert not {e.addr for e in good} & silent and len(good) >= 8
    assert node.routing_table_size() == len(good)
    assert not {e.addr for e in node.table.closest(node.id, len(good))} & silent
    remaining = good
    # BEP 5: a questionable node is pinged, never replaced unasked, so every contact that
    # still answers is still there, and every contact left answered recently
    live = {e.addr for e in entries} - silent
    assert live <= {e.addr for e in remaining}
    assert all(fake_clock.monotonic() - e.last_seen < STALE_AFTER for e in remaining)


async def test_full_bucket_pings_questionable_keeps_live_and_replaces_dead(
        fake_clock: FakeClock) -> None:
    """BEP 5 on the wire: a newcomer for a full bucket has its questionable entries pinged,
    least recently seen first; the one that answers stays, the silent one (pinged twice)
    gives its place to the newcomer."""
    net = FakeNet(fake_clock)
    node, proto = _node(net, fake_clock)
    node.table = RoutingTable(node.id, k=2, now=fake_clock.monotonic())

    def far(i: int) -> bytes:                           # bucket 0 from our id
        return bytes([node.id[0] ^ 0x80]) + i.to_bytes(19, "big")

    live = net.add_honest(("10.0.1.1", 6881), far(1))
    dead = net.add_honest(("10.0.2.1", 6881), far(2))
    newcomer = net.add_honest(("10.0.3.1", 6881), far(3))
    assert await node.ping(live.addr)
    fake_clock.advance(1.0)
    assert await node.ping(dead.addr)
    net.handlers.pop(dead.addr)
    fake_clock.advance(STALE_AFTER + 1)
    proto.sent.clear()
    assert await node.ping(newcomer.addr)               # its answer finds the bucket full
    assert {e.addr for e in node.table.entries()} == {live.addr, dead.addr}
    await asyncio.gather(*node._checks)
    assert [a for a, q in proto.sent if q.method == "ping"] == [
        newcomer.addr, live.addr, dead.addr, dead.addr]
    assert {e.addr for e in node.table.entries()} == {live.addr, newcomer.addr}
    assert all(e.last_seen == fake_clock.monotonic() for e in node.table.entries())


async def test_stale_buckets_are_refreshed_with_find_node_in_range(
        fake_clock: FakeClock) -> None:
    net = FakeNet(fake_clock)
    node, proto = await _joined(net, fake_clock)
    fake_clock.advance(REFRESH_AFTER + 1)
    due = node.table.stale_buckets(fake_clock.monotonic(), limit=160)
    assert due
    proto.sent.clear()
    for _ in range(len(due)):
        fake_clock.advance(await node.maintain([]) - fake_clock.monotonic())
    refreshed = {ids.bucket_index(node.id, q.target) for _, q in proto.sent
                 if q.method == "find_node" and q.target is not None}
    # a bucket is refreshed unless a ping answer from one of its nodes changed it first
    assert refreshed and refreshed <= set(due)
    assert all(q.read_only for _, q in proto.sent)
    assert set(due).isdisjoint(node.table.stale_buckets(fake_clock.monotonic(), limit=160))


async def test_pacing_skips_without_blaming_the_node(fake_clock: FakeClock) -> None:
    net = FakeNet(fake_clock)
    peer = net.add_honest(("10.9.9.1", 6881))
    node, proto = _node(net, fake_clock, pace_limit=5)
    results = [await node.ping(peer.addr) for _ in range(8)]
    assert results == [True] * 5 + [False] * 3
    assert len(proto.sent) == 5 and node.paced == 3
    (entry,) = node.table.entries()
    assert entry.fails == 0
    fake_clock.advance(10.0)
    assert await node.ping(peer.addr)


async def test_default_pacing_keeps_a_busy_destination_under_50_per_10s(
        fake_clock: FakeClock) -> None:
    net = FakeNet(fake_clock)
    net.add_many(30)
    net.connect_all()
    node, proto = _node(net, fake_clock)
    await node.bootstrap([("10.0.0.1", 6881)])
    for i in range(60):                                 # many lookups within one second
        await node.get_mutable(bytes([i]) * 32).collect()
    per_dst: dict[Address, int] = {}
    for addr, _ in proto.sent:
        per_dst[addr] = per_dst.get(addr, 0) + 1
    assert max(per_dst.values()) < 50 and node.paced > 0


# -- real sockets (the shared ``testnet`` fixture, tests/conftest.py) ---------------------------
async def test_upkeep_task_joins_once_the_bootstrap_answers(testnet: Testnet) -> None:
    """Real loop and sockets: the first rounds find nothing (name does not resolve yet),
    the retry 1 s later joins the testnet; ping works both ways."""
    ready = asyncio.Event()
    calls: list[float] = []

    async def resolve(host: str, port: int) -> list[Address]:
        calls.append(asyncio.get_running_loop().time())
        if not ready.is_set():
            ready.set()
            raise OSError("not yet")
        return testnet.bootstrap

    node = DhtNode(request_timeout=0.5, resolve_host=resolve)
    await node.start("127.0.0.1", 0)
    try:
        node.start_upkeep([("boot.invalid", 1)])
        await asyncio.wait_for(node.joined.wait(), 5)
        assert len(calls) == 2 and 0.9 < calls[1] - calls[0] < 2.0
        assert await node.ping(testnet.nodes[0].address)
        assert not await node.ping(("127.0.0.1", 9))
    finally:
        await node.close()
    assert node._upkeep_task is not None and node._upkeep_task.done()


async def _published(clock: FakeClock) -> tuple[FakeNet, DhtNode, FakeProtocol, MutableItem]:
    """A read-only node joined to 30 fake nodes that has put one item on them."""
    net = FakeNet(clock)
    net.add_many(30)
    net.connect_all()
    node, proto = _node(net, clock)
    await node.bootstrap([("10.0.0.1", 6881)])
    item = sign_item(bytes(range(32)), 1_700_000_000_000_000, b"packet")
    assert (await node.put_mutable(item)).stored >= 8
    return net, node, proto, item


async def test_read_only_put_carries_ro_and_no_server_adds_us(fake_clock: FakeClock) -> None:
    """The read-only decision documented in node.py: put is sent with ro=1 like every other
    query, and BEP 43 servers (ours) never put a read-only publisher in their tables."""
    net, node, proto, item = await _published(fake_clock)
    assert {q.method for _, q in proto.sent} >= {"find_node", "get", "put"}
    assert all(q.read_only for _, q in proto.sent)
    assert not any(e.id == node.id for n in net.honest.values() for e in n.table.entries())


def test_resends_may_use_three_quarters_of_a_destinations_budget(fake_clock: FakeClock) -> None:
    """First sends get the whole budget (40 per 10 s); resends stop at 30, so a busy node's
    last sends find new nodes. Before, resends stopped at 10: at 50 % loss most copies to
    close nodes were never sent."""
    node = DhtNode(clock=fake_clock, pace_limit=40)
    addr = ("192.0.2.7", 6881)
    for _ in range(25):
        assert node._asker.pace(addr)
    resends = sum(1 for _ in range(40) if node._asker.may_resend(addr))
    assert resends == 5                                    # up to 30 in the window
    assert sum(1 for _ in range(40) if node._asker.pace(addr)) == 10   # first sends: to 40


def test_a_lookup_that_has_its_answer_gets_a_quarter_of_each_budget(
        fake_clock: FakeClock) -> None:
    """A lookup going on after its answer (for a newer packet) may send while a node has had
    fewer than 10 of its 40, resend while fewer than 7; the other 30 stay for lookups still
    without an answer. Before, continuations spent every node's budget in a small swarm and
    the next keys' lookups were all skipped (kernel lab, 100 keys at 50 % loss: 53 answered)."""
    node = DhtNode(clock=fake_clock, pace_limit=40)
    addr = ("192.0.2.7", 6881)
    assert sum(1 for _ in range(40) if node._asker.may_send(addr, answered=True)) == 10
    assert not node._asker.may_resend(addr, answered=True)
    assert sum(1 for _ in range(40) if node._asker.may_send(addr)) == 30
    other = ("192.0.2.8", 6881)
    for _ in range(6):
        assert node._asker.may_send(other, answered=True)
    assert node._asker.may_resend(other, answered=True)          # the 7th
    assert not node._asker.may_resend(other, answered=True)
    assert DhtNode(clock=fake_clock, pace_limit=0)._asker.may_send(addr, answered=True)


async def test_a_get_tells_the_asker_once_it_has_its_answer(fake_clock: FakeClock) -> None:
    """The driver asks ``lookup.answered`` at every send: false until a verified item went
    out, true after (so the rest of the walk runs at the lower priority)."""
    _, node, _, item = await _published(fake_clock)
    seen: list[bool] = []
    real = node._asker.try_ask

    async def spy(addr: Address, query: Query, answered: Callable[[], bool]
                  ) -> Reply | Skipped | None:
        seen.append(answered())
        return await real(addr, query, answered)

    node._asker.try_ask = spy  # type: ignore[method-assign]
    assert [i async for i in node.get_mutable(item.k)] == [item]
    first = seen.index(True)
    assert first >= 1 and all(seen[first:]) and not any(seen[:first])
