"""Clusters planted next to other keys, nearer this key than its holders: a lookup passes
them by instead of spending its window on them.

Kernel lab (issue 12): five Sybil clusters of 16, each answering every query with only its own
members, in a swarm of about 60 live honest nodes. Cold lookups for other keys asked up to 114
nodes and heard 82 answers without one value: the clusters filled the closest k. On the
in-memory network (fake clock, no sockets).
"""

from __future__ import annotations

import random

import pytest

from pkdns.dht import krpc
from pkdns.dht.getlookup import GetMutableLookup
from pkdns.dht.ids import ID_BITS, distance, make_node_id
from pkdns.dht.item import MutableItem
from pkdns.dht.krpc import Address, NodeInfo, Query, Response
from pkdns.dht.lookup import IterativeLookup, State
from pkdns.dht.sybil import in_prefix, off_target_clusters, shell_targets
from pkdns.pkarr.client import to_item
from tests.support.clock import FakeClock
from tests.support.dhtnet import FakeNet, PureNode, Reply, plant_cluster
from tests.support.pkarr_factory import TS, keypair, packet

OWN = make_node_id(random.Random(5))
ITEM = to_item(packet(keypair(33), ["@ 300 IN TXT here"], TS))
TARGET = ITEM.target
RNG = random.Random(3)


def _ids(shared: int, n: int = 8, around: bytes | None = None) -> list[bytes]:
    """``n`` ids sharing their first ``shared`` bits (with ``around`` if given)."""
    base = int.from_bytes(around or RNG.randbytes(20), "big")
    low = ID_BITS - shared
    return [(base >> low << low | RNG.getrandbits(low)).to_bytes(20, "big") for _ in range(n)]


def _int(node_id: bytes) -> int:
    return int.from_bytes(node_id, "big")


def _near_but_off(target: bytes, shared_with_target: int) -> bytes:
    """An id sharing exactly ``shared_with_target`` bits with ``target``."""
    t = int.from_bytes(target, "big")
    flip = 1 << (ID_BITS - 1 - shared_with_target)
    return ((t ^ flip) & ~(flip - 1) | RNG.getrandbits(ID_BITS - 1 - shared_with_target)
            ).to_bytes(20, "big")


# -- the test on one reply --------------------------------------------------------------------
def test_a_reply_naming_a_tight_group_away_from_the_target_is_a_cluster() -> None:
    ids = _ids(40, around=_near_but_off(TARGET, 6))
    [prefix] = off_target_clusters(ids, TARGET, 0)
    assert prefix[1] >= 40
    assert all(in_prefix(_int(i), prefix) for i in ids) and not in_prefix(_int(TARGET), prefix)


def test_clusters_among_honest_contacts_are_found_each() -> None:
    """An honest node whose table the clusters filled names their members among its own
    closest (bittorrent-dht names its whole table): each cluster is found, nothing else."""
    a, b = _ids(40, n=16, around=_near_but_off(TARGET, 3)), _ids(44, n=5)
    found = off_target_clusters([*_ids(0, n=30), *a, *b, *_ids(0, n=30)], TARGET, 200)
    assert sorted(p[1] for p in found) >= [40, 44]
    assert len(found) == 2 and all(any(in_prefix(_int(i), p) for p in found) for i in a + b)


@pytest.mark.parametrize("extra", [0, 3, 14])
def test_the_keys_own_neighbourhood_is_not_shunned(extra: int) -> None:
    """Nodes packed around the target itself are cluster_size's business (held back, never
    passed by: the newest packet may sit among them), also when the ones a reply names
    share a few more bits with each other than with the target."""
    ids = _ids(40 + extra + 1, around=_near_but_off(TARGET, 40))
    assert off_target_clusters(ids, TARGET, 0) == []


@pytest.mark.parametrize("shared, size", [(0, 0), (20, 10_000_000), (7, 130), (12, 4_000)])
def test_honest_replies_are_not_clusters(shared: int, size: int) -> None:
    """Spread contacts, or an honest node's own neighbourhood (about log2 N shared bits, what
    one whose bucket for the target is empty names) on a network of ``size`` (0: unknown)."""
    assert off_target_clusters(_ids(shared), TARGET, size) == []


