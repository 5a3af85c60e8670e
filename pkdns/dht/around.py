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
one-shot resolve looks again then).
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

Seed = tuple[bytes | None, Address]
Walk = Callable[[bytes, float], Awaitable[list[Seed]]]
"""A find_node walk toward a target for at most so many seconds: the closest that answered."""
Drive = Callable[[IterativeLookup, Callable[[MutableItem], None] | None], Awaitable[None]]

POLL = 0.05
"""Seconds between looks at a running get for a cluster (it shows within the first replies)."""
WALK_TIME = 2.0
"""Seconds a walk around a key may take: long enough for a lossy link's resends."""
KEYS_KEPT = 64
"""Keys whose surroundings are remembered for their next get."""


class Around:
    """Walks around hidden keys; what they found, per key, for the next get's seeds."""

    def __init__(self, walk: Walk, clock: Clock, keep: set[asyncio.Task[None]]) -> None:
        self._walk, self._clock, self._keep = walk, clock, keep
        self._found: OrderedDict[bytes, list[Seed]] = OrderedDict()
        self._running: dict[bytes, asyncio.Task[None]] = {}

    def seeds(self, target: bytes) -> list[Seed]:
        """The nodes walks around ``target`` found (empty unless a cluster hid it)."""
        return list(self._found.get(target, ()))

    def wrap(self, drive: Drive) -> Drive:
        """``drive`` with a look around beside each get (a find_node walk runs as it was).

        The look starts when the running get first needs it -- or when it ended needing it:
        on loopback a get that hears only a cluster is over in milliseconds -- and the get
        goes on from what it found, until its deadline. Not once a verified packet went out:
        a one-shot resolve waits for the get's end (kernel lab: cold medians 0.2 s longer)."""
        async def run(lookup: IterativeLookup,
                      on_item: Callable[[MutableItem], None] | None) -> None:
            if not isinstance(lookup, GetMutableLookup):
                return await drive(lookup, on_item)
            look: list[asyncio.Task[None]] = []

            async def watch() -> None:
                while lookup.best is not None or not (shells := lookup.hidden_shells()):
                    if self._clock.monotonic() >= lookup.deadline:
                        return
                    await asyncio.sleep(POLL)
                look.append(self._start(lookup, shells))
                await self._seed(lookup, look[0])

            watcher = asyncio.create_task(watch())
            try:
                await drive(lookup, on_item)
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            if lookup.best is not None:
                return  # answered: a look would only delay the end its caller may wait for
            if not look and (shells := lookup.hidden_shells()):
                look.append(self._start(lookup, shells))
            if look and self._clock.monotonic() < lookup.deadline:
                await self._seed(lookup, look[0])
                await drive(lookup, on_item)
        return run

    def _start(self, lookup: GetMutableLookup, shells: list[bytes]) -> asyncio.Task[None]:
        """The look around ``lookup``'s key: the one running, or a new one."""
        task = self._running.get(lookup.target)
        if task is None:
            left = max(0.1, min(WALK_TIME, lookup.deadline - self._clock.monotonic()))
            task = asyncio.create_task(self._look(lookup.target, shells, left))
            self._running[lookup.target] = task
            self._keep.add(task)  # outlives this get: the next one starts from its finds
            task.add_done_callback(self._keep.discard)
        return task

    async def _seed(self, lookup: GetMutableLookup, task: asyncio.Task[None]) -> None:
        await asyncio.shield(task)
        lookup.add_seeds(self.seeds(lookup.target))

    async def _look(self, target: bytes, shells: list[bytes], timeout: float) -> None:
        try:
            found = await asyncio.gather(*(self._walk(s, timeout) for s in shells),
                                         return_exceptions=True)
            seen = dict.fromkeys(seed for walk in found if isinstance(walk, list)
                                 for seed in walk)
            self._found[target] = list(seen)
            self._found.move_to_end(target)
            while len(self._found) > KEYS_KEPT:
                self._found.popitem(last=False)
        finally:
            self._running.pop(target, None)


__all__ = ["Around"]
