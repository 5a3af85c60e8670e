"""A Sybil cluster of 16 nearest a key, fast, holding the key's packet from an hour earlier:
the newest packet still wins -- in one lookup, over a one-shot resolve's rounds and in the
daemon's packet source. On the in-memory network (fake clock, no sockets).

Traced in the kernel lab (issue 12, 30 % loss): the cold ``pkdns resolve`` lookups that
printed the older packet (3 of 100) had joined through a bootstrap host that named only the
cluster (the closest contacts it had), heard all its members within 10 ms, lost their one
other contact and ended at its give-up time, half a second in. The lookup then released the
cluster's packet, and with a packet in hand the command asked no more.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import pytest

from pkdns.answer.source import Status
from pkdns.config import PkarrConfig
from pkdns.dht import krpc
from pkdns.dht.getlookup import GetMutableLookup
from pkdns.dht.ids import distance, make_node_id
from pkdns.dht.item import MutableItem
from pkdns.dht.krpc import Address, NodeInfo, Query, Response
from pkdns.pkarr.client import PkarrClient, to_item
from tests.answer.fakes import source_over
from tests.support.clock import FakeClock
from tests.support.dhtnet import FakeNet, NetDht, PureNode, Reply, plant_cluster
from tests.support.pkarr_factory import TS, keypair, packet

OWN = make_node_id(random.Random(98))
KP = keypair(21)
NEW = packet(KP, ["@ 300 IN TXT new"], TS)
OLD = packet(KP, ["@ 300 IN TXT old"], TS - 3600 * 1_000_000)
NEW_ITEM, OLD_ITEM = to_item(NEW), to_item(OLD)
Seeds = list[tuple[bytes | None, Address]]


@dataclasses.dataclass
class Lab:
    """120 honest nodes, the 8 closest to the key holding NEW; 16 Sybils nearer than any,
    holding OLD, which every honest table lists (so honest replies name them too)."""

    net: FakeNet
    cluster: list[NodeInfo]
    honest: list[PureNode]  # closest to the key first

    @property
    def holders(self) -> list[PureNode]:
        return self.honest[:8]

    def silence(self, nodes: list[PureNode]) -> None:
        for p in nodes:
            self.net.handlers[p.addr] = lambda q, src, now: None

    def host_names_only_the_cluster(self) -> None:
        """The bootstrap host answers every query with the cluster's first 8 (the closest
        contacts it has), as a bittorrent-dht host with the Sybils in its table did."""
        host = self.honest[-1]
        nodes = tuple(self.cluster[:8])

        def answer(q: Query, src: Address, now: float) -> Reply:
            return host.addr, krpc.encode(Response(q.tid, host.id, nodes=nodes, token=b"t"))
        self.net.handlers[host.addr] = answer

    def joined_next_to_the_cluster(self) -> Seeds:
        """What a one-shot command's first lookup starts from: the 8 closest contacts a
        bootstrap host listed (all Sybils) and the host itself, far from the key."""
        host = self.honest[-1]
        return [(m.id, m.addr) for m in self.cluster[:8]] + [(host.id, host.addr)]

    def table(self) -> Seeds:
        """A table that learnt more: the cluster and nodes from all over the id space."""
        return ([(m.id, m.addr) for m in self.cluster]
                + [(p.id, p.addr) for p in self.honest[40::20]])


def _lab(clock: FakeClock, holders: int = 8) -> Lab:
    net = FakeNet(clock)
    net.add_many(120)
    net.connect_all()
    cluster = plant_cluster(net, NEW_ITEM.target, OLD_ITEM, n=16)
    honest = sorted(net.honest.values(), key=lambda p: distance(p.id, NEW_ITEM.target))
    for node in honest[:holders]:
        node.store.put(NEW_ITEM.k, NEW_ITEM.seq, NEW_ITEM.v, NEW_ITEM.sig)
    return Lab(net, cluster, honest)


@pytest.fixture
def lab(fake_clock: FakeClock) -> Lab:
    return _lab(fake_clock)


def _get(lab: Lab, seeds: Seeds, timeout: float = 5.0) -> tuple[GetMutableLookup,
                                                                list[MutableItem]]:
    lookup = GetMutableLookup(NEW_ITEM.k, seeds, lab.net.clock.monotonic(), own_id=OWN,
                              timeout=timeout)
    return lookup, lab.net.run(lookup, OWN)


# -- one lookup ------------------------------------------------------------------------------
def test_a_lookup_that_lost_its_one_contact_beyond_the_cluster_keeps_its_packet(
        lab: Lab) -> None:
    """The lab's trace: the host that listed the cluster stays silent (its packets lost).
    Before, the lookup ended at the host's give-up time and released OLD."""
    lab.silence(lab.honest[-1:])
    lookup, items = _get(lab, lab.joined_next_to_the_cluster())
    assert items == [] and lookup.held_back == OLD_ITEM
    assert not lookup.outcome.converged and not lookup.outcome.absent


def test_one_honest_node_beyond_the_cluster_does_not_release_its_packet(lab: Lab) -> None:
    """The host answers, naming the cluster: one node beyond the cluster answered, not k.
    Before, that released OLD at once."""
    lab.host_names_only_the_cluster()
    lookup, items = _get(lab, lab.joined_next_to_the_cluster())
    assert lookup.outcome.responded == 10  # the host and 9 Sybils: nobody else known
    assert items == [] and lookup.held_back == OLD_ITEM