def test_a_member_whose_mates_share_a_bit_more_than_it_is_shunned_too() -> None:
    """It names 8 mates sharing 42 bits; it shares 41 with them. Before, the prefix was the
    mates' 42 bits and the member passed for an honest node (kernel lab, traced)."""
    mates = _ids(42, around=_near_but_off(TARGET, 1))
    member = (_int(mates[0]) ^ 1 << (ID_BITS - 42)).to_bytes(20, "big")
    lookup = GetMutableLookup(ITEM.k, [(member, ("10.9.0.1", 6881))], 0.0, own_id=OWN)
    [asked] = lookup.next_requests(0.0)
    lookup.on_response(asked.addr, Response(b"t", member, nodes=tuple(
        NodeInfo(i, f"172.16.{n}.1", 6881) for n, i in enumerate(mates))), 0.01)
    assert lookup.outcome.shunned_clusters == 1
    assert lookup._cands[asked.addr].shunned and lookup.referrers() == 0


def test_a_walk_passes_by_the_clusters_a_get_knows() -> None:
    """The get's clusters: one passed by (named by the host) and the one around the key. A
    walk given them asks none of their members, though its seeds are all of them but one."""
    around_key = _ids(64, n=16, around=TARGET)
    elsewhere = _ids(40, n=8, around=_near_but_off(TARGET, 3))
    host = NodeInfo(_near_but_off(TARGET, 0), "10.9.0.1", 6881)
    get = GetMutableLookup(ITEM.k, [(host.id, host.addr)], 0.0, own_id=OWN)
    [asked] = get.next_requests(0.0)
    get.on_response(asked.addr, Response(b"t", host.id, nodes=tuple(
        NodeInfo(i, f"172.{16 + n // 8}.{n % 8}.1", 6881)
        for n, i in enumerate(around_key[:8] + elsewhere))), 0.01)
    clusters = get.clusters()
    assert len(clusters) == 2 and all(in_prefix(_int(i), clusters[-1]) for i in around_key)
    seeds = [(i, (f"172.20.{n}.1", 6881)) for n, i in enumerate(around_key + elsewhere)]
    walk = IterativeLookup(_near_but_off(TARGET, 5), [*seeds, (host.id, host.addr)], 0.0)
    walk.avoid(clusters)
    assert [c.addr for c in walk.next_requests(0.0)] == [host.addr]


def test_a_wide_neighbourhood_taken_for_a_cluster_is_not_avoided() -> None:
    """16 nodes sharing 15 bits with the key pass for a cluster on a network estimated at
    1000 nodes; walks must not pass by the key's whole neighbourhood on such an estimate:
    only a prefix of OFF_TARGET_BITS or more bits is handed to them."""
    near = _ids(15, n=16, around=TARGET)
    host = NodeInfo(_near_but_off(TARGET, 0), "10.9.0.1", 6881)
    get = GetMutableLookup(ITEM.k, [(host.id, host.addr)], 0.0, own_id=OWN, network_size=1000)
    [asked] = get.next_requests(0.0)
    get.on_response(asked.addr, Response(b"t", host.id, nodes=tuple(
        NodeInfo(i, f"172.16.{n}.1", 6881) for n, i in enumerate(near))), 0.01)
    assert get.hidden_shells() != []  # it does take them for a cluster
    assert get.clusters() == []


def test_three_contacts_say_nothing() -> None:
    assert off_target_clusters(_ids(60, n=3), TARGET, 0) == []


# -- a lookup ---------------------------------------------------------------------------------
def _net(clock: FakeClock, clusters: int, *, eclipse: bool = False
         ) -> tuple[FakeNet, list[PureNode], list[NodeInfo]]:
    """120 honest nodes, the 8 closest to TARGET holding ITEM; ``clusters`` clusters of 16,
    each sharing 12 bits with TARGET (nearer it than any honest node), holding nothing and
    naming only each other. Honest tables list them where a bucket has room; ``eclipse``:
    before any honest node (their buckets toward TARGET then hold only Sybils)."""
    net = FakeNet(clock)
    net.add_many(120)
    if not eclipse:
        net.connect_all()
    sybils: list[NodeInfo] = []
    for j in range(clusters):
        sybils += plant_cluster(net, _near_but_off(TARGET, 12), None, n=16, seed=j, subnet=30 + j)
    net.connect_all()
    honest = sorted(net.honest.values(), key=lambda p: distance(p.id, TARGET))
    for node in honest[:8]:
        node.store.put(ITEM.k, ITEM.seq, ITEM.v, ITEM.sig)
    return net, honest, sybils


