"""Per-query accounting: counters as plain ints, and the per-query debug line.

Counters are added into the prometheus metrics when they are read.

Why: ``prometheus_client`` takes a lock and makes three Python calls per ``inc()``; two of those
per cache hit were ~10 % of a hit's CPU. A hit now does ``cell[0] += 1`` on a list it already
holds, and :meth:`Tally.flush` moves the sums into the real counters (``pkdns_queries``,
``pkdns_cache_hits``, ``pkdns_cache_misses``) just before every ``/metrics`` render
(:meth:`pkdns.metrics.Metrics.on_render`), so a scrape never sees a stale value.
"""

from __future__ import annotations

from typing import Any

from pkdns import log
from pkdns.dns import wire
from pkdns.metrics import Metrics

_log = log.get("resolver")

RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
               5: "REFUSED", 16: "BADVERS"}

Cell = list[int]
"""One counter: ``cell[0]`` is the count not yet flushed."""


class Tally:
    """Cells keyed by (transport, rcode, kind, cache hit), plus the cache-miss count."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._cells: dict[tuple[str, int, str, bool], tuple[Cell, Any]] = {}
        self.hits: Cell = [0]           # hits counted outside the cells (slow path)
        self.misses: Cell = [0]
        metrics.on_render(self.flush)

    def cell(self, transport: str, rcode: int, kind: str, hit: bool = False) -> Cell:
        """The cell for one label set; the prometheus child is created now, so the series
        shows up (at 0) on the next scrape even before the first flush."""
        key = (transport, rcode, kind, hit)
        found = self._cells.get(key)
        if found is None:
            child = self.metrics.queries.labels(transport, RCODE_NAMES.get(rcode, str(rcode)),
                                                kind)
            found = self._cells[key] = ([0], child)
        return found[0]

    def flush(self) -> None:
        """Add every pending count to its prometheus counter."""
        for (_t, _r, _k, hit), (cell, child) in list(self._cells.items()):
            n = cell[0]
            if n:
                cell[0] = 0
                child.inc(n)
                if hit:
                    self.metrics.cache_hits.inc(n)
        for cell, counter in ((self.hits, self.metrics.cache_hits),
                              (self.misses, self.metrics.cache_misses)):
            n = cell[0]
            if n:
                cell[0] = 0
                counter.inc(n)


def log_query(client: str, transport: str, data: bytes, qend: int, reply: bytes, kind: str,
              cache: str) -> None:
    """The one ``query`` line per query at debug level, whatever path answered it.

    ``cache`` is hit, miss or - (not a cacheable answer). Callers test ``Resolver.debug``
    first, so with debug off no query pays more than that test (issue 6).
    """
    _log.debug("query", client=client, transport=transport,
               qname=wire.name_text(data[12:qend - 4].lower()),
               qtype=(data[qend - 4] << 8) | data[qend - 3], rcode=reply[3] & 0x0F,
               kind=kind, cache=cache)
