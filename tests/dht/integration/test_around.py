"""A key that a Sybil cluster hides from every reply: a one-shot resolve still prints its
newest packet, found by walking around the key. Real sockets on loopback: pkdns server nodes,
16 Sybils of the kernel lab's kind (:class:`tests.support.klab_peers.FakeNode`), honest nodes
that know everyone, a fresh client node joining through one host, as ``pkdns resolve`` does.

Kernel lab (issue 12): after twenty minutes of the lab's Sybils announcing themselves, every
node asked about a clustered key named only the cluster (its 8 closest contacts), and cold
resolves printed the cluster's older packet or nothing in half the lookups.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from pkdns.dht import krpc
from pkdns.dht.ids import distance, target_of
from pkdns.dht.item import MutableItem
from pkdns.dht.krpc import Address, NodeInfo, Query, Response
from pkdns.dht.node import DhtNode
from pkdns.pkarr.client import PkarrClient, to_item
from pkdns.pkarr.resolving import Resolution
from tests.support.klab_peers import FakeNode
from tests.support.pkarr_factory import TS, keypair, packet

HOST = "127.0.0.1"
KP = keypair(44)
NEW = packet(KP, ["@ 300 IN TXT new"], TS)
OLD = packet(KP, ["@ 300 IN TXT old"], TS - 3600 * 1_000_000)
TARGET = target_of(KP.public_key.raw)
P = TypeVar("P", bound=asyncio.DatagramProtocol)


class Omni(asyncio.DatagramProtocol):
    """An honest node that knows everyone (as a long-running node with big buckets does) and
    answers with the 8 closest to the target it was asked about; a holder of ``item``."""

    def __init__(self, node_id: bytes, everyone: list[NodeInfo],
                 item: MutableItem | None) -> None:
        self.id, self.everyone, self.item = node_id, everyone, item
        self.transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        msg = krpc.decode(data)
        if not isinstance(msg, Query) or self.transport is None or msg.target is None:
            return
        nodes = tuple(sorted(self.everyone, key=lambda n: distance(n.id, msg.target or b""))[:8])
        it = self.item if msg.method == "get" and msg.target == TARGET else None
        reply = (Response(msg.tid, self.id, nodes=nodes, token=b"t") if it is None else
                 Response(msg.tid, self.id, nodes=nodes, token=b"t", k=it.k, v=it.v,
                          sig=it.sig, seq=it.seq))
        self.transport.sendto(krpc.encode(reply), addr)


@dataclass
class Swarm:
    honest: list[Omni]  # closest to the key first
    sybils: list[FakeNode]

    @property
    def far_host(self) -> Address:
        host, port = self.honest[-1].transport.get_extra_info("sockname")[:2]  # type: ignore[union-attr]
        return str(host), int(port)


async def _endpoint(factory: Callable[[], P]) -> P:
    transport, proto = await asyncio.get_running_loop().create_datagram_endpoint(
        factory, local_addr=(HOST, 0))
    proto.transport = transport  # type: ignore[attr-defined]
    return proto


async def _cluster(at: bytes, rng: random.Random,
                   holds_old: bool) -> tuple[list[FakeNode], list[NodeInfo]]:
    """16 Sybils sharing 40 bits with ``at``, naming only each other, holding OLD or nothing:
    the nodes and their contacts."""
    old = to_item(OLD)
    item = {"k": old.k, "seq": old.seq, "v": old.v, "sig": old.sig} if holds_old else None
    sybils = [await _endpoint(lambda: FakeNode("sybil", at[:5] + rng.randbytes(15), [], item))
              for _ in range(16)]
    members = [NodeInfo(s.id, *s.address) for s in sybils]
    for s in sybils:
        s.contacts = members
    return sybils, members


def _close(protocols: Sequence[Omni | FakeNode]) -> None:
    for p in protocols:
        if p.transport is not None:
            p.transport.close()


async def _cold_resolve(node_id: bytes, host: Address) -> Resolution:
    """As ``pkdns resolve`` runs it: join through ``host`` (asking it about the key), then
    rounds until two nodes agree."""
    client = DhtNode(mode="client", request_timeout=1.0, node_id=node_id)
    await client.start(HOST, 0)
    try:
        assert await client.join([host], timeout=5.0, target=TARGET)
        return await PkarrClient(client).resolve(
            KP.public_key, timeout=5.0, grace=1.0, rounds=None, round_min=0.0,
            agree=2).collect()
    finally:
        await client.close()


def _nearby() -> bytes:
    """A point sharing exactly 8 leading bits with the key (nearer it than any of 40 honest
    nodes is likely to be), where a cluster planted for another key sits."""
    flip = 1 << (159 - 8)
    return (int.from_bytes(TARGET, "big") ^ flip).to_bytes(20, "big")


@pytest.fixture(params=["around the key", "nearby"])
async def swarm(request: pytest.FixtureRequest) -> AsyncIterator[Swarm]:
    """40 honest nodes that know everyone, the 8 closest to the key holding NEW; 16 Sybils
    naming each other, the 8 closest to the key in every honest view, so no reply about the
    key names a holder: sharing 40 bits with the key and holding OLD, or planted next to
    another key nearby (sharing 40 bits with :func:`_nearby`) and holding nothing of ours."""
    rng = random.Random(5)
    around = TARGET if request.param == "around the key" else _nearby()
    sybils, members = await _cluster(around, rng, holds_old=around == TARGET)
    everyone = list(members)
    for s in sybils:
        s.contacts = sorted((n for n in everyone if n.id != s.id),
                            key=lambda n: distance(n.id, TARGET))
    ids = sorted((rng.randbytes(20) for _ in range(40)), key=lambda i: distance(i, TARGET))
    honest = [await _endpoint(lambda i=i, j=j: Omni(i, everyone, to_item(NEW) if j < 8 else None))
              for j, i in enumerate(ids)]
    for h in honest:
        everyone.append(NodeInfo(h.id, *h.transport.get_extra_info("sockname")[:2]))  # type: ignore[union-attr]
    try:
        yield Swarm(honest, sybils)
    finally:
        _close([*honest, *sybils])


async def test_no_reply_about_the_key_names_a_holder(swarm: Swarm) -> None:
    """The set-up is the lab's: asked about the key, every honest node names Sybils only."""
    sybil_ids = {s.id for s in swarm.sybils}
    for h in swarm.honest:
        assert {n.id for n in sorted(h.everyone, key=lambda n: distance(n.id, TARGET))[:8]
                } <= sybil_ids


