"""Absence proofs from the lookup itself (NXDOMAIN vs SERVFAIL), on the in-memory network.

A key is absent only when the k closest nodes the lookup learnt of all answered without a
value. Counters cannot say that: in the kernel lab at 50 % loss with a third of the nodes dead,
lookups that gave up on silent close nodes and heard enough farther ones "proved" keys absent
that were stored (NXDOMAIN for 47, then 18, of 100 stored keys).
"""

from __future__ import annotations

import random

from pkdns.answer.source import Status
from pkdns.config import PkarrConfig
from pkdns.dht import krpc
from pkdns.dht.getlookup import GetMutableLookup
from pkdns.dht.ids import distance, make_node_id, target_of
from pkdns.dht.item import sign_item
from pkdns.dht.krpc import Address, ErrorMessage, Query
from pkdns.pkarr.keys import PublicKey
from tests.answer.fakes import source_over
from tests.support.clock import FakeClock
from tests.support.dhtnet import FakeNet, Handler, NetDht, PureNode, Reply
from tests.support.pkarr_factory import keypair

OWN = make_node_id(random.Random(99))
SEED = bytes(range(32))
KEY = keypair(11).public_key


def _net(clock: FakeClock, n: int = 120) -> FakeNet:
    net = FakeNet(clock)
    net.add_many(n)
    net.connect_all()
    return net


def _seeds(net: FakeNet, count: int = 3) -> list[tuple[bytes | None, Address]]:
    return [(None, addr) for addr in list(net.honest)[:count]]


def _closest(net: FakeNet, target: bytes, n: int) -> list[PureNode]:
    return sorted(net.honest.values(), key=lambda p: distance(p.id, target))[:n]


def _silence(net: FakeNet, nodes: list[PureNode]) -> None:
    for p in nodes:
        net.handlers[p.addr] = lambda q, src, now: None


def _get(net: FakeNet, clock: FakeClock, key: bytes, **kw: int) -> GetMutableLookup:
    lookup = GetMutableLookup(key, _seeds(net), clock.monotonic(), own_id=OWN, **kw)
    net.run(lookup, OWN)
    return lookup


def test_a_converged_lookup_without_a_value_proves_absence(fake_clock: FakeClock) -> None:
    get = _get(_net(fake_clock), fake_clock, SEED)
    assert get.best is None and get.proves_absence() and get.outcome.absent


def test_silent_closest_nodes_prove_nothing(fake_clock: FakeClock) -> None:
    """Five of the closest nodes stay silent; farther ones answer. The lookup ends once the
    five are past their give-up time, with 8+ answers and no timeout counted yet: the old
    counter rule called that absent, and the item may sit exactly there."""
    net = _net(fake_clock)
    _silence(net, _closest(net, target_of(SEED), 5))
    get = _get(net, fake_clock, SEED)
    assert get.outcome.responded >= 8 and get.outcome.timed_out * 2 <= get.outcome.responded
    assert not get.proves_absence() and not get.outcome.absent


def test_one_silent_node_among_the_closest_it_knows_proves_nothing(
        fake_clock: FakeClock) -> None:
    """The 20 closest nodes a lookup learns of need not be the 20 closest that exist (each
    node lists 8 contacts from its buckets); the proof is about the ones it learnt of."""
    net = _net(fake_clock)
    seen = [c.addr for c in _get(net, fake_clock, SEED).closest_responded(20)]
    net.handlers[seen[-1]] = lambda q, src, now: None
    assert not _get(net, fake_clock, SEED).outcome.absent


def test_silent_nodes_far_from_the_target_do_not_matter(fake_clock: FakeClock) -> None:
    """Dead contacts the lookup started from (far from the target) time out; the closest
    nodes all answer: absent."""
    net = _net(fake_clock, 300)
    far = _closest(net, target_of(SEED), 300)[-4:]
    _silence(net, far)
    seeds = [(p.id, p.addr) for p in far] + _seeds(net)
    get = GetMutableLookup(SEED, seeds, fake_clock.monotonic(), own_id=OWN)
    net.run(get, OWN)
    assert get.outcome.queried - get.outcome.responded >= 3 and get.outcome.absent


def test_nodes_answering_errors_are_left_out_not_counted(fake_clock: FakeClock) -> None:
    """A node without BEP 44 (error 204) cannot hold the item: the proof looks past it."""
    net = _net(fake_clock)

    def no_bep44(p: PureNode) -> Handler:
        def handle(q: Query, src: Address, now: float) -> Reply:
            return p.addr, krpc.encode(ErrorMessage(q.tid, 204, "Method Unknown"))
        return handle

    for p in _closest(net, target_of(SEED), 3):
        net.handlers[p.addr] = no_bep44(p)
    get = _get(net, fake_clock, SEED)
    assert get.outcome.krpc_errors == 3 and get.outcome.absent


def test_a_node_holding_an_item_at_the_floor_is_no_absence(fake_clock: FakeClock) -> None:
    """BEP 44: asked with a seq floor, a holder answers seq alone; the key exists."""
    net = _net(fake_clock)
    item = sign_item(SEED, 7, b"x")
    net.put(item, _seeds(net), OWN)
    get = _get(net, fake_clock, item.k, seq_floor=7)
    assert get.best is None and not get.outcome.absent


def _lossy(net: FakeNet, rng: random.Random, keep: float, dead: float) -> None:
    """Each query/answer pair survives with ``keep``; a ``dead`` share never answers."""
    for addr, handler in list(net.handlers.items()):
        if rng.random() < dead:
            net.handlers[addr] = lambda q, src, now: None
            continue

        def lossy(q: Query, src: Address, now: float, h: Handler = handler) -> Reply:
            return h(q, src, now) if rng.random() < keep else None
        net.handlers[addr] = lossy


def test_at_50_percent_loss_a_stored_key_is_never_proven_absent(fake_clock: FakeClock) -> None:
    """The kernel lab's warm phase in miniature: half the datagrams lost each way (a pair
    survives one time in four), a third of the nodes dead. A lookup may miss the item, but
    it must then prove nothing."""
    net = _net(fake_clock, 150)
    items = [sign_item(bytes([i]) * 32, 1, b"v%d" % i) for i in range(30)]
    for item in items:
        assert net.put(item, _seeds(net), OWN).stored == 20
    _lossy(net, random.Random(3), keep=0.25, dead=1 / 3)
    missed = proven = 0
    for item in items:
        get = _get(net, fake_clock, item.k)
        missed += get.best is None
        proven += get.best is None and get.outcome.absent
    assert missed > 0 and proven == 0, (missed, proven)


# -- through the packet source: NXDOMAIN (NOT_FOUND) vs SERVFAIL (UNAVAILABLE) ---------------
class _NetDht(NetDht):
    def seeds(self) -> list[tuple[bytes | None, Address]]:
        return _seeds(self.net)


async def _status(net: FakeNet, key: PublicKey) -> Status:
    cfg = PkarrConfig(lookup_timeout=1.0, dht_rate_limit=0)
    source = source_over(_NetDht(net, OWN), cfg, net.clock)
    return (await source.get(key, "ip")).status


async def test_closest_nodes_timed_out_is_servfail_never_nxdomain(
        fake_clock: FakeClock) -> None:
    net = _net(fake_clock)
    _silence(net, _closest(net, target_of(KEY.raw), 4))
    assert await _status(net, KEY) is Status.UNAVAILABLE


async def test_every_close_node_answered_without_it_is_nxdomain(fake_clock: FakeClock) -> None:
    assert await _status(_net(fake_clock), KEY) is Status.NOT_FOUND
