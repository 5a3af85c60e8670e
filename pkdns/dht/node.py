"""The embedded Mainline DHT node: the facade the resolver, publisher and CLI call.

Wiring only: the pure parts (routing, tokens, storage, responder, lookups) decide, this module
owns the socket, the incoming side and the tasks; what goes out (paced, retransmitted queries
and the loop that drives a lookup) is :mod:`pkdns.dht.outbound`. ``mode="server"`` answers
and stores, rate-limited per IP. ``start_upkeep`` runs the routing-table maintenance of
:mod:`pkdns.dht.upkeep` (re-bootstrap with backoff, pings, bucket refreshes).

``mode="client"`` is BEP 43 read-only (a resolver only needs ``get``, and most of the
server-side attack surface disappears): every query carries ``ro=1`` -- ``put`` included -- and
no incoming query is answered, not even ``ping``. libtorrent (``node.cpp`` ``incoming_request``)
honours ``ro`` only for its ``heard_about`` call; after any ``put`` (or ``announce_peer``) with
a valid token it calls ``node_seen`` whatever ``ro`` said, so a read-only publisher lands in its
routing table and it then waits on us (its hard 15 s RPC timeout, ``rpc_manager.cpp``). We
rejected both other fixes: answering ``ping`` breaks BEP 43 ("no longer responds to 'query'
messages") and keeps us in libtorrent's table while its ``get``/``find_node`` to us still time
out; a ``put`` without ``ro`` changes nothing in libtorrent and tells every other
implementation to add a node that will not answer. Silent, we are failed on libtorrent's next
query or ping and replaced (``node_failed``): the least harm a read-only publisher can do
(a long-running daemon that publishes a lot should run ``mode = "server"``)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

from pkdns import log
from pkdns.clock import SYSTEM_CLOCK, Clock
from pkdns.dht.admission import QuerierCheck
from pkdns.dht.around import Around, Seed
from pkdns.dht.getlookup import GetMutableLookup
from pkdns.dht.getquery import GetQuery
from pkdns.dht.health import DhtHealth
from pkdns.dht.ids import make_node_id
from pkdns.dht.item import MutableItem
from pkdns.dht.join import RESEND_FIRST, SAVED_HELLOS, Greeter, ResolveHost, resolve_all
from pkdns.dht.krpc import Address, ErrorMessage, Query
from pkdns.dht.lookup import IterativeLookup, Outcome, PutMutable, PutResult
from pkdns.dht.outbound import Asker, drive, put_all
from pkdns.dht.pacing import PACE_LIMIT, PerIpLimiter, SendPacer
from pkdns.dht.resend import RETRANSMIT
from pkdns.dht.responder import Responder
from pkdns.dht.routing import PingFirst, RoutingTable
from pkdns.dht.rtt import RttEstimator
from pkdns.dht.storage import ItemStore
from pkdns.dht.tokens import TokenManager
from pkdns.dht.transport import KrpcProtocol
from pkdns.dht.upkeep import MIN_NODES, Upkeep
from pkdns.errors import DhtError

__all__ = ["DhtNode", "GetQuery", "MutableItem", "Outcome", "PutResult", "ResolveHost"]

CLIENT_VERSION = b"PD\x00\x01"
MIN_SIZE_CONTACTS = 8
"""Restored contacts from which the table's network-size estimate is trusted."""
PUT_FANOUT = 20
"""Put to the closest 20 nodes that gave a token (mainline's K)."""

_log = log.get("pkdns.dht")


