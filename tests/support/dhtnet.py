"""An in-memory DHT for unit tests: pure nodes, a fake clock, bytes on a pretend wire.

Every message goes through :mod:`pkdns.dht.krpc` encode/decode, so the codec is exercised too.
Honest nodes are the production pure parts (RoutingTable, TokenManager, ItemStore,
Responder). Attack tests register handlers that answer however they like: wrong key, forged
source address, garbage bytes, silence. Lookups run synchronously; silence turns into a
timeout only when the fake clock is advanced past the request timeout. No sleeps.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from pkdns.dht import krpc
from pkdns.dht.getlookup import GetMutableLookup
from pkdns.dht.ids import make_node_id
from pkdns.dht.item import MutableItem
from pkdns.dht.krpc import Address, ErrorMessage, NodeInfo, Query, Response
from pkdns.dht.lookup import IterativeLookup, Outcome, PutMutable, PutResult
from pkdns.dht.responder import Responder
from pkdns.dht.routing import RoutingTable
from pkdns.dht.storage import ItemStore
from pkdns.dht.tokens import TokenManager
from pkdns.errors import DecodeError
from tests.support.clock import FakeClock

Reply = tuple[Address, bytes] | None
"""What a handler sends back: (source address, datagram), or None for silence."""
Handler = Callable[[Query, Address, float], Reply]

CLIENT_ADDR: Address = ("198.51.100.1", 6881)


@dataclass
class PureNode:
    addr: Address
    id: bytes
    table: RoutingTable
    store: ItemStore
    responder: Responder

    def handle(self, q: Query, src: Address, now: float) -> Reply:
        if not q.read_only:
            self.table.add(q.id, src[0], src[1], now)
        return self.addr, krpc.encode(self.responder.handle(q, src, now))


@dataclass
class FakeNet:
    clock: FakeClock
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    request_timeout: float = 2.0
    handlers: dict[Address, Handler] = field(default_factory=dict)
    delays: dict[Address, float] = field(default_factory=dict)
    """Seconds a reply from that address takes (others come back at once)."""
    honest: dict[Address, PureNode] = field(default_factory=dict)
    delivered: int = 0
    dropped_replies: int = 0

    def add_honest(self, addr: Address, node_id: bytes | None = None) -> PureNode:
        nid = node_id or make_node_id(self.rng)
        now = self.clock.monotonic()
        table = RoutingTable(nid)
        store = ItemStore(1000, 1 << 20)
        node = PureNode(addr, nid, table, store,
                        Responder(nid, table, TokenManager(self.rng, now), store))
        self.honest[addr] = node
        self.handlers[addr] = node.handle
        return node

    def add_many(self, n: int, first_octet: int = 10) -> list[PureNode]:
        """``n`` honest nodes, one per /24 (so the sybil rules never hide honest ones)."""
        return [self.add_honest((f"{first_octet}.{i // 250}.{i % 250}.1", 6881))
                for i in range(n)]

    def connect_all(self) -> None:
        """Fill every honest table as a long-running network would (bounded by k-buckets)."""
        now = self.clock.monotonic()
        nodes = list(self.honest.values())
        for a in nodes:
            for b in nodes:
                if a is not b:
                    a.table.add(b.id, b.addr[0], b.addr[1], now)

    def exchange(self, dst: Address, q: Query) -> krpc.Message | None:
        """Send ``q`` to ``dst``; the decoded reply if it came back from ``dst`` with our tid."""
        handler = self.handlers.get(dst)
        self.delivered += 1
        if handler is None:
            return None
        out = handler(q, CLIENT_ADDR, self.clock.monotonic())
        if out is None:
            return None
        src, data = out
        try:
            msg = krpc.decode(data)
        except DecodeError:
            self.dropped_replies += 1
            return None
        if src != dst or msg.tid != q.tid or isinstance(msg, Query):
            self.dropped_replies += 1  # the transport's rule: only the address we asked
            return None
        return msg

    def run(self, lookup: IterativeLookup, own_id: bytes,
            read_only: bool = True) -> list[MutableItem]:
        """Drive ``lookup`` to completion; returns the items it streamed, in order."""
        items: list[MutableItem] = []
        waiting: list[tuple[float, Address]] = []
        arriving: list[tuple[float, Address, krpc.Message]] = []
        seq = lookup.seq_floor if isinstance(lookup, GetMutableLookup) else None
        base = Query(tid=b"", method=lookup.method, id=own_id, target=lookup.target, seq=seq,
                     read_only=read_only)

        def feed(addr: Address, reply: krpc.Message | None, now: float) -> None:
            if isinstance(reply, Response):
                item = lookup.on_response(addr, reply, now)
                if item is not None:
                    items.append(item)
            elif isinstance(reply, ErrorMessage):
                lookup.on_error(addr, reply, now)
            else:
                waiting.append((now + self.request_timeout, addr))

        for step in range(10_000):
            now = self.clock.monotonic()
            for t, addr, msg in [a for a in arriving if a[0] <= now]:
                arriving.remove((t, addr, msg))
                feed(addr, msg, now)
            for t, addr in [w for w in waiting if w[0] <= now]:
                waiting.remove((t, addr))
                lookup.on_timeout(addr, now)
            if lookup.done(now):
                break
            sent = lookup.next_requests(now)
            for c in sent:
                q = dataclasses.replace(base, tid=step.to_bytes(2, "big"))
                reply = self.exchange(c.addr, q)
                if reply is not None and self.delays.get(c.addr):
                    arriving.append((now + self.delays[c.addr], c.addr, reply))
                else:
                    feed(c.addr, reply, now)
            if lookup.done(now):
                break
            if sent:
                continue
            wake = min([lookup.next_wakeup(now), *(t for t, _ in waiting),
                        *(t for t, _, _ in arriving)])
            if wake > now:
                self.clock.advance(wake - now)
        held = lookup.finish()
        return items if held is None else [*items, held]

    def put(self, item: MutableItem, seeds: list[tuple[bytes | None, Address]],
            own_id: bytes, fanout: int = 20) -> PutResult:
        """BEP 44 put as the node does it: a get for tokens, then puts to the closest."""
        now = self.clock.monotonic()
        get = GetMutableLookup(item.k, seeds, now, seq_floor=item.seq - 1, own_id=own_id)
        self.run(get, own_id)
        now = self.clock.monotonic()
        put = PutMutable(item, get.put_targets(fanout), get.held, now, 5.0, get.outcome.converged)
        for i, (addr, token) in enumerate(put.next_requests(now)):
            q = Query(tid=i.to_bytes(2, "big"), method="put", id=own_id, token=token, k=item.k,
                      v=item.v, sig=item.sig, seq=item.seq)
            reply = self.exchange(addr, q)
            if isinstance(reply, Response):
                put.on_response(addr, now)
            elif isinstance(reply, ErrorMessage):
                put.on_error(addr, reply, now)
            else:
                put.on_timeout(addr, now)
        return put.finish()


def plant_cluster(net: FakeNet, target: bytes, item: MutableItem | None, n: int = 8,
                  seed: int = 4, subnet: int = 20) -> list[NodeInfo]:
    """``n`` Sybils far nearer ``target`` than chance allows (sharing 64 bits with it), each
    naming the 8 others closest to it and holding ``item``; every honest table learns them
    (they are the closest it knows, so honest replies name them too). Closest first."""
    rng = random.Random(seed)
    t = int.from_bytes(target, "big")
    ids = sorted(((t ^ rng.getrandbits(96)).to_bytes(20, "big") for _ in range(n)),
                 key=lambda i: int.from_bytes(i, "big") ^ t)
    addrs = [(f"172.{subnet}.{i}.1", 6881) for i in range(n)]
    members = [NodeInfo(i, *a) for i, a in zip(ids, addrs, strict=True)]

    def handler(me: NodeInfo) -> Handler:
        others = tuple(m for m in members if m is not me)[:8]
        extra = {} if item is None else {"k": item.k, "v": item.v, "sig": item.sig,
                                         "seq": item.seq}

        def answer(q: Query, src: Address, now: float) -> Reply:
            return me.addr, krpc.encode(Response(q.tid, me.id, nodes=others, token=b"t",
                                                 **extra))  # type: ignore[arg-type]
        return answer

    for m in members:
        net.handlers[m.addr] = handler(m)
        for node in net.honest.values():
            node.table.add(m.id, *m.addr, 0.0)
    return members


class NetStream:
    """``DhtNode.get_mutable``'s stream (:class:`~pkdns.pkarr.resolving.MutableStream`), run on
    the in-memory network: what the pkarr client and the packet source see of a lookup."""

    def __init__(self, net: FakeNet, lookup: GetMutableLookup) -> None:
        assert lookup.own_id is not None, "the lookup says whose it is (FakeNet.run)"
        self.net, self.lookup, self.own_id = net, lookup, lookup.own_id

    async def _items(self) -> AsyncIterator[MutableItem]:
        for item in self.net.run(self.lookup, self.own_id):
            yield item

    def __aiter__(self) -> AsyncIterator[MutableItem]:
        return self._items()

    @property
    def outcome(self) -> Outcome:
        return self.lookup.outcome

    @property
    def held_back(self) -> MutableItem | None:
        return self.lookup.held_back

    async def cancel(self) -> None:
        return None

    def settled(self, quorum: int) -> bool:
        return self.lookup.settled(quorum)


class NetDht:
    """The part of ``DhtNode`` the pkarr client uses (:class:`~pkdns.pkarr.resolving.Dht`),
    over the in-memory network: lookups only, each starting from :meth:`seeds`."""

    def __init__(self, net: FakeNet, own_id: bytes) -> None:
        self.net, self.own_id = net, own_id

    def seeds(self) -> list[tuple[bytes | None, Address]]:
        raise NotImplementedError

    def reachable(self) -> bool:
        return True

    async def put_mutable(self, item: MutableItem, *, timeout: float = 5.0) -> PutResult:
        raise NotImplementedError("lookups only")

    def get_mutable(self, public_key: bytes, seq_floor: int | None = None, *,
                    timeout: float = 5.0) -> NetStream:
        return NetStream(self.net, GetMutableLookup(
            public_key, self.seeds(), self.net.clock.monotonic(), seq_floor=seq_floor,
            timeout=timeout, own_id=self.own_id))
