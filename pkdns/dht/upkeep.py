"""Routing-table upkeep (BEP 5) as a pure plan: what to do now, and when to look again.

The node's maintenance task (:meth:`pkdns.dht.node.DhtNode.maintain`) asks :meth:`Upkeep.due`
with ``now``, carries the plan out and reports bootstrap rounds back. Three jobs:

* re-bootstrap while the table is empty or tiny (fewer than ``min_nodes`` good entries),
  with backoff from 1 s doubling to 60 s (a partition must not turn into a tight loop, and
  the DHT must come back within a minute once it is reachable again); the backoff resets as
  soon as the table is healthy;
* ping questionable nodes (silent for 15 minutes, BEP 5); a ping that times out counts as a
  failure; after MAX_FAILS of them the entry is bad, replaced by a spare or newcomer, and
  dropped after DROP_AFTER (:mod:`pkdns.dht.routing`; a full bucket's newcomer has the node ping
  a questionable entry at once, :class:`pkdns.dht.routing.PingFirst`);
* refresh buckets not changed for 15 minutes with a find_node for a random id in range.

This module is the one owner of the bootstrap retry policy: the daemon (PkarrService) only
starts the task.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from pkdns.dht.routing import Entry, RoutingTable, random_id_in_bucket

MIN_NODES = 8
"""Below this many contacts (one bucket's worth) the table is "tiny": bootstrap again."""
INTERVAL = 60.0
"""Seconds between rounds when nothing is due sooner; BEP 5 timescales are 15 minutes."""
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0
PING_LIMIT = 16
REFRESH_LIMIT = 2
"""Per round, so a table that went idle is refreshed over a few minutes, not in one burst."""


@dataclass(frozen=True, slots=True)
class Plan:
    """One round: bootstrap first (if set), then the pings and refresh lookups."""

    bootstrap: bool = False
    ping: list[Entry] = field(default_factory=list)
    refresh: list[tuple[int, bytes]] = field(default_factory=list)
    """(bucket index, random target in it)."""


class Upkeep:
    """Decides the maintenance rounds of one routing table."""

    def __init__(self, now: float, rng: random.Random, *, min_nodes: int = MIN_NODES,
                 interval: float = INTERVAL, backoff_first: float = BACKOFF_FIRST,
                 backoff_max: float = BACKOFF_MAX) -> None:
        self.min_nodes, self.interval = min_nodes, interval
        self.backoff_first, self.backoff_max = backoff_first, backoff_max
        self._rng = rng
        self._next_bootstrap = now
        self.delay = backoff_first
        """The wait before the next bootstrap attempt if the current one leaves the table tiny."""

    def tiny(self, table: RoutingTable) -> bool:
        return table.good() < self.min_nodes

    def due(self, table: RoutingTable, now: float) -> Plan:
        """What to do now. A bootstrap round replaces pings and refreshes (it is itself a
        lookup for our own id, and a tiny table has little to ping)."""
        if not self.tiny(table):
            self.delay = self.backoff_first
        elif now >= self._next_bootstrap:
            return Plan(bootstrap=True)
        refresh = [(i, random_id_in_bucket(table.own_id, i, self._rng))
                   for i in table.stale_buckets(now, REFRESH_LIMIT)]
        return Plan(ping=table.questionable(now, PING_LIMIT), refresh=refresh)

    def bootstrapped(self, size: int, now: float) -> float:
        """A bootstrap round ended with ``size`` contacts; returns the retry delay used
        (0 when the table is healthy)."""
        if size >= self.min_nodes:
            self.delay = self.backoff_first
            return 0.0
        delay = self.delay
        self._next_bootstrap = now + delay
        self.delay = min(delay * 2, self.backoff_max)
        return delay

    def next_wakeup(self, table: RoutingTable, now: float) -> float:
        """Absolute time of the next round."""
        soon = now + self.interval
        if self.tiny(table):
            soon = min(soon, max(now, self._next_bootstrap))
        return soon