class DhtNode:
    """A BEP 5/43/44 node. Create, ``await start()``, ``await bootstrap(...)``, use, ``close``."""

    def __init__(self, *, mode: str = "client", request_timeout: float = 2.0,
                 clock: Clock = SYSTEM_CLOCK, max_stored_items: int = 10000,
                 max_stored_bytes: int = 16 * 1024 * 1024, request_rate_limit: float = 20.0,
                 node_id: bytes | None = None, external_ip: str | None = None,
                 resolve_host: ResolveHost | None = None, rng: random.Random | None = None,
                 max_queried: int = 128, pace_limit: int = PACE_LIMIT,
                 min_nodes: int = MIN_NODES, join_resend: float = RESEND_FIRST,
                 retransmit: float = RETRANSMIT) -> None:
        if mode not in ("client", "server"):
            raise ValueError(f"mode must be client or server, not {mode!r}")
        self.mode, self.request_timeout, self.max_queried = mode, request_timeout, max_queried
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self.id = node_id or make_node_id(self._rng, external_ip)
        self._resolve = resolve_host
        now = clock.monotonic()
        self.table = RoutingTable(self.id, now=now, wide=True)
        self.store = ItemStore(max_stored_items, max_stored_bytes)
        self._responder = Responder(self.id, self.table, TokenManager(self._rng, now), self.store)
        self._limiter = PerIpLimiter(request_rate_limit)
        self._queriers = QuerierCheck()
        self.rtt = RttEstimator()
        """Round trips and answer rate, shared by every lookup (timeouts, parallelism)."""
        self.upkeep = Upkeep(now, self._rng, min_nodes=min_nodes)
        self._upkeep_task: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()
        self.joined = asyncio.Event()
        """Set once a bootstrap round left a good entry in the routing table."""
        self._size_known = False
        """Does the table hold our own neighbourhood (walked to our id, or restored)? Only then
        does :meth:`RoutingTable.estimated_size` mean something: from what a node that only
        joined (the CLI) knows, every key's neighbourhood would look like a Sybil cluster."""
        self.health = DhtHealth(now)
        """Asked/answered counters and the reachable verdict (status page, /metrics)."""
        self._asker = Asker(lambda: self.protocol, clock, self.health, SendPacer(pace_limit),
                            request_timeout, retransmit,
                            self._failed, self._seen, self.rtt)
        self._greeter = Greeter(self.id, self.read_only, self._asker.paced_request,
                                lambda i, a: self._seen(i, a, self._clock.monotonic()),
                                join_resend)
        self._around = Around(self._walk, clock, self._checks)
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
        self.protocol.send(self._responder.handle(q, addr, now), addr)
        if not q.read_only and self._queriers.consider(self.table, q.id, addr, now):
            self._spawn(self._verify(addr))  # BEP 5: good only once it answered us

    # -- lookups --------------------------------------------------------------------------
    def _seeds(self, target: bytes) -> list[Seed]:
        known: list[Seed] = [(e.id, e.addr) for e in self.table.closest(target, 32)]
        return self._greeter.seeds(known, target) + self._around.seeds(target)

    def _query_for(self, lookup: IterativeLookup) -> Query:
        seq = lookup.seq_floor if isinstance(lookup, GetMutableLookup) else None
        return Query(tid=b"", method=lookup.method, id=self.id,
                     target=lookup.target, seq=seq, read_only=self.read_only)

    @property
    def paced(self) -> int:
        """Queries not sent because that destination had had enough from us (SendPacer)."""
        return self._asker.paced

    def _seen(self, node_id: bytes, addr: Address, now: float) -> None:
        """Add a contact; a full bucket with a questionable entry has it pinged first."""
        self._greeter.answered(addr)
        if isinstance(added := self.table.add(node_id, addr[0], addr[1], now), PingFirst):
            self._spawn(self._check(added.entry.addr))

    def _failed(self, addr: Address) -> None:
        """A query to ``addr`` went unanswered: a failure for its entry, or for its hint."""
        self.table.failed(*addr)
        self._greeter.failed(addr)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _verify(self, addr: Address) -> None:
        """Ping a node that queried us; its answer adds it to the table (through :meth:`_ask`)."""
        try:
            await self.ping(addr)
        finally:
            self._queriers.finished(addr)

    async def _check(self, addr: Address | None) -> None:
        """BEP 5: ping questionable entries (each twice at most) until one stays silent."""
        while addr is not None:
            answered = await self.ping(addr) or await self.ping(addr)
            addr = self.table.pinged(*addr, answered, self._clock.monotonic())

    async def _drive(self, lookup: IterativeLookup,
                     on_item: Callable[[MutableItem], None] | None = None,
                     keep: set[asyncio.Task[None]] | None = None) -> None:
        await drive(lookup, self._query_for(lookup), self._asker.try_ask, self._clock,
                    self.health.found, on_item, keep)

    async def _walk(self, target: bytes, timeout: float = 5.0,
                    started: Callable[[IterativeLookup], object] = id) -> list[Seed]:
        """A find_node walk for the table (around a hidden key: the 8 closest that answered,
        the walk itself to ``started``); late answers join it (its queries go on in _checks)."""
        walk = IterativeLookup(
            target, self._seeds(target), self._clock.monotonic(), timeout=timeout, own_id=self.id,
            rtt=self.rtt, max_queried=self.max_queried, network_size=self.estimated_network_size())
        started(walk)
        await self._drive(walk, keep=self._checks)
        return [(c.id, c.addr) for c in walk.closest_responded(8)]

    async def join(self, nodes: Sequence[tuple[str, int]], *, timeout: float = 10.0,
                   target: bytes | None = None) -> bool:
        """Greet every bootstrap address and up to 16 saved contacts at once, resending to
        each with backoff (join.py); True as soon as one answered, False if none did.

        A one-shot command that will look up one key greets with ``find_node`` for that
        key's ``target``: the contacts the bootstrap hosts list are then the closest to it
        they know (on a small network, often its holders), a hop or two less to walk."""
        saved = [e.addr for e in self.table.closest(self.id, SAVED_HELLOS)]
        addrs = list(dict.fromkeys(await resolve_all(self._resolve, nodes, self._address) + saved))
        return await self._greeter.greet(addrs, timeout, self._checks, target)

    async def bootstrap(self, nodes: Sequence[tuple[str, int]], *, timeout: float = 10.0) -> int:
        """Join through ``nodes`` (host names allowed) and the saved contacts, then walk
        toward our own id; again while the table is empty and time is left. The table size."""
        deadline = self._clock.monotonic() + timeout
        while (left := deadline - self._clock.monotonic()) > 0.05:
            if not await self.join(nodes, timeout=left):
                break
            await self._walk(self.id, max(0.05, deadline - self._clock.monotonic()))
            if self.table.good() > 0:
                break
        if self.table.good() > 0:
            self.joined.set()
            self._size_known = True
        return self.table.good()

    # -- upkeep (BEP 5 table maintenance; decisions in upkeep.py) -------------------------
    def start_upkeep(self, bootstrap: Sequence[tuple[str, int]]) -> None:
        """Run :meth:`maintain` in the background until :meth:`close`: the node bootstraps
        at once (and again, with backoff, whenever the table is tiny) and keeps its table
        fresh. The daemon calls this instead of :meth:`bootstrap`."""
        if self._upkeep_task is None:
            self._upkeep_task = asyncio.get_running_loop().create_task(
                self._upkeep_loop(list(bootstrap)))

    async def _upkeep_loop(self, bootstrap: list[tuple[str, int]]) -> None:
        while True:
            try:
                next_at = await self.maintain(bootstrap)
            except Exception:  # one bad round must not end maintenance
                _log.exception("dht_upkeep_failed")
                next_at = self._clock.monotonic() + self.upkeep.backoff_max
            await asyncio.sleep(max(0.0, next_at - self._clock.monotonic()))

    async def maintain(self, bootstrap: Sequence[tuple[str, int]]) -> float:
        """One upkeep round; returns the (clock) time the next one is due."""
        plan = self.upkeep.due(self.table, self._clock.monotonic())
        if plan.bootstrap:
            await self._bootstrap_round(bootstrap)
        await asyncio.gather(*(self.ping(e.addr) for e in plan.ping))
        for index, target in plan.refresh:
            await self._walk(target)
            self.table.refreshed(index, self._clock.monotonic())
        return self.upkeep.next_wakeup(self.table, self._clock.monotonic())

    async def _bootstrap_round(self, nodes: Sequence[tuple[str, int]]) -> None:
        had = self.joined.is_set()
        try:
            size = await self.bootstrap(nodes)
        except Exception as exc:  # a failed round is retried, never fatal
            _log.warning("dht_bootstrap_failed", error=repr(exc))
            size = self.table.good()
        retry = self.upkeep.bootstrapped(size, self._clock.monotonic())
        if size > 0 and not had:
            _log.info("dht_bootstrapped", nodes=size)
        if retry and size == 0:
            _log.warning("dht_bootstrap_empty", retry_in=retry)
        elif retry:
            _log.info("dht_bootstrap_tiny", nodes=size, retry_in=retry)

    async def ping(self, addr: Address) -> bool:
        """BEP 5 ping; True if it answered (a reply refreshes its table entry, a timeout fails)."""
        reply = await self._asker.ask(addr, Query(tid=b"", method="ping", id=self.id,
                                                  read_only=self.read_only))
        return reply is not None and not isinstance(reply, ErrorMessage)

    def get_mutable(self, public_key: bytes, seq_floor: int | None = None, *,
                    timeout: float = 5.0) -> GetQuery:
        """Start a BEP 44 get; iterate the result for verified items as they arrive."""
        lookup = GetMutableLookup(public_key, [], self._clock.monotonic(), seq_floor=seq_floor,
                                  timeout=timeout, own_id=self.id, max_queried=self.max_queried,
                                  rtt=self.rtt, network_size=self.estimated_network_size())
        lookup.add_seeds(self._seeds(lookup.target))
        return GetQuery(self._around.wrap(self._drive), lookup)

    async def put_mutable(self, item: MutableItem, *, timeout: float = 5.0) -> PutResult:
        """Get tokens from the closest nodes, then ``put`` to the closest 20 that gave one."""
        start = self._clock.monotonic()
        query = self.get_mutable(item.k, item.seq - 1, timeout=timeout)
        await query.collect()
        lookup = query.lookup
        remaining = max(0.5, timeout - (self._clock.monotonic() - start))
        put = PutMutable(item, lookup.put_targets(PUT_FANOUT), lookup.held,
                         self._clock.monotonic(), remaining, lookup.outcome.converged)
        await put_all(put, item, self.id, self.read_only, self._asker.ask, self._clock)
        return put.finish()

    # -- table ----------------------------------------------------------------------------
    def routing_table_size(self) -> int:
        return self.table.good()

    def estimated_network_size(self) -> int:
        """The table's estimate of Mainline's size; 0 (unknown) until :attr:`_size_known`."""
        return self.table.estimated_size() if self._size_known else 0

    def reachable(self) -> bool:
        """False while the DHT stays silent to us (UDP blocked?): :mod:`pkdns.dht.health`."""
        return self.health.reachable(self._clock.monotonic())

    def health_snapshot(self) -> dict[str, object]:
        """The health verdict and counters, plus how lossy the link looks (resend.py)."""
        return {**self.health.snapshot(self._clock.monotonic()).as_dict(),
                "round_trip_loss": round(self._asker.resends.loss, 3)}

    def export_nodes(self) -> list[tuple[bytes, str, int]]:
        """Contacts worth saving in the state dir (good ones first)."""
        return [(e.id, e.host, e.port) for e in sorted(self.table.entries(),
                                                       key=lambda e: (e.fails, -e.last_seen))]

    def import_nodes(self, nodes: Iterable[tuple[bytes, str, int]]) -> None:
        """Saved contacts: a daemon's table from before the restart (walked to our id)."""
        kept = self.table.import_nodes(nodes, self._clock.monotonic())
        self._size_known = self._size_known or kept >= MIN_SIZE_CONTACTS

    async def settle(self) -> None:
        """Wait until the background checks (hellos, verification pings, walk queries) end."""
        while self._checks:
            await asyncio.gather(*self._checks, return_exceptions=True)

    async def close(self) -> None:
        tasks = [*self._checks, *([self._upkeep_task] if self._upkeep_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._protocol is not None:
            self._protocol.close()
            await asyncio.sleep(0)
