"""Looking around a key that a Sybil cluster hides: the asyncio side of
:meth:`pkdns.dht.getlookup.GetMutableLookup.hidden_shells`.

Kernel lab (issue 12), five clusters of 16 announcing themselves to the swarm for twenty
minutes: every node asked about a clustered key named only the cluster's members, its 8
closest, so one-shot lookups knew the cluster and two or three nodes far away, never the
honest nodes around the key that hold its newest packet, and ended on the cluster's older one.
Walks toward targets next to the key, one per shell below the cluster, find those nodes (the
cluster is farther from each such target than anyone in its shell). They start as soon as a
get suspects a cluster and knows fewer than k nodes beyond it, run beside the get, and what
they find becomes its seeds -- and the next get's for that key, if this one ended first (a
one-shot resolve looks again then). A look whose walks brought the get new referrers (live
nodes beyond the cluster: they answered it, or the walks) is followed by another, walking
from them and toward their neighbourhoods, until one brings none or the get's time is up.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from pkdns.clock import Clock
from pkdns.dht.getlookup import GetMutableLookup
from pkdns.dht.item import MutableItem
from pkdns.dht.krpc import Address
from pkdns.dht.lookup import IterativeLookup
from pkdns.dht.sybil import Prefix, in_prefix

Seed = tuple[bytes | None, Address]
Walk = Callable[[bytes, float, Callable[[IterativeLookup], object]], Awaitable[list[Seed]]]
"""A find_node walk toward a target for at most so many seconds: the closest that answered.
The callback gets the walk as it starts (what it heard so far is read from it meanwhile)."""
Drive = Callable[[IterativeLookup, Callable[[MutableItem], None] | None], Awaitable[None]]

POLL = 0.05
"""Seconds between looks at a running get for a cluster (it shows within the first replies)."""
WALK_TIME = 2.0
"""Seconds a walk around a key may take: long enough for a lossy link's resends."""
KEYS_KEPT = 64
"""Keys whose surroundings are remembered for their next get."""
CLUSTERS_KEPT_FOR = 600.0
"""Seconds the clusters a key's gets met are remembered for its next gets: long enough for
the rounds of a resolve and a daemon's next queries, short enough that a neighbourhood once
taken for a cluster is soon asked again."""


