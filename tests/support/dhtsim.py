"""A Mainline-sized DHT in virtual time, driving the project's own lookup and routing code.

The lookups are :class:`pkdns.dht.getlookup.GetMutableLookup`, fed exactly as ``outbound.drive``
feeds them (``next_requests`` -> replies, timeouts -> ``next_wakeup``), with ``now`` taken from
an event queue instead of a clock. The client's routing table and every simulated node's
table are :class:`pkdns.dht.routing.RoutingTable`; a node's table is filled the first time it
is asked (8 random nodes per bucket, the way a long-running node's buckets look), and it answers
with ``table.closest`` as our responder does. Values are real signed BEP 44 items, so every
answer is verified as on the wire.

The network: per-node round trips drawn from a log-normal (median ``rtt_median``; sigma 1 puts
about 3 % over 1 s), per-packet jitter, per-packet ``loss`` each way, ``unresponsive`` nodes
(NAT'd or firewalled: listed by others, never answer), churn (``down`` nodes listed by others
but gone; ``churn_step`` of the responsive nodes flip between lookups; ``holder_churn`` of a
key's holders left since it was put) and optional Sybil clusters: ``sybils`` nodes with ids
nearer the key than anyone, fast, pointing at each other, holding an older packet or nothing.
Everything comes from one seed: a run is reproducible to the message.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from pkdns.dht.getlookup import GetMutableLookup
from pkdns.dht.ids import ID_BITS, distance, target_of
from pkdns.dht.item import MutableItem, sign_item
from pkdns.dht.krpc import Address, NodeInfo, Response
from pkdns.dht.resend import Resends
from pkdns.dht.routing import RoutingTable
from pkdns.dht.rtt import RttEstimator

REPLY_NODES = 8
PUT_FANOUT = 20


@dataclass
class Config:
    nodes: int = 10_000
    lookups: int = 200
    seed: int = 1
    rtt_median: float = 0.150
    rtt_sigma: float = 1.0
    loss: float = 0.05
    unresponsive: float = 0.30
    down: float = 0.10
    churn_step: float = 0.002
    holder_churn: float = 0.20
    request_timeout: float = 2.0
    retransmit: float = 0.0
    """> 0: unanswered queries are sent again as the node's Asker sends them (RETRANSMIT,
    :class:`pkdns.dht.resend.Resends`); 0: every query goes out once (the figures before
    resends were simulated). Messages count every datagram."""
    lookup_timeout: float = 5.0
    answer_window: float = 0.15
    sybils: int = 0
    sybil_value: str = "older"  # or "none"


@dataclass
class Peer:
    id: bytes
    addr: Address
    rtt: float
    responsive: bool
    up: bool = True
    sybil_for: bytes | None = None
    table: RoutingTable | None = None
    filled: set[int] = field(default_factory=set)
    cluster: RoutingTable | None = None
    items: dict[bytes, MutableItem] = field(default_factory=dict)


@dataclass
class Result:
    found: bool
    newest: bool
    answered_newest: bool
    first: float | None
    done: float
    messages: int
    hops: int | None


class Network:
    """The simulated population; :meth:`lookup` runs one cold get from the client."""

    def __init__(self, cfg: Config, sybil_targets: Sequence[bytes] = ()) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.now = 0.0
        self.peers: dict[Address, Peer] = {}
        self.sybils: dict[bytes, list[Peer]] = {}
        self._ints: list[int] = []
        self._sorted: list[Peer] = []
        for i in range(cfg.nodes):
            self._add_peer(self._random_id(), i)
        for j, target in enumerate(sybil_targets):
            for s in range(cfg.sybils):
                near = int.from_bytes(target, "big") ^ self.rng.getrandbits(ID_BITS - 64)
                p = self._add_peer(near.to_bytes(20, "big"), cfg.nodes + j * cfg.sybils + s)
                p.responsive, p.up, p.rtt, p.sybil_for = True, True, 0.03, target
                self.sybils.setdefault(target, []).append(p)
        pairs = sorted(((int.from_bytes(p.id, "big"), p) for p in self.peers.values()),
                       key=lambda t: t[0])
        self._ints = [i for i, _ in pairs]
        self._sorted = [p for _, p in pairs]
        self.own_id = self._random_id()
        self.client = self._table_for(self.own_id, wide=True)  # as DhtNode's
        self.rtt = RttEstimator()
        self.resends = Resends(cfg.retransmit, cfg.request_timeout)

    def _random_id(self) -> bytes:
        return self.rng.getrandbits(ID_BITS).to_bytes(20, "big")

    def _add_peer(self, node_id: bytes, i: int) -> Peer:
        addr = (f"{20 + i // 65536}.{(i // 256) % 256}.{i % 256}.1", 6881)
        rtt = min(8.0, self.cfg.rtt_median * math.exp(self.rng.gauss(0.0, self.cfg.rtt_sigma)))
        responsive = self.rng.random() >= self.cfg.unresponsive
        peer = Peer(node_id, addr, rtt, responsive, up=self.rng.random() >= self.cfg.down)
        self.peers[addr] = peer
        return peer

    # -- routing tables --------------------------------------------------------------------
    def _table_for(self, own: bytes, wide: bool = False) -> RoutingTable:
        """A long-running node's table (see :meth:`_fill`), every bucket filled."""
        table = RoutingTable(own, now=self.now, wide=wide)
        self._fill(table, set(), 0)
        return table

    def _fill(self, table: RoutingTable, filled: set[int], first: int) -> None:
        """Buckets ``first`` and deeper get as many random nodes from their id range as they
        hold, as a long-running node's buckets do (dead and unresponsive ones included)."""
        x = int.from_bytes(table.own_id, "big")
        for b in range(first, ID_BITS):
            width = ID_BITS - 1 - b
            if b not in filled:
                filled.add(b)
                lo = ((x >> width) ^ 1) << width
                i = bisect.bisect_left(self._ints, lo)
                j = bisect.bisect_left(self._ints, lo + (1 << width))
                for k in self.rng.sample(range(i, j), min(table.limit(b), j - i)):
                    p = self._sorted[k]
                    table.add(p.id, p.addr[0], p.addr[1], self.now)
            mine = bisect.bisect_left(self._ints, (x >> width) << width)
            if bisect.bisect_left(self._ints, ((x >> width) + 1) << width) - mine <= 1:
                return

    def closest_to(self, target: bytes, n: int, honest_only: bool = True) -> list[Peer]:
        """The true ``n`` closest responsive, up nodes (where a put lands)."""
        t = int.from_bytes(target, "big")
        i = bisect.bisect_left(self._ints, t)
        window = self._sorted[max(0, i - 400):i + 400]
        ok = [p for p in window if p.responsive and p.up and not (honest_only and p.sybil_for)]
        ok.sort(key=lambda p: distance(p.id, target))
        return ok[:n]

    def churn(self) -> None:
        flips = int(len(self.peers) * self.cfg.churn_step)
        for p in self.rng.sample(list(self.peers.values()), flips):
            if p.responsive and p.sybil_for is None:
                p.up = not p.up

    # -- one lookup --------------------------------------------------------------------------
    def publish(self, seed: bytes, seq: int) -> MutableItem:
        """Put ``seq`` on the 20 closest honest nodes; some of them have left since."""
        item = sign_item(seed, seq, b"\x00" * 200)
        for p in self.closest_to(item.target, PUT_FANOUT):
            p.items[item.target] = item
            if self.rng.random() < self.cfg.holder_churn:
                p.up = False
        if self.cfg.sybil_value == "older" and self.sybils.get(item.target):
            older = sign_item(seed, seq - 1, b"\x01" * 200)
            for p in self.sybils[item.target]:
                p.items[item.target] = older
        return item

    def _answer(self, peer: Peer, lookup: GetMutableLookup) -> Response:
        """A reply as our responder builds it; a Sybil asked about its own key names only the
        other members of its cluster (about any other key it answers like anyone)."""
        if peer.sybil_for == lookup.target:
            table = self._sybil_table(peer)
        else:
            if peer.table is None:
                peer.table = RoutingTable(peer.id)
            shared = ID_BITS - distance(peer.id, lookup.target).bit_length()
            self._fill(peer.table, peer.filled, max(0, shared - 1))
            table = peer.table
        nodes = tuple(NodeInfo(e.id, e.host, e.port)
                      for e in table.closest(lookup.target, REPLY_NODES))
        item = peer.items.get(lookup.target)
        if item is None:
            return Response(b"", peer.id, nodes=nodes, token=b"t")
        return Response(b"", peer.id, nodes=nodes, token=b"t", k=item.k, v=item.v,
                        sig=item.sig, seq=item.seq)

    def _sybil_table(self, peer: Peer) -> RoutingTable:
        if peer.cluster is not None:
            return peer.cluster
        table = peer.cluster = RoutingTable(peer.id, now=self.now)
        for p in self.sybils[peer.sybil_for or b""]:
            table.add(p.id, p.addr[0], p.addr[1], self.now)
        return table

    def _exchange(self, addr: Address) -> tuple[float | None, int]:
        """When the reply arrives (seconds after the first send; None: lost every time or
        nobody there) and how many datagrams went out, resends included (the node's own
        :class:`~pkdns.dht.resend.Resends` decides the copies and learns from the outcome)."""
        peer = self.peers.get(addr)
        known = self.rtt.node(addr) is not None
        sends = [0.0] + self.resends.offsets(known)
        if peer is not None and peer.responsive and peer.up:
            for at in sends:  # the first copy to get through answers
                if self.rng.random() < self.cfg.loss or self.rng.random() < self.cfg.loss:
                    continue
                rtt = peer.rtt * math.exp(self.rng.gauss(0.0, 0.15))
                if at + rtt >= self.cfg.request_timeout:
                    break
                self.resends.answered(known, rtt, at == 0.0)  # each copy has its own tid
                return at + rtt, sum(1 for o in sends if o < at + rtt)  # the answer stops them
        self.resends.unanswered(known)
        return None, len(sends)

    def lookup(self, item: MutableItem) -> Result:
        """One cold get of ``item``'s key through the client's table, as the daemon runs it."""
        start = self.now
        seeds: list[tuple[bytes | None, Address]] = [
            (e.id, e.addr) for e in self.client.closest(item.target, 32)]
        lookup = GetMutableLookup(item.k, seeds, start, timeout=self.cfg.lookup_timeout,
                                  own_id=self.own_id, rtt=self.rtt,
                                  network_size=self.client.estimated_size())
        depth = {addr: 1 for _, addr in seeds}
        events: list[tuple[float, int, Address, bool]] = []
        first: float | None = None
        hops: int | None = None
        answer: MutableItem | None = None
        sent = n = 0
        while True:
            for c in lookup.next_requests(self.now):
                delay, datagrams = self._exchange(c.addr)
                sent += datagrams
                at = self.now + (delay if delay is not None else self.cfg.request_timeout)
                heapq.heappush(events, (at, n := n + 1, c.addr, delay is not None))
            if lookup.done(self.now):
                break
            if first is not None and answer is None and self.now >= first + self.cfg.answer_window:
                answer = lookup.best
            wake = lookup.next_wakeup(self.now)
            if first is not None and answer is None:
                wake = min(wake, first + self.cfg.answer_window)
            if events and events[0][0] <= wake:
                at, _, addr, ok = heapq.heappop(events)
                self.now = max(self.now, at)
                got = self._deliver(lookup, addr, ok, depth)
                if got is not None and first is None:
                    first, hops = self.now - start, depth.get(addr, 1)
            else:
                self.now = max(self.now, wake)
        held = lookup.finish()
        if held is not None and first is None:
            first, hops = self.now - start, None
        best = lookup.best
        if answer is None:
            answer = best
        return Result(found=best is not None, newest=best == item,
                      answered_newest=answer == item, first=first, done=self.now - start,
                      messages=sent, hops=hops)

    def _deliver(self, lookup: GetMutableLookup, addr: Address, ok: bool,
                 depth: dict[Address, int]) -> MutableItem | None:
        if not ok:
            lookup.on_timeout(addr, self.now)
            self.client.failed(*addr)
            return None
        peer = self.peers[addr]
        resp = self._answer(peer, lookup)
        for node in resp.nodes:
            depth.setdefault(node.addr, depth.get(addr, 1) + 1)
        self.client.add(peer.id, addr[0], addr[1], self.now)
        return lookup.on_response(addr, resp, self.now)