def _get(net: FakeNet, honest: list[PureNode]) -> tuple[GetMutableLookup, list[MutableItem]]:
    seeds = [(p.id, p.addr) for p in honest[60::15]]
    lookup = GetMutableLookup(ITEM.k, seeds, net.clock.monotonic(), own_id=OWN)
    return lookup, net.run(lookup, OWN)


def _asked(lookup: IterativeLookup, nodes: list[NodeInfo]) -> int:
    return sum(1 for n in nodes if (c := lookup._cands.get(n.addr)) and c.state is not State.NEW)


def test_a_lookup_passes_clusters_by(fake_clock: FakeClock) -> None:
    """It finds the holders and asks a cluster no more than alpha members (a reply that
    names it is enough). Before, it asked every member it learnt of (9 here)."""
    net, honest, sybils = _net(fake_clock, 3)
    lookup, items = _get(net, honest)
    assert items == [ITEM]
    assert lookup.outcome.shunned_clusters >= 1
    assert _asked(lookup, sybils) <= 4 * lookup.outcome.shunned_clusters
    assert lookup.outcome.converged and not lookup.outcome.absent


def test_clusters_that_hide_every_holder_prove_no_absence(fake_clock: FakeClock) -> None:
    """Every honest table's closest contacts toward TARGET are Sybils, so no reply names a
    holder: the lookup cannot find ITEM, and must not call it absent (NXDOMAIN) either.
    Before, the 20 nearest (all Sybils) answered without a value: "absent"."""
    net, honest, sybils = _net(fake_clock, 3, eclipse=True)
    lookup, items = _get(net, honest)
    assert items == []
    assert not lookup.outcome.absent and not lookup.proves_absence()


def test_a_find_node_walk_passes_them_by_too(fake_clock: FakeClock) -> None:
    """Bootstrap walks use the same rule: the closest nodes a walk toward TARGET reports
    (those a put would store on) are the honest ones next to it, not the clusters."""
    net, honest, sybils = _net(fake_clock, 3)
    lookup = IterativeLookup(TARGET, [(p.id, p.addr) for p in honest[60::15]],
                             fake_clock.monotonic(), own_id=OWN)
    net.run(lookup, OWN)
    closest = {c.addr for c in lookup.closest_responded(8)}
    assert closest == {p.addr for p in honest[:8]}


def test_a_reply_that_names_its_whole_table_yields_k_honest_contacts(
        fake_clock: FakeClock) -> None:
    """A bittorrent-dht host names every contact it has, closest first: the 48 Sybils, then
    the honest nodes. Only K of a reply are taken; before, they were all Sybils, which named
    only each other, and the holders were never asked."""
    net, honest, sybils = _net(fake_clock, 3, eclipse=True)
    host = honest[-1]
    table = sorted([*sybils, *(NodeInfo(p.id, *p.addr) for p in honest[:-1])],
                   key=lambda n: distance(n.id, TARGET))

    def whole_table(q: Query, src: Address, now: float) -> Reply:
        return host.addr, krpc.encode(Response(q.tid, host.id, nodes=tuple(table), token=b"t"))
    net.handlers[host.addr] = whole_table
    lookup = GetMutableLookup(ITEM.k, [(host.id, host.addr)], fake_clock.monotonic(), own_id=OWN)
    assert net.run(lookup, OWN) == [ITEM]
    assert lookup.outcome.shunned_clusters == 3 and _asked(lookup, sybils) == 0