def test_members_that_time_out_still_count_toward_the_cluster(lab: Lab) -> None:
    """The lookup knows 9 members (the 8 a host listed, each naming the 8 closest others);
    two of them time out (their packets lost), then another answers. Before, the 7 left
    no longer made a cluster (at least 8), and that member's older packet was accepted as
    the answer: silence does not move anyone's id."""
    lookup = GetMutableLookup(NEW_ITEM.k, lab.joined_next_to_the_cluster(),
                              lab.net.clock.monotonic(), own_id=OWN)
    now = lab.net.clock.monotonic()
    asked = {c.addr for c in lookup.next_requests(now)}
    first, *rest = [m.addr for m in lab.cluster[:8] if m.addr in asked]
    reply = lab.net.exchange(first, Query(tid=b"", method="get", id=OWN, target=NEW_ITEM.target))
    assert isinstance(reply, Response) and lookup.on_response(first, reply, now) is None
    for addr in rest[:2]:
        lookup.on_timeout(addr, now + 2.0)
    late = rest[2]
    reply = lab.net.exchange(late, Query(tid=b"", method="get", id=OWN, target=NEW_ITEM.target))
    assert isinstance(reply, Response)
    assert lookup.on_response(late, reply, now + 2.1) is None and lookup.best is None
    assert lookup.held_back == OLD_ITEM


@pytest.mark.parametrize("looking", [False, True])
def test_while_walks_around_the_key_run_k_nodes_beyond_do_not_release_its_packet(
        lab: Lab, looking: bool) -> None:
    """The first nodes a walk around the key hears (far ones; each names only the cluster)
    answer: k (20) beyond the cluster, not its k closest. Kernel lab: with them, 3 of 20 cold
    resolves of one key released the cluster's older packet. While walks still run, it stays
    held back; when they are over (and the lookup still knows no one else), it goes out."""
    far = lab.honest[40:60]
    for p in far:
        lab.net.handlers[p.addr] = (
            lambda q, src, now, p=p: (p.addr, krpc.encode(Response(
                q.tid, p.id, nodes=tuple(lab.cluster[:8]), token=b"t"))))
    lookup = GetMutableLookup(NEW_ITEM.k, lab.joined_next_to_the_cluster()[:8]
                              + [(p.id, p.addr) for p in far], lab.net.clock.monotonic(),
                              own_id=OWN)
    lookup.looking_around = looking
    items = lab.net.run(lookup, OWN)
    assert not {c.addr for c in lookup.closest_responded(40)} & {p.addr for p in lab.holders}
    if looking:
        assert items == [] and lookup.held_back == OLD_ITEM
        lookup.looking_around = False
        assert lookup.finish() == OLD_ITEM
    else:
        assert items == [OLD_ITEM]


def test_out_of_time_the_lookup_releases_the_cluster_packet(lab: Lab) -> None:
    lab.net.delays[lab.honest[-1].addr] = 0.4  # still awaited at the deadline
    lookup, items = _get(lab, lab.joined_next_to_the_cluster(), timeout=0.3)
    assert lookup.outcome.deadline_hit and items == [OLD_ITEM]


def test_slow_lossy_holders_beyond_the_cluster_win_in_one_lookup(lab: Lab) -> None:
    """From a table that knows more than the cluster: the Sybils answer at once, the holders
    after 300 ms and three of the eight not at all."""
    lab.silence(lab.holders[:3])
    for p in lab.honest[:40]:
        lab.net.delays[p.addr] = 0.3
    lookup, items = _get(lab, lab.table())
    assert items == [NEW_ITEM] and lookup.best == NEW_ITEM


# -- over a resolve's rounds ----------------------------------------------------------------
class _Dht(NetDht):
    """A node whose first lookup starts next to the cluster and whose later ones start from
    ``later()`` (its table once the first lookup's answers and the join's hellos are in)."""

    def __init__(self, lab: Lab, later: Callable[[], Seeds]) -> None:
        super().__init__(lab.net, OWN)
        self.lab, self.later, self.lookups = lab, later, 0

    def seeds(self) -> Seeds:
        self.lookups += 1
        return self.lab.joined_next_to_the_cluster() if self.lookups == 1 else self.later()


@pytest.mark.parametrize("host_answers", [False, True])
async def test_one_shot_resolve_looks_again_and_prints_the_newest(lab: Lab,
                                                                  host_answers: bool) -> None:
    """``pkdns resolve``'s settings (rounds until the deadline, agree=2). Before: OLD."""
    if host_answers:
        lab.host_names_only_the_cluster()
    else:
        lab.silence(lab.honest[-1:])
    lab.silence(lab.holders[:3])
    dht = _Dht(lab, lab.table)
    found = await PkarrClient(dht).resolve(KP.public_key, timeout=5.0, grace=1.0, rounds=None,
                                           round_min=0.0, agree=2).collect()
    assert found.best == NEW and dht.lookups == 2


async def test_a_packet_only_the_cluster_holds_is_printed_after_a_second_look(
        fake_clock: FakeClock) -> None:
    """No honest holder anywhere: after a second round found nothing newer, the cluster's
    packet is the answer (a false alarm must not cost the key)."""
    lab = _lab(fake_clock, holders=0)
    dht = _Dht(lab, lab.table)
    found = await PkarrClient(dht).resolve(KP.public_key, timeout=5.0, grace=1.0, rounds=None,
                                           round_min=0.0, agree=2).collect()
    assert found.best == OLD and dht.lookups == 2


async def test_daemon_answers_the_newest(lab: Lab) -> None:
    """The daemon's packet source (lookup_timeout 2.5 s, up to three rounds). Before: OLD,
    answered from the first round."""
    lab.silence(lab.honest[-1:])
    source = source_over(_Dht(lab, lab.table), PkarrConfig(dht_rate_limit=0), lab.net.clock)
    got = await source.get(KP.public_key, "ip")
    assert got.status is Status.FOUND and got.packet == NEW