async def test_a_cold_resolve_prints_the_newest_packet(swarm: Swarm) -> None:
    """As ``pkdns resolve`` runs it: join through the host farthest from the key (asking it
    about the key), then rounds until two nodes agree. Before, it printed OLD (a cluster
    around the key) or nothing (one nearby): the lookup knew the cluster and the host, and
    every reply named the cluster again."""
    far_id = bytes([TARGET[0] ^ 0x80]) + random.Random(9).randbytes(19)  # its own hello
    found = await _cold_resolve(far_id, swarm.far_host)  # (that hello finds no holder)
    assert found.best is not None and found.best.timestamp == NEW.timestamp


@pytest.mark.parametrize("swarm", ["nearby"], indirect=True)
async def test_a_get_that_has_its_packet_does_not_look_around(swarm: Swarm) -> None:
    """The host gives the newest packet itself: the get ends with it, no walks. Before, it
    walked on (up to 2 s) while a one-shot resolve waited for its end."""
    swarm.honest[-1].item = to_item(NEW)
    client = DhtNode(mode="client", request_timeout=1.0)
    await client.start(HOST, 0)
    try:
        assert await client.join([swarm.far_host], timeout=5.0, target=TARGET)
        items = await client.get_mutable(KP.public_key.raw, timeout=5.0).collect()
        assert [i.seq for i in items] == [to_item(NEW).seq]
        assert client._around.seeds(TARGET) == [] and not client._around._running
    finally:
        await client.close()


def _sharing(bits: int, rng: random.Random) -> bytes:
    """An id sharing exactly ``bits`` leading bits with the key."""
    t = int.from_bytes(TARGET, "big")
    flip = 1 << (159 - bits)
    return ((t ^ flip) & ~(flip - 1) | rng.getrandbits(159 - bits)).to_bytes(20, "big")


def _closed_port() -> int:
    """A loopback UDP port nobody listens on (a dead node's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Slow(Omni):
    """An honest node that answers after ``delay`` seconds (a far link)."""

    delay = 0.4

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        asyncio.get_running_loop().call_later(
            self.delay, super().datagram_received, data, addr)


@pytest.fixture
async def starved() -> AsyncIterator[Swarm]:
    """Kernel lab: the bootstrap host's bucket for the key's half held five members of a
    cluster planted for another key (two bits from ours) and three dead nodes near the key.
    The honest nodes of the host's own half (``far_host``) know everyone, the holders too; the
    one nearest the key's far point answers slowly (:class:`Slow`)."""
    rng = random.Random(11)
    sybils, members = await _cluster(_sharing(2, rng), rng, holds_old=False)
    dead_nodes = [NodeInfo(_sharing(5 + i, rng), HOST, _closed_port()) for i in range(3)]
    ids = [_sharing(1 + i % 4, rng) for i in range(12)] + [
        bytes([TARGET[0] ^ 0x80]) + rng.randbytes(19) for _ in range(20)]
    holds = [to_item(NEW) if j < 8 else None for j in range(len(ids))]
    honest = [await _endpoint(lambda i=i, it=it: Omni(i, [], it))
              for i, it in zip(sorted(ids, key=lambda i: distance(i, TARGET)), holds, strict=True)]
    far_point = bytes([TARGET[0] ^ 0x80]) + TARGET[1:]
    honest.insert(-1, await _endpoint(lambda: Slow(far_point[:19] + b"\x00", [], None)))
    everyone = [NodeInfo(h.id, *h.transport.get_extra_info("sockname")[:2])  # type: ignore[union-attr]
                for h in honest]
    for h in honest:
        h.everyone = everyone + members
    host = honest[-1]  # in the far half: its bucket for the key's half, as the lab's was
    host.everyone = members[:5] + dead_nodes + [n for n in everyone if n.id[0] & 0x80
                                                != TARGET[0] & 0x80]
    try:
        yield Swarm(honest, sybils)
    finally:
        _close([*honest, *sybils])