def test_contacts_named_again_take_no_place_among_the_k_of_a_reply() -> None:
    """A reply lists the key's own cluster (16, held back, not passed by) before the honest
    nodes beyond it, as every bittorrent-dht host does (it names its whole table), and the
    lookup knows the cluster already (a one-shot join starts next to it). Before, the cluster
    took 16 of the 20 places and 4 honest contacts came in."""
    rng = random.Random(8)
    t = int.from_bytes(TARGET, "big")
    cluster = [NodeInfo((t ^ rng.getrandbits(96)).to_bytes(20, "big"), f"172.16.{i}.1", 6881)
               for i in range(16)]
    honest = [NodeInfo(make_node_id(rng), f"10.1.{i}.1", 6881) for i in range(40)]
    lookup = GetMutableLookup(ITEM.k, [(n.id, n.addr) for n in cluster], 0.0, own_id=OWN)
    host = lookup.next_requests(0.0)[0]
    nodes = tuple(sorted([*cluster, *honest], key=lambda n: distance(n.id, TARGET)))
    lookup.on_response(host.addr, Response(b"t", cluster[0].id, nodes=nodes), 0.1)
    assert sum(1 for n in honest if n.addr in lookup._cands) == 20


def test_parts_of_one_cluster_count_once() -> None:
    """Members name different parts of their cluster (the 8 closest to their own target):
    a wider part that covers narrower ones already passed by replaces them."""
    lookup = GetMutableLookup(ITEM.k, [], 0.0, own_id=OWN)
    base = _near_but_off(TARGET, 2)
    narrow, wide = _ids(60, around=base), _ids(44, around=base)
    lookup._shun(narrow)
    lookup._shun(wide)
    lookup._shun(narrow)
    assert lookup.outcome.shunned_clusters == 1


# -- looking around a hidden key ---------------------------------------------------------------
def test_each_shell_target_is_nearer_its_shell_than_the_cluster() -> None:
    """The walk toward shell b's target finds the nodes sharing exactly b bits with the key
    before any of the cluster (40 bits): they are nearer that target."""
    cluster = _ids(40, n=16, around=TARGET)
    shells = shell_targets(TARGET, 2, 40)
    assert len(shells) == 6
    for b, t in zip(range(3, 9), shells, strict=True):
        shell_node = _near_but_off(TARGET, b)
        assert all(distance(shell_node, t) < distance(s, t) for s in cluster)
    assert shell_targets(TARGET, 37, 40) == shell_targets(TARGET, 37, 40, n=2)  # not past it


def test_a_lookup_asks_for_shells_only_while_a_cluster_hides_the_rest() -> None:
    t = int.from_bytes(TARGET, "big")
    rng = random.Random(2)
    cluster = [NodeInfo((t ^ rng.getrandbits(96)).to_bytes(20, "big"), f"172.16.{i}.1", 6881)
               for i in range(16)]
    far = NodeInfo(_near_but_off(TARGET, 1), "10.9.0.1", 6881)
    lookup = GetMutableLookup(ITEM.k, [(n.id, n.addr) for n in [*cluster, far]], 0.0,
                              own_id=OWN)
    far_targets = [(t ^ 1 << ID_BITS - 1 - b).to_bytes(20, "big") for b in (0, 1)]
    assert lookup.hidden_shells() == far_targets + shell_targets(TARGET, 1, 64)
    lookup.add_seeds([(make_node_id(rng), (f"10.1.{i}.1", 6881)) for i in range(20)])
    assert lookup.hidden_shells() == []  # k beyond it known: the walk itself gets there
    plain = GetMutableLookup(ITEM.k, [(far.id, far.addr)], 0.0, own_id=OWN)
    assert plain.hidden_shells() == []  # no cluster


def test_walks_go_on_while_the_nodes_known_beyond_a_cluster_are_mostly_dead() -> None:
    """Kernel lab (traced): a get knew the cluster and 20 nodes beyond it, but 15 of those
    timed out or answered errors; it walked nowhere and its end released the older packet.
    Walks count only the live; the release still counts all 20 (see finish)."""
    rng = random.Random(2)
    cluster = [NodeInfo(i, f"172.16.{n}.1", 6881)
               for n, i in enumerate(_ids(64, n=16, around=TARGET))]
    beyond = [(make_node_id(rng), (f"10.1.{i}.1", 6881)) for i in range(20)]
    lookup = GetMutableLookup(ITEM.k, [(n.id, n.addr) for n in cluster] + beyond, 0.0,
                              own_id=OWN)
    assert lookup.hidden_shells() == []
    dead = {addr for _, addr in beyond[:15]}
    now = 0.0
    for _ in range(200):
        asked = lookup.next_requests(now)
        for c in asked:
            if c.addr in dead:
                lookup.on_timeout(c.addr, now)
        if lookup.outcome.timed_out == len(dead):
            break
        now += 0.5
    assert lookup.outcome.timed_out == len(dead) and lookup.hidden_shells() != []