@dataclass
class Summary:
    cfg: Config
    results: list[Result]

    @property
    def success(self) -> float:
        return sum(r.newest for r in self.results) / len(self.results)

    @property
    def found(self) -> float:
        return sum(r.found for r in self.results) / len(self.results)

    @property
    def answered_newest(self) -> float:
        return sum(r.answered_newest for r in self.results) / len(self.results)

    @property
    def first_p50(self) -> float:
        firsts = [r.first for r in self.results if r.first is not None]
        return statistics.median(firsts) if firsts else math.inf

    @property
    def done_p50(self) -> float:
        return statistics.median(r.done for r in self.results)

    @property
    def done_p90(self) -> float:
        return statistics.quantiles([r.done for r in self.results], n=10)[-1]

    @property
    def hops_p50(self) -> float:
        hops = [r.hops for r in self.results if r.hops is not None]
        return statistics.median(hops) if hops else math.inf

    @property
    def messages(self) -> float:
        return statistics.mean(r.messages for r in self.results)

    @property
    def first_budget(self) -> float:
        """Target: first verified value within 1.5 x (hops x median round trip)."""
        return 1.5 * self.hops_p50 * self.cfg.rtt_median

    @property
    def message_budget(self) -> float:
        """Target: at most 1.5 x alpha * log2 N messages per lookup (alpha = 4)."""
        return 1.5 * 4 * math.log2(self.cfg.nodes)


def simulate(cfg: Config) -> Summary:
    """Publish and look up ``cfg.lookups`` fresh keys, one after the other, 30 s apart."""
    rng = random.Random(cfg.seed ^ 0x5EED)
    seeds = [rng.getrandbits(256).to_bytes(32, "big") for _ in range(cfg.lookups)]
    targets = [target_of(sign_item(s, 0, b"").k) for s in seeds] if cfg.sybils else []
    net = Network(cfg, targets)
    results = []
    for s in seeds:
        net.churn()
        item = net.publish(s, 1_700_000_000_000_000 + rng.getrandbits(32))
        results.append(net.lookup(item))
        net.now += 30.0
    return Summary(cfg, results)