class Around:
    """Walks around hidden keys; what they found, per key, for the next get's seeds."""

    def __init__(self, walk: Walk, clock: Clock, keep: set[asyncio.Task[None]]) -> None:
        self._walk, self._clock, self._keep = walk, clock, keep
        self._found: OrderedDict[bytes, list[Seed]] = OrderedDict()
        self._running: dict[bytes, asyncio.Task[None]] = {}
        self._walks: dict[bytes, list[IterativeLookup]] = {}
        self._clusters: OrderedDict[bytes, tuple[float, frozenset[Prefix]]] = OrderedDict()

    def seeds(self, target: bytes) -> list[Seed]:
        """The nodes walks around ``target`` found, or have found so far while they run
        (empty unless a cluster hid it)."""
        found = list(self._found.get(target, ()))
        for walk in self._walks.get(target, ()):
            found += [(c.id, c.addr) for c in walk.closest_responded(8)]
        return list(dict.fromkeys(found))

    def wrap(self, drive: Drive) -> Drive:
        """``drive`` with a look around beside each get (a find_node walk runs as it was).

        The look starts when the running get first needs it -- or when it ended needing it:
        on loopback a get that hears only a cluster is over before the first poll -- and
        what the walks hear goes to the get as it comes; a get that ran out of nodes to ask
        goes on from each new lot, until its deadline or the walks' end (kernel lab: a get
        that waited for every walk to end, dead nodes' timeouts included, had its first
        value 1.4-2.5 s in). Not once a verified packet went out: a one-shot resolve waits
        for the get's end (kernel lab: cold medians 0.2 s longer).

        When a look ends having brought the get new referrers, another starts from the table
        that now holds them (kernel lab, traced: the bootstrap host's own half named mostly
        dead nodes; the one live node a look found there answered only the next round's
        walks, and the resolve was out of rounds)."""
        async def run(lookup: IterativeLookup,
                      on_item: Callable[[MutableItem], None] | None) -> None:
            if not isinstance(lookup, GetMutableLookup):
                return await drive(lookup, on_item)
            self._pass_by(lookup)
            look: list[asyncio.Task[None]] = []
            given: set[Seed] = set()
            since = [0]  # the get's referrers when the running look began

            def begin(shells: list[bytes]) -> None:
                look[:] = [self._start(lookup, shells)]
                since[0] = lookup.referrers()
                lookup.looking_around = True

            async def watch() -> None:
                while lookup.best is not None or not (shells := lookup.hidden_shells()):
                    if self._clock.monotonic() >= lookup.deadline:
                        return
                    await asyncio.sleep(POLL)
                begin(shells)
                while await self._fresh(lookup, look[0], given):
                    pass

            watcher = asyncio.create_task(watch())
            try:
                await drive(lookup, on_item)
            finally:
                self._remember(lookup)  # also when the caller gave up on this get
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            if lookup.best is None and not look and (shells := lookup.hidden_shells()):
                begin(shells)
            while look and lookup.best is None and self._clock.monotonic() < lookup.deadline:
                if await self._fresh(lookup, look[0], given):
                    await drive(lookup, on_item)
                elif lookup.referrers() > since[0] and (shells := lookup.hidden_shells()):
                    begin(shells)  # the look found referrers: walks from them see more
                else:
                    break
            lookup.looking_around = False
            self._remember(lookup)
            if look and on_item is not None and (held := lookup.finish()) is not None:
                on_item(held)  # the walks are over: what only the cluster gave, if k beyond
        return run

    async def _fresh(self, lookup: GetMutableLookup, task: asyncio.Task[None],
                     given: set[Seed]) -> bool:
        """Wait until the walks around ``lookup``'s key heard of nodes not yet ``given`` to
        it, and give them (True); False once the walks ended with none."""
        while True:
            ended = task.done()
            new = [s for s in self.seeds(lookup.target) if s not in given]
            if new:
                given.update(new)
                lookup.add_heard(new)
                return True
            if ended:
                return False
            await asyncio.wait({task}, timeout=POLL)

    def _start(self, lookup: GetMutableLookup, shells: list[bytes]) -> asyncio.Task[None]:
        """The look around ``lookup``'s key: the one running, or a new one."""
        task = self._running.get(lookup.target)
        if task is None:
            left = max(0.1, min(WALK_TIME, lookup.deadline - self._clock.monotonic()))
            clusters = sorted(self._known(lookup.target) | set(lookup.clusters()))
            task = asyncio.create_task(self._look(lookup.target, shells, left, clusters))
            self._running[lookup.target] = task
            self._keep.add(task)  # outlives this get: the next one starts from its finds
            task.add_done_callback(self._keep.discard)
        return task

    def _known(self, target: bytes) -> frozenset[Prefix]:
        """The clusters earlier gets for ``target`` met, unless they are too old."""
        kept = self._clusters.get(target)
        if kept is None or self._clock.monotonic() - kept[0] > CLUSTERS_KEPT_FOR:
            return frozenset()
        return kept[1]

    def _remember(self, lookup: GetMutableLookup) -> None:
        """Keep the clusters ``lookup`` met for the next gets of its key: each round of a
        one-shot resolve is a new get (kernel lab, traced: a third round's walks asked a
        cluster its first round's get had passed by again, 83 of their 97 replies)."""
        known = self._known(lookup.target) | frozenset(lookup.clusters())
        if known:
            self._clusters[lookup.target] = (self._clock.monotonic(), known)
            self._clusters.move_to_end(lookup.target)
            while len(self._clusters) > KEYS_KEPT:
                self._clusters.popitem(last=False)

    def _pass_by(self, lookup: GetMutableLookup) -> None:
        """A new get passes by the clusters its key's earlier gets passed by (around other
        keys: the one around its own key it still asks, for the fallback it may hold)."""
        target = int.from_bytes(lookup.target, "big")
        lookup.avoid(p for p in self._known(lookup.target) if not in_prefix(target, p))

    async def _look(self, target: bytes, shells: list[bytes], timeout: float,
                    clusters: list[Prefix]) -> None:
        walks = self._walks.setdefault(target, [])

        def started(walk: IterativeLookup) -> None:
            walk.avoid(clusters)  # the get's clusters, not asked again by every walk
            walks.append(walk)

        try:
            found = await asyncio.gather(*(self._walk(s, timeout, started) for s in shells),
                                         return_exceptions=True)
            seen = dict.fromkeys(seed for walk in found if isinstance(walk, list)
                                 for seed in walk)
            self._found[target] = list(seen)
            self._found.move_to_end(target)
            while len(self._found) > KEYS_KEPT:
                self._found.popitem(last=False)
        finally:
            self._running.pop(target, None)
            self._walks.pop(target, None)


__all__ = ["Around"]
