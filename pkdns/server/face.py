"""The HTTP face as one daemon component, and the adapters onto the daemon's real parts.

:class:`HttpFace` builds the aiohttp app (DoH over the resolver, the relay API and status
page over the pkarr packet source and the DHT node, metrics) and serves it on ``http.listen``.
The composition root creates it, sets :attr:`HttpFace.source` / :attr:`HttpFace.dht` when it
has them, and adds it to the daemon (``daemon.add(face)``).

Relay semantics on top of :class:`pkdns.answer.source.PkarrSource`: CacheFirst misses go
through the source's coalesced DHT + relay lookup, which serves a stale packet at once while it
refreshes (RFC 8767), as DNS answers do; NetworkOnly runs its own full DHT query and feeds a
newer result back into the source. Both that query and PUTs go through a DHT-only
:class:`~pkdns.pkarr.client.PkarrClient` (a relay does not ask other relays), so they follow
the same rules as every other lookup and publish. """

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pkdns.answer.packets import PacketSource, Status
from pkdns.clock import Clock
from pkdns.config import Config, format_hostport
from pkdns.dns.ratelimit import RateLimiter, Verdict
from pkdns.metrics import Metrics
from pkdns.pkarr.client import Dht, PkarrClient, Published
from pkdns.pkarr.keys import PublicKey
from pkdns.pkarr.signed_packet import SignedPacket
from pkdns.server.dashboard import Dashboard
from pkdns.server.http import DnsEntry, HttpServer, build_app
from pkdns.server.relay_api import Cached, Fetched, RelayApi
from pkdns.server.status import DaemonStatus, DhtInfo, StatusPage


class Node(Dht, DhtInfo, Protocol):
    """``DhtNode`` as the face sees it: what the pkarr client asks of it (the relay API) and
    what the status page shows."""


class ClockedLimiter:
    """``http.relay_rate_limit`` token buckets per client IP (pkarr relay's ``user_dht_quota``)."""

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        self._limiter = RateLimiter(rate, burst)
        self._clock = clock

    def allow(self, client: str) -> bool:
        return self._limiter.check(client, self._clock.monotonic()) is Verdict.PASS


class SourceStore:
    """:class:`pkdns.server.relay_api.RelayStore` over the daemon's packet source."""

    def __init__(self, source: PacketSource, client: PkarrClient | None, clock: Clock,
                 min_ttl: int, max_ttl: int, lookup_timeout: float) -> None:
        self._source, self._client, self._clock = source, client, clock
        self._ttl = (min_ttl, max_ttl)
        self._timeout = lookup_timeout

    def cached(self, key: PublicKey) -> Cached | None:
        entry = self._source.held(key)
        if entry is None:
            return None
        age = self._clock.monotonic() - entry.fetched_at
        last_seen = self._clock.wall_us() - int(age * 1_000_000)
        return Cached(entry.packet, last_seen, age < entry.packet.ttl(*self._ttl))

    async def fetch(self, key: PublicKey, floor: SignedPacket | None) -> Fetched:
        if floor is None and self._client is not None:
            return await self._network_only(key, self._client)
        lookup = await self._source.get(key, "relay")
        if lookup.status is Status.FOUND:
            return Fetched(lookup.packet)
        return Fetched(None, responded=lookup.status is Status.NOT_FOUND)

    async def _network_only(self, key: PublicKey, client: PkarrClient) -> Fetched:
        """A full DHT query, the newest valid packet (pkarr 7 NetworkOnly), fed back into the
        source; a newer DHT value that is no valid packet is reported instead of an older
        packet (the relay answers 404 with its seq)."""
        found = await client.resolve_most_recent(key, timeout=self._timeout)
        best, invalid_seq = found.best, found.newest_invalid_seq
        if best is not None:
            self._source.insert(best)
            if invalid_seq is None or best.timestamp >= invalid_seq:
                return Fetched(best)
        return Fetched(None, responded=found.dht_absent, invalid_seq=invalid_seq)

    def store(self, packet: SignedPacket) -> None:
        self._source.insert(packet)


