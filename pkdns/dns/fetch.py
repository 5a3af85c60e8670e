"""Coalesced upstream fetches: one exchange per cache key, stored in the cache when it lands.

Every query for a key that is not fresh in the cache joins the key's :class:`Fetch` (or starts
it). The fetch is driven by :meth:`pkdns.dns.forwarder.Forwarder.start` callbacks; when the
reply lands it is walked once (:func:`pkdns.dns.cache.inspect_reply`), stored by the cache's TTL
policy, and handed to every waiter. So a reply that arrives after the first asker gave up still
fills the cache (Unbound ``discard-timeout`` semantics), and SERVFAIL/REFUSED/garbage/no answer
is remembered for :data:`pkdns.dns.cache.FAILURE_TTL` seconds (RFC 9520) instead. Only NOERROR,
NXDOMAIN and YXDOMAIN (a DNAME result too long, RFC 6672 §2.2) are answers: any other upstream
rcode (FORMERR, NOTIMP, ...) concerns our query to the upstream, not the client's, so the client
gets SERVFAIL rather than an rcode that would blame its own query.

Waiters are plain callbacks (the UDP/TCP miss path: no task and no future per query) or, for
coroutines that need a timeout (serve-stale, the pkarr side), a future made on demand.

A fetch belongs to no transport: a UDP, a TCP and a DoH query may all wait on it, so a
listener that drains never ends one (it stops waiting); the fetches still running when every
transport has drained are ended by :meth:`Fetches.close` (the daemon's final stop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pkdns import log
from pkdns.clock import Clock
from pkdns.dns import wire
from pkdns.dns.cache import Entry, ReplyInfo, WireCache, inspect_reply
from pkdns.dns.driver import Run
from pkdns.dns.forwarder import Forwarder
from pkdns.errors import DecodeError
from pkdns.metrics import Metrics

_log = log.get("fetch")
_ANSWER_RCODES = frozenset((0, wire.NXDOMAIN, 6))      # NOERROR, NXDOMAIN, YXDOMAIN
Waiter = Callable[[Entry | None], None]
Guard = Callable[[bytes, ReplyInfo], ReplyInfo]
"""Rewrites a reply before it is stored (the ICANN rebinding filter, ``rebind_icann``)."""


class Fetch:
    """One key's fetch in progress; its result is the stored entry, or None on failure."""

    __slots__ = ("owner", "key", "waiters", "future", "finished", "entry", "run")

    def __init__(self, owner: Fetches, key: bytes) -> None:
        self.owner, self.key = owner, key
        self.waiters: list[Waiter] = []
        self.future: asyncio.Future[Entry | None] | None = None
        self.finished = False
        self.entry: Entry | None = None
        self.run: Run | None = None        # the upstream exchange, to cancel it at close

    def add(self, waiter: Waiter) -> None:
        """Call ``waiter(entry)`` when the fetch lands (at once if it already has)."""
        if self.finished:
            waiter(self.entry)
        else:
            self.waiters.append(waiter)

    def wait(self) -> asyncio.Future[Entry | None]:
        """A future for the result (shared: shield it before a timeout cancels it)."""
        if self.future is None:
            self.future = asyncio.get_running_loop().create_future()
            if self.finished:
                self.future.set_result(self.entry)
        return self.future

    def landed(self, reply: bytes | None) -> None:
        """The exchange's ``on_done`` (a bound method: cheaper than a partial per fetch)."""
        self.owner._landed(self, reply)

    def resolve(self, entry: Entry | None) -> None:
        self.finished, self.entry = True, entry
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            try:
                waiter(entry)
            except Exception:
                _log.exception("fetch_waiter_failed")
        if self.future is not None and not self.future.done():
            self.future.set_result(entry)


class Fetches:
    """The fetches in progress, by cache key (bounded by ``max_inflight``)."""

    def __init__(self, cache: WireCache, forwarder: Forwarder, metrics: Metrics,
                 clock: Clock) -> None:
        self.cache, self.forwarder, self.metrics, self.clock = cache, forwarder, metrics, clock
        self._inflight: dict[bytes, Fetch] = {}
        self.guard: Guard | None = None     # applied on insert, so cache hits never pay for it

    def __len__(self) -> int:
        return len(self._inflight)

    def get(self, key: bytes, budget: float, max_inflight: int) -> Fetch | None:
        """The fetch for ``key`` (a cache key: wire question + DO/CD flags byte), started if
        needed with ``budget`` seconds; None when ``max_inflight`` are running."""
        fetch = self._inflight.get(key)
        if fetch is None:
            if len(self._inflight) >= max_inflight:
                self.metrics.dropped.labels("inflight_cap").inc()
                return None
            fetch = self._inflight[key] = Fetch(self, key)
            flags = key[-1]
            fetch.run = self.forwarder.start(key[:-1], bool(flags & 2), bool(flags & 1),
                                             budget, fetch.landed)
        return fetch

    def _landed(self, fetch: Fetch, reply: bytes | None) -> None:
        key = fetch.key
        del self._inflight[key]          # a key gets a new fetch only once this one is gone
        now = self.clock.monotonic()
        entry, reason = None, "no upstream answered in time"
        if reply is not None:
            try:
                info = inspect_reply(reply)
                if info.rcode not in _ANSWER_RCODES:
                    reason = f"upstream rcode {info.rcode}"
                else:
                    if self.guard is not None:
                        info = self.guard(key, info)
                    entry = self.cache.store(key, info, now)
            except DecodeError as exc:
                reason = str(exc)
        if entry is None:
            self.cache.note_failure(key, now)
            if log.is_enabled("debug"):
                _log.debug("upstream_failed", qname=wire.name_text(key[:-5]),
                           qtype=(key[-5] << 8) | key[-4], reason=reason)
        fetch.resolve(entry)

    def close(self) -> None:
        """End every fetch still in progress (the daemon's final stop, once no transport is
        left to answer): its upstream exchange is stopped (sockets closed, nothing cached)
        and whoever still waits gets None, as on an upstream failure (SERVFAIL, or a stale
        answer)."""
        fetches, self._inflight = list(self._inflight.values()), {}
        for fetch in fetches:
            if fetch.run is not None:
                fetch.run.cancel()
            fetch.resolve(None)
