"""What :class:`pkdns.dht.around.Around` keeps between the gets of one key: the clusters they
met. Pure lookups driven by hand, a fake clock, a walk that only records how it started."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from pkdns.dht.around import CLUSTERS_KEPT_FOR, Around, Seed
from pkdns.dht.getlookup import GetMutableLookup
from pkdns.dht.ids import ID_BITS, make_node_id
from pkdns.dht.item import MutableItem
from pkdns.dht.krpc import NodeInfo, Response
from pkdns.dht.lookup import IterativeLookup
from pkdns.pkarr.client import to_item
from tests.support.clock import FakeClock
from tests.support.pkarr_factory import TS, keypair, packet

OWN = make_node_id(random.Random(5))
ITEM = to_item(packet(keypair(35), ["@ 300 IN TXT here"], TS))
TARGET = int.from_bytes(ITEM.target, "big")
AROUND_KEY = (TARGET >> (ID_BITS - 40), 40)
"""A cluster around the key: its members share 40 bits with it, as the lab's do."""
ELSEWHERE = ((TARGET ^ 1 << (ID_BITS - 1)) >> (ID_BITS - 40), 40)
"""A cluster around another key, in the far half."""


def _inside(prefix: tuple[int, int], rng: random.Random) -> bytes:
    value, bits = prefix
    return (value << (ID_BITS - bits) | rng.getrandbits(ID_BITS - bits)).to_bytes(20, "big")


def _get(clock: FakeClock, seeds: Sequence[NodeInfo] = ()) -> GetMutableLookup:
    return GetMutableLookup(ITEM.k, [(n.id, n.addr) for n in seeds], clock.monotonic(),
                            own_id=OWN)


class Recorder:
    """A find_node walk that asks no one: it keeps each walk as it starts, for the test to
    see which clusters it was told to pass by."""

    def __init__(self, clock: FakeClock) -> None:
        self.walks: list[IterativeLookup] = []
        self.clock = clock

    async def __call__(self, target: bytes, timeout: float,
                       started: Callable[[IterativeLookup], object]) -> list[Seed]:
        walk = IterativeLookup(target, [], self.clock.monotonic(), own_id=OWN)
        started(walk)
        self.walks.append(walk)
        return []


def _meets(*prefixes: tuple[int, int]) -> Callable[[IterativeLookup,
                                                      Callable[[MutableItem], None] | None],
                                                     object]:
    """A drive whose get meets clusters with these prefixes (as its replies would show)."""
    async def drive(lookup: IterativeLookup,
                    on_item: Callable[[MutableItem], None] | None) -> None:
        lookup.avoid(prefixes)
    return drive


async def test_a_get_passes_by_the_clusters_an_earlier_get_of_its_key_met() -> None:
    """Each round of a one-shot resolve is a new get: the next one knows the other keys'
    clusters the first met without meeting them again, but still asks the one around its own
    key (what it holds is the fallback); ten minutes on, it has forgotten both."""
    clock = FakeClock()
    around = Around(Recorder(clock), clock, set())
    await around.wrap(_meets(ELSEWHERE, AROUND_KEY))(_get(clock), None)
    seen: list[list[tuple[int, int]]] = []

    async def record(lookup: IterativeLookup,
                     on_item: Callable[[MutableItem], None] | None) -> None:
        assert isinstance(lookup, GetMutableLookup)
        seen.append(lookup.clusters())
    await around.wrap(record)(_get(clock), None)
    clock.advance(CLUSTERS_KEPT_FOR + 1)
    await around.wrap(record)(_get(clock), None)
    assert seen == [[ELSEWHERE], []]


async def test_the_walks_of_a_later_get_pass_by_the_clusters_an_earlier_get_met() -> None:
    """The second get hears only the cluster around its key and looks around: its walks
    pass by that cluster and the one elsewhere the first get met, and ask none of their
    members (kernel lab, traced: a third round's walks asked a cluster the first round's get
    had passed by, 83 of their 97 replies)."""
    clock, rng = FakeClock(), random.Random(7)
    recorder = Recorder(clock)
    around = Around(recorder, clock, set())
    await around.wrap(_meets(ELSEWHERE))(_get(clock), None)
    cluster = [NodeInfo(_inside(AROUND_KEY, rng), f"172.16.{n}.1", 6881) for n in range(16)]
    other = [NodeInfo(_inside(ELSEWHERE, rng), f"172.17.{n}.1", 6881) for n in range(16)]

    async def only_the_cluster(lookup: IterativeLookup,
                               on_item: Callable[[MutableItem], None] | None) -> None:
        now = clock.monotonic()
        while asked := lookup.next_requests(now):
            for c in asked:
                lookup.on_response(c.addr, Response(b"t", c.id or OWN, token=b"t", k=ITEM.k,
                                                    v=ITEM.v, sig=ITEM.sig, seq=ITEM.seq), now)
    before = len(recorder.walks)
    await around.wrap(only_the_cluster)(_get(clock, cluster), None)
    assert len(recorder.walks) > before
    for walk in recorder.walks[before:]:
        walk.add_seeds([(n.id, n.addr) for n in [*cluster, *other]])
        walk.add_seeds([(None, ("10.0.0.1", 6881))])  # a bootstrap host: asked
        asked = walk.next_requests(clock.monotonic())
        assert [c.addr for c in asked] == [("10.0.0.1", 6881)]