async def test_a_resolve_whose_host_names_only_clusters_and_the_dead_walks_elsewhere(
        starved: Swarm) -> None:
    """The resolve (its own id in the key's half too, so its second hello named the same
    eight again) asked those seven six times over and printed nothing. Walks toward the key's
    far half find the honest nodes of the host's half, and they name the holders."""
    found = await _cold_resolve(_sharing(1, random.Random(3)), starved.far_host)
    assert found.best is not None and found.best.timestamp == NEW.timestamp


async def test_what_walks_hear_reaches_the_get_before_they_end(starved: Swarm) -> None:
    """The walk toward the far point waits on its slow node; the nodes it heard before name
    the holders. The get has the packet while that walk still runs. Before, the get waited
    for every walk to end (kernel lab: first values 1.4-2.5 s in, where dead nodes held the
    walks)."""
    client = DhtNode(mode="client", request_timeout=1.0, node_id=_sharing(1, random.Random(3)))
    await client.start(HOST, 0)
    looking: list[bool] = []
    try:
        assert await client.join([starved.far_host], timeout=5.0, target=TARGET)
        async for item in client.get_mutable(KP.public_key.raw, timeout=5.0):
            looking.append(TARGET in client._around._running)
            assert item.seq == to_item(NEW).seq
            break
        assert looking == [True]
    finally:
        await client.close()


@pytest.fixture
async def eclipsed() -> AsyncIterator[Swarm]:
    """Kernel lab (traced): the key's own cluster (sharing 40 bits with it, holding OLD) filled
    the bootstrap host's one bucket for the key's half, so the host names only its members
    for any target there; the honest nodes of the host's own half know everyone."""
    rng = random.Random(13)
    sybils, members = await _cluster(TARGET, rng, holds_old=True)
    ids = sorted([_sharing(2 + i % 6, rng) for i in range(12)]
                 + [bytes([TARGET[0] ^ 0x80]) + rng.randbytes(19) for _ in range(20)],
                 key=lambda i: distance(i, TARGET))
    honest = [await _endpoint(lambda i=i, j=j: Omni(i, [], to_item(NEW) if j < 8 else None))
              for j, i in enumerate(ids)]
    everyone = [NodeInfo(h.id, *h.transport.get_extra_info("sockname")[:2])  # type: ignore[union-attr]
                for h in honest]
    for h in honest:
        h.everyone = everyone + members
    honest[-1].everyone = members + [n for n in everyone if n.id[0] & 0x80 != TARGET[0] & 0x80]
    try:
        yield Swarm(honest, sybils)
    finally:
        _close([*honest, *sybils])


async def test_a_resolve_whose_one_contact_names_only_the_keys_cluster_walks_far(
        eclipsed: Swarm) -> None:
    """The resolve knows the cluster and the host; walks into the shells below the cluster
    ask the host, which names the cluster again, in every round. Walks toward the key's far
    half find the host's neighbours, which know the holders. Before, it printed OLD after its
    second round."""
    found = await _cold_resolve(_sharing(1, random.Random(3)), eclipsed.far_host)
    assert found.best is not None and found.best.timestamp == NEW.timestamp


@pytest.fixture
async def chained() -> AsyncIterator[Swarm]:
    """The key's own cluster fills the bootstrap host's view of the key's half; the host knows
    one honest node of its own half (A), A knows one more (B), and only B knows the holders
    (8 nodes sharing 2-7 bits with the key). Each node names the 8 closest it knows."""
    rng = random.Random(17)
    sybils, members = await _cluster(TARGET, rng, holds_old=True)
    holders = [await _endpoint(lambda b=b: Omni(_sharing(b, rng), [], to_item(NEW)))
               for b in (2, 3, 4, 5, 6, 7, 3, 4)]
    far = [await _endpoint(lambda: Omni(bytes([TARGET[0] ^ 0x80]) + rng.randbytes(19), [], None))
           for _ in range(3)]
    info = [NodeInfo(p.id, *p.transport.get_extra_info("sockname")[:2])  # type: ignore[union-attr]
            for p in [*holders, *far]]
    b, a, host = far
    b.everyone, a.everyone = members + info[:8], members + info[8:9]
    host.everyone = members + info[9:10]
    try:
        yield Swarm([*holders, b, a, host], sybils)
    finally:
        _close([*holders, *far, *sybils])