class DhtPublisher:
    """:class:`pkdns.server.relay_api.Publisher`: a BEP 44 put of the packet's mutable item,
    through the pkarr client (its rules say what a conflict is)."""

    def __init__(self, client: PkarrClient, timeout: float = 5.0) -> None:
        self._client, self._timeout = client, timeout

    async def publish(self, packet: SignedPacket) -> Published:
        publication = await self._client.publish(packet, timeout=self._timeout)
        return publication.dht or Published(0, error="no DHT node to publish to")


class HttpFace:
    """The HTTP listener as a daemon component."""

    name = "http"

    def __init__(self, cfg: Config, clock: Clock, metrics: Metrics, dns: DnsEntry | None,
                 started: float, dns_listeners: Callable[[], Sequence[str]] = tuple,
                 cache_stats: Callable[[], dict[str, Any]] | None = None,
                 source: PacketSource | None = None, dht: Node | None = None) -> None:
        self.cfg, self.clock, self.metrics, self.dns = cfg, clock, metrics, dns
        self.source, self.dht = source, dht
        self.status = DaemonStatus(clock, started, cfg.dht.mode, cache_stats=cache_stats)
        self.dashboard = Dashboard(metrics, clock, self._snapshot)
        self._dns_listeners = dns_listeners
        self.server: HttpServer | None = None
        self.addresses: list[tuple[str, int]] = []

    def relay_api(self) -> RelayApi | None:
        """The relay API over whatever parts are attached (None without a packet source)."""
        if self.source is None:
            return None
        p = self.cfg.pkarr
        client = PkarrClient(self.dht, clock=self.clock) if self.dht is not None else None
        store = SourceStore(self.source, client, self.clock, p.min_ttl, p.max_ttl,
                            p.lookup_timeout)
        publisher = DhtPublisher(client) if client is not None else None
        h = self.cfg.http
        limiter = ClockedLimiter(h.relay_rate_limit, h.relay_rate_limit_burst, self.clock)
        return RelayApi(store, publisher, limiter, self.clock, p.min_ttl, p.max_ttl,
                        self.metrics)

    async def start(self) -> None:
        relay = self.relay_api()
        self.status.dht = self.dht
        if self.source is not None:
            source = self.source
            self.status.packets_held = lambda: sum(1 for _ in source.cached())
        page = StatusPage(self._snapshot, relay)
        extra = [page.register, self.dashboard.register]
        extra += [relay.register] if relay is not None else []
        app = build_app(self.cfg.http, self.metrics, self.dns, extra, self._refresh_gauges)
        self.server = HttpServer(app, self.cfg.http.listen, grace=self.cfg.dns.query_deadline)
        self.addresses = await self.server.start()
        self.status.http_listeners = [format_hostport(a) for a in self.addresses]
        await self.dashboard.start()

    def _snapshot(self) -> dict[str, Any]:
        self.status.dns_listeners = list(self._dns_listeners())
        return self.status.snapshot()

    def _refresh_gauges(self) -> None:
        if self.dht is not None:
            self.metrics.dht_routing_table.set(self.dht.routing_table_size())
            health = self.dht.health_snapshot()
            self.metrics.dht_reachable.set(1 if health["reachable"] else 0)
            ratio, age = health["answered_ratio"], health["last_found_age"]
            self.metrics.dht_answered_ratio.set(ratio if isinstance(ratio, float) else 0.0)
            self.metrics.dht_last_found_age.set(age if isinstance(age, float) else -1.0)
            loss = health.get("round_trip_loss")
            self.metrics.dht_loss.set(loss if isinstance(loss, float) else 0.0)

    async def stop(self) -> None:
        await self.dashboard.stop()
        if self.server is not None:
            await self.server.stop()