def test_clusters_passed_by_send_walks_far_and_into_the_shells() -> None:
    """A cluster planted for another key, 8 bits from ours and nearer it than its holders:
    every reply names it, it is passed by, and the lookup knows too few others. The host
    names the same contacts for any target near the key, so walks go to the key's far half
    and quarter (other referrers), into the shells below the host and to the host's own id
    (its neighbours have buckets of their own). Once k others are known, none."""
    lookup = GetMutableLookup(ITEM.k, [(OWN, ("10.9.0.1", 6881))], 0.0, own_id=make_node_id(
        random.Random(4)))
    host = lookup.next_requests(0.0)[0]
    nearby = _ids(40, n=8, around=_near_but_off(TARGET, 8))
    lookup.on_response(host.addr, Response(b"t", host.id or OWN, nodes=tuple(
        NodeInfo(i, f"172.17.{n}.1", 6881) for n, i in enumerate(nearby))), 0.01)
    assert lookup.shunned_depth() == 8
    depth = ID_BITS - distance(OWN, TARGET).bit_length()
    far = [(int.from_bytes(TARGET, "big") ^ 1 << ID_BITS - 1 - b).to_bytes(20, "big")
           for b in (0, 1)]
    assert depth == 0  # the far quarter is shell 1 too: walked once
    assert lookup.hidden_shells() == far + shell_targets(TARGET, depth, ID_BITS)[1:] + [OWN]
    rng = random.Random(6)
    lookup.add_seeds([(make_node_id(rng), (f"10.1.{i}.1", 6881)) for i in range(20)])
    assert lookup.hidden_shells() == []


def test_a_get_that_passed_a_cluster_by_looks_around_only_once_it_ran_out() -> None:
    """The host names another key's cluster; ten contacts from the table are still to ask:
    no walks yet (kernel lab, traced: a warm daemon's gets looked at their first poll, 74
    walks in 20 s, and the pacing budget the next keys needed was gone). Once all of them
    answered without the packet, the lookup walks."""
    rng = random.Random(8)
    table = [(make_node_id(rng), (f"10.2.{i}.1", 6881)) for i in range(10)]
    lookup = GetMutableLookup(ITEM.k, [(OWN, ("10.9.0.1", 6881)), *table], 0.0,
                              own_id=make_node_id(random.Random(4)), alpha=1)
    host = lookup.next_requests(0.0)[0]
    nearby = _ids(40, n=8, around=_near_but_off(TARGET, 8))
    lookup.on_response(host.addr, Response(b"t", host.id or OWN, nodes=tuple(
        NodeInfo(i, f"172.17.{n}.1", 6881) for n, i in enumerate(nearby))), 0.01)
    assert lookup.shunned_depth() == 8 and lookup.hidden_shells() == []
    now = 0.02
    while asked := lookup.next_requests(now):
        for c in asked:
            lookup.on_response(c.addr, Response(b"t", c.id or OWN, token=b"t"), now)
        now += 0.01
    assert lookup.hidden_shells()


