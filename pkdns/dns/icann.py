"""ICANN names through the wire cache and the coalesced upstream fetches, with serve-stale.

One :class:`IcannPath` serves two callers: the resolver's slow path for ICANN queries
(:meth:`IcannPath.answer`: a parsed query in, reply bytes out) and the pkarr side, which follows
CNAME targets and NS delegations out of a key zone (:meth:`IcannPath.resolve` and
:meth:`IcannPath.query_server`, the :class:`pkdns.answer.answerer.IcannClient` seam). The pkarr
handler holds this object, never the resolver, so the two do not point at each other: the
resolver hands pkarr names to the handler, the handler asks ICANN names here.

The rules of :meth:`answer`: a fresh cache entry is rendered at once (a hit); else the key's one
upstream fetch is joined (stored in the cache by the fetch itself, so a late reply still fills
the cache, as Unbound does); with a stale entry (RFC 8767) the client waits only
``cache.stale_client_timeout`` for the fetch, then gets the stale answer with
``cache.stale_answer_ttl``; a key that failed recently (RFC 9520) or with too many fetches in
flight gets the stale answer or SERVFAIL at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import dnslib

from pkdns.clock import Clock
from pkdns.config import Config, HostPort
from pkdns.dns import wire
from pkdns.dns.cache import EXPIRES, STALE_UNTIL, Entry, WireCache, render
from pkdns.dns.fetch import Fetch
from pkdns.dns.forwarder import Forwarder
from pkdns.dns.querypolicy import edns_size, error
from pkdns.dns.tally import Tally
from pkdns.errors import UpstreamError
from pkdns.metrics import Metrics

STREAM_MAX = 65535


class IcannPath:
    """The ICANN side of the resolver (see the module docstring).

    ``fetch(key)`` is the shared upstream fetch for a cache key, or None when too many are in
    flight (the resolver's, with its deadline and in-flight limit).
    """

    live = ("cache.stale_answer_ttl", "cache.stale_client_timeout", "dns.upstream_timeout")
    """Options applied on reload (:class:`pkdns.reload.Live`)."""

    def __init__(self, cfg: Config, cache: WireCache, fetch: Callable[[bytes], Fetch | None],
                 forwarder: Forwarder, clock: Clock, metrics: Metrics, tally: Tally) -> None:
        self.cache, self.fetch, self.forwarder = cache, fetch, forwarder
        self.dns, self.caching = cfg.dns, cfg.cache      # the sections it reads
        self.clock, self.metrics = clock, metrics
        self._hits, self._misses = tally.hits, tally.misses
        self._rng = random.SystemRandom()

    def reconfigure(self, old: Config, cfg: Config) -> None:
        self.dns, self.caching = cfg.dns, cfg.cache

    def hit(self, q: wire.Query, entry: Entry | None, limit: int, now: float) -> bytes | None:
        """The reply from ``entry`` when it is fresh (counted as a hit), else None (a miss)."""
        if entry is None or now >= entry[EXPIRES]:
            self._misses[0] += 1
            return None
        self._hits[0] += 1
        return render(entry, q.wire, q.qend, edns_size(q), q.do, limit, now)

    async def answer(self, q: wire.Query, limit: int) -> bytes:
        """The reply to ``q``, at most ``limit`` bytes (never raises for DNS failures)."""
        now = self.clock.monotonic()
        entry = self.cache.get(q.key)
        hit = self.hit(q, entry, limit, now)
        if hit is not None:
            return hit
        stale = entry if entry is not None and now < entry[STALE_UNTIL] else None
        fetch = None if self.cache.failing(q.key, now) else self.fetch(q.key)
        if fetch is not None:
            wait = self.caching.stale_client_timeout if stale is not None else None
            try:
                fresh = await asyncio.wait_for(asyncio.shield(fetch.wait()), wait)
            except TimeoutError:
                fresh = None
            if fresh is not None:
                now = self.clock.monotonic()
                return render(fresh, q.wire, q.qend, edns_size(q), q.do, limit, now)
        if stale is not None:
            self.metrics.stale_served.labels("icann").inc()
            return render(stale, q.wire, q.qend, edns_size(q), q.do, limit, now,
                          stale_ttl=self.caching.stale_answer_ttl)
        return error(q, wire.SERVFAIL)

    async def resolve(self, qname: str, qtype: int) -> dnslib.DNSRecord:
        """An ICANN lookup through the cache and the upstreams, as a dnslib record (the rcode
        says how it went: SERVFAIL when the upstreams failed)."""
        packet = wire.build_query(self._rng.getrandbits(16), wire.name_wire(qname.lower()),
                                  qtype, wire.C_IN, False, False)
        reply = await self.answer(wire.parse_query(packet), STREAM_MAX)
        return dnslib.DNSRecord.parse(reply)

    async def query_server(self, addr: HostPort, query: dnslib.DNSRecord) -> dnslib.DNSRecord:
        """Send ``query`` to one server (NS delegation) and return its validated reply;
        :class:`UpstreamError` on a timeout or a bad reply."""
        packet = bytes(query.pack())
        reply = await self.forwarder.query_server(addr, packet, self.dns.upstream_timeout)
        try:
            return dnslib.DNSRecord.parse(reply)
        except Exception as exc:  # dnslib raises assorted types on bad bytes
            raise UpstreamError(f"unparseable reply from {addr[0]}: {exc}") from None


__all__ = ["STREAM_MAX", "IcannPath"]
