"""The embedded Mainline DHT node: the facade the resolver, publisher and CLI call.

Wiring only: the pure parts (routing, tokens, storage, responder, lookups) decide, this module
owns the socket, the clock and the tasks. A lookup runs as ``next_requests -> send -> feed
back -> wait for the next wake-up`` (style.md §2.4). ``mode="client"`` is BEP 43 read-only:
queries are sent with ``ro=1`` and incoming queries are not answered (reliability.md §2.5
recommends this for resolvers); ``mode="server"`` answers and stores, rate-limited per IP.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence

from pkdns import log
from pkdns.clock import SYSTEM_CLOCK, Clock
from pkdns.dht.ids import make_node_id
from pkdns.dht.item import MutableItem
from pkdns.dht.krpc import Address, ErrorMessage, Query
from pkdns.dht.lookup import GetMutableLookup, IterativeLookup, Outcome, PutMutable, PutResult
from pkdns.dht.ratelimit import PerIpLimiter
from pkdns.dht.responder import Responder
from pkdns.dht.routing import RoutingTable
from pkdns.dht.storage import ItemStore
from pkdns.dht.tokens import TokenManager
from pkdns.dht.transport import KrpcProtocol, Reply
from pkdns.errors import DhtError

__all__ = ["DhtNode", "GetQuery", "MutableItem", "Outcome", "PutResult", "ResolveHost"]

CLIENT_VERSION = b"PD\x00\x01"
PUT_FANOUT = 20
"""Put to the closest 20 nodes that gave a token (mainline's K)."""

ResolveHost = Callable[[str, int], Awaitable[list[Address]]]
_log = log.get("pkdns.dht")


async def system_resolve(host: str, port: int) -> list[Address]:
    """Default ``resolve_host``: asyncio getaddrinfo, IPv4 only (the DHT socket is IPv4)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
    return [(str(i[4][0]), int(i[4][1])) for i in infos]


class GetQuery:
    """Async iterator of verified items, newest-so-far only; ``outcome`` once exhausted."""

    def __init__(self, node: DhtNode, lookup: GetMutableLookup) -> None:
        self._node = node
        self._lookup = lookup
        self._queue: asyncio.Queue[MutableItem | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    @property
    def outcome(self) -> Outcome:
        return self._lookup.outcome

    @property
    def lookup(self) -> GetMutableLookup:
        return self._lookup

    @property
    def best(self) -> MutableItem | None:
        """The most recent verified item seen so far."""
        return self._lookup.best

    def __aiter__(self) -> GetQuery:
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        try:
            await self._node._drive(self._lookup, self._queue.put_nowait)
        finally:
            self._queue.put_nowait(None)

    async def __anext__(self) -> MutableItem:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # stay exhausted
            raise StopAsyncIteration
        return item

    async def collect(self) -> list[MutableItem]:
        """Run to the end; every newer item in arrival order (the last is the newest)."""
        return [item async for item in self]

    async def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class DhtNode:
    """A BEP 5/43/44 node. Create, ``await start()``, ``await bootstrap(...)``, use, ``close``."""

    def __init__(self, *, mode: str = "client", request_timeout: float = 2.0,
                 clock: Clock = SYSTEM_CLOCK, max_stored_items: int = 10000,
                 max_stored_bytes: int = 16 * 1024 * 1024, request_rate_limit: float = 20.0,
                 node_id: bytes | None = None, external_ip: str | None = None,
                 resolve_host: ResolveHost | None = None, rng: random.Random | None = None,
                 max_queried: int = 128) -> None:
        if mode not in ("client", "server"):
            raise ValueError(f"mode must be client or server, not {mode!r}")
        self.mode = mode
        self.request_timeout = request_timeout
        self.max_queried = max_queried
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self.id = node_id or make_node_id(self._rng, external_ip)
        self._resolve = resolve_host or system_resolve
        now = clock.monotonic()
        self.table = RoutingTable(self.id)
        self.store = ItemStore(max_stored_items, max_stored_bytes)
        self._responder = Responder(self.id, self.table, TokenManager(self._rng, now), self.store)
        self._limiter = PerIpLimiter(request_rate_limit)
        self._protocol: KrpcProtocol | None = None
        self._address: Address | None = None
        self.rate_limited = 0

    @property
    def read_only(self) -> bool:
        return self.mode != "server"

    async def start(self, host: str = "0.0.0.0", port: int = 6881) -> None:
        """Bind the UDP socket (``port=0`` picks a free one)."""
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: KrpcProtocol(self._on_query, self._rng, CLIENT_VERSION),
                local_addr=(host, port), family=socket.AF_INET)
        except OSError as exc:
            raise DhtError(f"cannot bind DHT socket {host}:{port}: {exc.strerror}") from None
        self._protocol = protocol
        sock = transport.get_extra_info("sockname")
        self._address = (str(sock[0]), int(sock[1]))

    @property
    def address(self) -> Address:
        if self._address is None:
            raise DhtError("DHT node not started")
        return self._address

    @property
    def protocol(self) -> KrpcProtocol:
        if self._protocol is None:
            raise DhtError("DHT node not started")
        return self._protocol

    # -- incoming queries ---------------------------------------------------------------
    def _on_query(self, q: Query, addr: Address) -> None:
        if self.read_only:
            return  # BEP 43: read-only nodes do not answer
        now = self._clock.monotonic()
        if not self._limiter.allow(addr[0], now):
            self.rate_limited += 1
            return
        if not q.read_only:
            self.table.add(q.id, addr[0], addr[1], now)
        self.protocol.send(self._responder.handle(q, addr, now), addr)

    # -- lookups --------------------------------------------------------------------------
    def _seeds(self, target: bytes) -> list[tuple[bytes | None, Address]]:
        return [(e.id, e.addr) for e in self.table.closest(target, 32)]

    def _query_for(self, lookup: IterativeLookup) -> Query:
        seq = lookup.seq_floor if isinstance(lookup, GetMutableLookup) else None
        return Query(tid=b"", method=lookup.method, id=self.id,
                     target=lookup.target, seq=seq, read_only=self.read_only)

    async def _ask(self, addr: Address, query: Query) -> Reply | None:
        reply = await self.protocol.request(addr, query, self.request_timeout)
        now = self._clock.monotonic()
        if reply is None:
            self.table.failed(*addr)
        elif not isinstance(reply, ErrorMessage):
            self.table.add(reply.id, addr[0], addr[1], now)
        return reply

    async def _drive(self, lookup: IterativeLookup,
                     on_item: Callable[[MutableItem], None] | None = None) -> None:
        wake = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()
        query = self._query_for(lookup)

        async def one(addr: Address) -> None:
            reply = await self._ask(addr, query)
            now = self._clock.monotonic()
            if reply is None:
                lookup.on_timeout(addr, now)
            elif isinstance(reply, ErrorMessage):
                lookup.on_error(addr, reply, now)
            else:
                item = lookup.on_response(addr, reply, now)
                if item is not None and on_item is not None:
                    on_item(item)
            wake.set()

        try:
            while True:
                now = self._clock.monotonic()
                for c in lookup.next_requests(now):
                    task = asyncio.create_task(one(c.addr))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if lookup.done(now):
                    break
                wake.clear()
                delay = max(0.0, lookup.next_wakeup(now) - now)
                try:
                    await asyncio.wait_for(wake.wait(), delay + 0.001)
                except TimeoutError:
                    pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _resolve_all(self, nodes: Iterable[tuple[str, int]]) -> list[Address]:
        out: list[Address] = []
        for host, port in nodes:
            try:
                out.extend((await self._resolve(host, port))[:4])
            except (OSError, UnicodeError) as exc:
                _log.warning("dht_bootstrap_unresolved", host=host, error=str(exc))
        return list(dict.fromkeys(out))

    async def bootstrap(self, nodes: Sequence[tuple[str, int]], *, timeout: float = 10.0) -> int:
        """Find our neighbourhood through ``nodes`` (host names allowed); return the table size."""
        seeds: list[tuple[bytes | None, Address]] = [
            (None, a) for a in await self._resolve_all(nodes) if a != self._address]
        seeds += self._seeds(self.id)
        lookup = IterativeLookup(self.id, seeds, self._clock.monotonic(), timeout=timeout,
                                 own_id=self.id, max_queried=self.max_queried)
        await self._drive(lookup)
        return len(self.table)

    def get_mutable(self, public_key: bytes, seq_floor: int | None = None, *,
                    timeout: float = 5.0) -> GetQuery:
        """Start a BEP 44 get; iterate the result for verified items as they arrive."""
        lookup = GetMutableLookup(public_key, [], self._clock.monotonic(), seq_floor=seq_floor,
                                  timeout=timeout, own_id=self.id, max_queried=self.max_queried)
        lookup.add_seeds(self._seeds(lookup.target))
        return GetQuery(self, lookup)

    async def put_mutable(self, item: MutableItem, *, timeout: float = 5.0) -> PutResult:
        """Get tokens from the closest nodes, then ``put`` to the closest 20 that gave one."""
        start = self._clock.monotonic()
        query = self.get_mutable(item.k, item.seq - 1, timeout=timeout)
        await query.collect()
        lookup = query.lookup
        remaining = max(0.5, timeout - (self._clock.monotonic() - start))
        put = PutMutable(item, lookup.put_targets(PUT_FANOUT), lookup.held,
                         self._clock.monotonic(), remaining)

        async def one(addr: Address, token: bytes) -> None:
            q = Query(tid=b"", method="put", id=self.id, token=token, k=item.k, v=item.v,
                      sig=item.sig, seq=item.seq, target=item.target, read_only=self.read_only)
            reply = await self._ask(addr, q)
            now = self._clock.monotonic()
            if reply is None:
                put.on_timeout(addr, now)
            elif isinstance(reply, ErrorMessage):
                put.on_error(addr, reply, now)
            else:
                put.on_response(addr, now)

        await asyncio.gather(*(one(a, t) for a, t in put.next_requests(self._clock.monotonic())))
        return put.finish()

    # -- table ----------------------------------------------------------------------------
    def routing_table_size(self) -> int:
        return len(self.table)

    def estimated_network_size(self) -> int:
        return self.table.estimated_size()

    def export_nodes(self) -> list[tuple[bytes, str, int]]:
        """Contacts worth saving in the state dir (good ones first)."""
        return [(e.id, e.host, e.port) for e in sorted(self.table.entries(),
                                                       key=lambda e: (e.fails, -e.last_seen))]

    def import_nodes(self, nodes: Iterable[tuple[bytes, str, int]]) -> None:
        self.table.import_nodes(nodes, self._clock.monotonic())

    async def close(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
            await asyncio.sleep(0)