def test_a_cluster_around_the_key_and_others_passed_by_send_walks_far_too() -> None:
    """Kernel lab (traced): the key's own cluster, two clusters for other keys in every
    reply, the host far away: the shells below the cluster alone found no holder (the host
    names the same contacts for them all); walks toward the far half and quarter go too."""
    t = int.from_bytes(TARGET, "big")
    cluster = _ids(64, n=16, around=TARGET)
    host = NodeInfo(_near_but_off(TARGET, 0), "10.9.0.1", 6881)
    lookup = GetMutableLookup(ITEM.k, [(host.id, host.addr)], 0.0, own_id=OWN)
    [asked] = lookup.next_requests(0.0)
    other = _ids(40, n=8, around=_near_but_off(TARGET, 2))
    lookup.on_response(asked.addr, Response(b"t", host.id, nodes=tuple(
        NodeInfo(i, f"172.{16 + n // 8}.{n % 8}.1", 6881)
        for n, i in enumerate(cluster[:8] + other))), 0.01)
    far = [(t ^ 1 << ID_BITS - 1 - b).to_bytes(20, "big") for b in (0, 1)]
    assert lookup.shunned_depth() == 2
    assert lookup.hidden_shells()[:2] == far and len(lookup.hidden_shells()) > 2


def _run_around_cluster(lookup: GetMutableLookup, beyond: set[Address],
                        silent: Address | None = None) -> None:
    """Drive ``lookup`` to its end: the nodes in ``beyond`` answer without a packet,
    ``silent`` never answers, everyone else (the cluster) answers with ITEM."""
    now = 0.0
    while asked := lookup.next_requests(now):
        for c in asked:
            if c.addr == silent:
                lookup.on_timeout(c.addr, now)
            elif c.addr in beyond:
                lookup.on_response(c.addr, Response(b"t", c.id or OWN, token=b"t"), now)
            else:
                lookup.on_response(c.addr, Response(b"t", c.id or OWN, token=b"t", k=ITEM.k,
                                                    v=ITEM.v, sig=ITEM.sig, seq=ITEM.seq), now)
        now += 0.01


def test_referrers_are_the_nodes_beyond_the_cluster_that_answered_without_a_packet() -> None:
    """What a look around the key must add for another to follow (:mod:`pkdns.dht.around`):
    members holding the packet name only each other, a silent node names no one."""
    cluster = [NodeInfo(i, f"172.16.{n}.1", 6881)
               for n, i in enumerate(_ids(64, n=16, around=TARGET))]
    far = [NodeInfo(_near_but_off(TARGET, b), f"10.9.{b}.1", 6881) for b in (1, 2, 3)]
    lookup = GetMutableLookup(ITEM.k, [(n.id, n.addr) for n in [*cluster, *far]], 0.0,
                              own_id=OWN)
    _run_around_cluster(lookup, {n.addr for n in far[:2]}, silent=far[2].addr)
    assert lookup.held_back == ITEM and lookup.referrers() == 2
    # walks go to their neighbourhoods too (not the silent one's)
    assert set(lookup.hidden_shells()[-2:]) == {far[0].id, far[1].id}


def test_walks_go_to_the_neighbourhoods_no_other_walk_reaches() -> None:
    """Referrers sharing 2, 3 and 4 bits with the key and one next to its far point, and a
    node only the walks heard, deep in the far half: three walks, toward the ids farthest
    from the key and every other walk's target (a walk toward the one next to the far point
    would meet the far walk's nodes; :data:`pkdns.dht.getlookup.NEIGHBOURHOODS`)."""
    cluster = [NodeInfo(i, f"172.16.{n}.1", 6881)
               for n, i in enumerate(_ids(64, n=16, around=TARGET))]
    far_point = (_int(TARGET) ^ 1 << ID_BITS - 1).to_bytes(20, "big")
    b2, b3, b4 = (NodeInfo(_near_but_off(TARGET, b), f"10.9.{b}.1", 6881) for b in (2, 3, 4))
    by_far = NodeInfo(_near_but_off(far_point, 20), "10.9.20.1", 6881)
    heard = NodeInfo(_near_but_off(far_point, 1), "10.8.0.1", 6881)
    refs = [b2, b3, b4, by_far]
    lookup = GetMutableLookup(ITEM.k, [(n.id, n.addr) for n in [*cluster, *refs]], 0.0,
                              own_id=OWN)
    _run_around_cluster(lookup, {n.addr for n in refs})
    lookup.add_heard([(heard.id, heard.addr)])
    assert lookup.referrers() == 5  # the heard one answered a walk, not the get
    assert lookup.hidden_shells()[-3:] == [heard.id, b2.id, b3.id]