async def test_a_get_looks_again_from_the_referrers_its_look_found(chained: Swarm) -> None:
    """One get (the daemon's lookups, and each round of a resolve, are one get each). Its
    first look's walks into the shells ask the host, which names the cluster; the walk
    toward the far half finds A and B, which answer the get naming the cluster too. A second
    look walks into the shells from them, and B names the holders. Before, the get ended
    after the first look with the cluster's packet held back: nothing."""
    client = DhtNode(mode="client", request_timeout=1.0, node_id=_sharing(1, random.Random(3)))
    await client.start(HOST, 0)
    try:
        assert await client.join([chained.far_host], timeout=5.0, target=TARGET)
        items = await client.get_mutable(KP.public_key.raw, timeout=5.0).collect()
        assert [i.seq for i in items] == [to_item(NEW).seq]
    finally:
        await client.close()


class DropsGets(Omni):
    """An honest node whose replies to ``get`` are lost (a lossy link), find_node's not."""

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        msg = krpc.decode(data)
        if not (isinstance(msg, Query) and msg.method == "get"):
            super().datagram_received(data, addr)


@pytest.fixture(params=["host answers the get", "host's get replies lost"])
async def stranded(request: pytest.FixtureRequest) -> AsyncIterator[Swarm]:
    """Kernel lab (traced, four cold resolves in a row, and one in a later run whose host
    answered only the walks): the key's cluster fills the bootstrap host's view of the key's
    half, and the nodes the host names for the key's far half are dead; only the host's own
    neighbours (sharing 24 bits with it) are alive, and they know everyone, the holders (8
    nodes sharing 2-7 bits with the key) too."""
    rng = random.Random(19)
    kind = Omni if request.param == "host answers the get" else DropsGets
    sybils, members = await _cluster(TARGET, rng, holds_old=True)
    far_point = bytes([TARGET[0] ^ 0x80]) + TARGET[1:]
    host_id = bytes([far_point[0] ^ 0x20]) + rng.randbytes(19)
    holders = [await _endpoint(lambda b=b: Omni(_sharing(b, rng), [], to_item(NEW)))
               for b in (2, 3, 4, 5, 6, 7, 3, 4)]
    near = [await _endpoint(lambda: Omni(host_id[:3] + rng.randbytes(17), [], None))
            for _ in range(4)]
    host = await _endpoint(lambda: kind(host_id, [], None))
    info = [NodeInfo(p.id, *p.transport.get_extra_info("sockname")[:2])  # type: ignore[union-attr]
            for p in [*holders, *near]]
    for p in [*holders, *near]:
        p.everyone = info + members
    dead = [NodeInfo(far_point[:2] + rng.randbytes(18), HOST, _closed_port()) for _ in range(10)]
    host.everyone = members + dead + info[8:]
    try:
        yield Swarm([*holders, *near, host], sybils)
    finally:
        _close([*holders, *near, host, *sybils])


async def test_a_resolve_whose_host_names_the_cluster_and_the_dead_walks_to_its_neighbours(
        stranded: Swarm) -> None:
    """Walks into the shells and the far quarter ask the host, which names the cluster; the
    walk toward the far half meets only the dead. The walk toward the host's own id finds
    its neighbours, and walks from them into the shells find the holders. Before, the
    resolve did not print the newest packet (nor at 296a286 when the host answered only the
    walks: it walked toward the ids of the get's own referrers only)."""
    found = await _cold_resolve(_sharing(1, random.Random(3)), stranded.far_host)
    assert found.best is not None and found.best.timestamp == NEW.timestamp


async def test_walks_beside_a_get_pass_its_clusters_by(stranded: Swarm) -> None:
    """The walks start with the clusters the get knows (here the key's own) and ask none of
    their members: they name only each other. Before, the walks sent them 71 find_node
    queries in this resolve (kernel lab, traced: 86 of 97 replies to one failing resolve's
    walks came from clusters)."""
    await _cold_resolve(_sharing(1, random.Random(3)), stranded.far_host)
    assert sum(s.asked.get("find_node", 0) for s in stranded.sybils) == 0
    assert sum(s.asked.get("get", 0) for s in stranded.sybils) > 0  # the get did meet them
