"""Iterative Kademlia lookups (BEP 5 find_node; the walk under BEP 44 get/put) as pure state
machines; the value lookup is :mod:`pkdns.dht.getlookup`, a put's second phase
:mod:`pkdns.dht.put`.

The lookup never sends or waits: :meth:`IterativeLookup.next_requests` says whom to ask,
the asyncio driver (:mod:`pkdns.dht.outbound`) feeds back :meth:`on_response`, :meth:`on_error` and
:meth:`on_timeout`, all with ``now``. Closest-first with α requests in flight, more when
answers go missing (:meth:`RttEstimator.parallelism`); a request older than the soft timeout
stops counting against α (libtorrent's "short timeout") and widens the set of candidates asked
by one, and past its give-up time it no longer holds a place among the closest k, so dead and
unresponsive nodes stall neither the search nor its end (times from :mod:`pkdns.dht.rtt`). An
answer that comes late still counts. Bounded by ``max_queried`` and a deadline; at most one
candidate per IP and per /24 and at most K new contacts taken per reply (Sybil and poisoning
limits).
A reply that names a cluster packed away from the target (:func:`pkdns.dht.sybil.
off_target_clusters`) marks every candidate in it shunned: never asked, no place among the
closest, not counted among the K taken from a reply. The replier's own id counts among the
named: a member names its mates, and the prefix they share may leave it out by a bit (kernel
lab, traced: a member of another key's cluster that no reply's prefix took in passed for an
honest referrer, and a walk went to its neighbourhood -- the cluster).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from pkdns.dht.ids import ID_BITS, distance
from pkdns.dht.item import MutableItem
from pkdns.dht.krpc import Address, ErrorMessage, Method, Response
from pkdns.dht.put import PutMutable, PutResult
from pkdns.dht.routing import ip_key, is_valid_contact, subnet_key
from pkdns.dht.rtt import RttEstimator
from pkdns.dht.sybil import Prefix, in_prefix, off_target_clusters

ALPHA = 4
K_CLOSEST = 20
"""Convergence set: mainline's K (20), so a put reaches as many nodes as a Rust pkarr put."""
MAX_QUERIED = 128
MAX_CANDIDATES = 256


class State(Enum):
    """Where a candidate is in the lookup: not asked yet, asked, answered, or given up on
    (timeout or KRPC error; it then leaves the closest-K window)."""

    NEW = 0
    INFLIGHT = 1
    RESPONDED = 2
    FAILED = 3


@dataclass(slots=True)
class Candidate:
    """A node the lookup may ask: its address, its id once known (bootstrap seeds have none
    until they answer), when it was asked (for the soft timeout) and the write token it gave
    (BEP 5/44: a put must present the token of the node it stores on)."""

    addr: Address
    id: bytes | None
    dist: int = -1
    """XOR distance to the target, computed once (-1: id unknown, a bootstrap seed)."""
    state: State = State.NEW
    sent_at: float = 0.0
    token: bytes | None = None
    refused: bool = False
    """It answered with a KRPC error: alive, but serves no item (BEP 44 unsupported, broken)."""
    shunned: bool = False
    """A member of a cluster planted away from the target: it names only the cluster."""


@dataclass(slots=True)
class Outcome:
    """Counters for a diagnostic line and for NXDOMAIN-vs-SERVFAIL decisions."""

    queried: int = 0
    responded: int = 0
    values: int = 0
    invalid_values: int = 0
    krpc_errors: int = 0
    timed_out: int = 0
    skipped: int = 0
    """Queries pacing kept back (that node had had enough from us for now)."""
    shunned_clusters: int = 0
    """Clusters planted away from the target that replies named (their members not asked)."""
    deadline_hit: bool = False
    converged: bool = False
    """The k closest nodes the lookup learnt of all answered (:meth:`~IterativeLookup.
    heard_closest`): another lookup now would learn nothing new. Kept up to date by ``done``."""
    absent: bool = False
    """Absence proven: converged, and none of them had a value (:meth:`~IterativeLookup.
    proves_absence`)."""


class IterativeLookup:
    """Walk toward ``target``; the plain form is find_node (used to bootstrap)."""

    method: ClassVar[Method] = "find_node"

    def __init__(self, target: bytes, seeds: Iterable[tuple[bytes | None, Address]],
                 now: float, *, timeout: float = 5.0, own_id: bytes | None = None,
                 k: int = K_CLOSEST, alpha: int = ALPHA, max_queried: int = MAX_QUERIED,
                 rtt: RttEstimator | None = None, network_size: int = 0) -> None:
        self.target = target
        self.network_size = network_size
        self._shunned: list[Prefix] = []
        self.deadline = now + timeout
        self.own_id = own_id
        self.k, self.alpha, self.max_queried = k, alpha, max_queried
        self.rtt = rtt if rtt is not None else RttEstimator()
        self.outcome = Outcome()
        self._cands: dict[Address, Candidate] = {}
        self._ips: set[str] = set()
        self._subnets: set[str] = set()
        self.add_seeds(seeds)

    # -- candidate set -------------------------------------------------------------------
    def add_seeds(self, seeds: Iterable[tuple[bytes | None, Address]]) -> None:
        """Start points (bootstrap addresses without ids, or routing-table contacts)."""
        for node_id, addr in seeds:
            self._add(node_id, addr, is_seed=True)

    @staticmethod
    def _key(c: Candidate) -> int:
        return c.dist

    def _add(self, node_id: bytes | None, addr: Address, *, is_seed: bool = False) -> bool:
        """Take a new candidate (True) unless known, out of room or against the rules."""
        if addr in self._cands or len(self._cands) >= MAX_CANDIDATES:
            return False
        ipk, subnet = ip_key(*addr), subnet_key(*addr)
        if not is_seed:
            if node_id is None or node_id == self.own_id:
                return False
            if not is_valid_contact(node_id, *addr) or ipk in self._ips or subnet in self._subnets:
                return False
        self._ips.add(ipk)
        self._subnets.add(subnet)
        c = Candidate(addr, node_id, -1 if node_id is None else distance(node_id, self.target))
        c.shunned = node_id is not None and self._is_shunned(int.from_bytes(node_id, "big"))
        self._cands[addr] = c
        return True

    def _shun(self, named: list[bytes]) -> None:
        """Mark the clusters planted away from the target that one reply ``named``, and every
        candidate inside them (the replier too), shunned."""
        self.avoid(off_target_clusters(named, self.target, self.network_size))

    def avoid(self, prefixes: Iterable[Prefix]) -> None:
        """Pass by the clusters with these id prefixes ``(value, bits)``: also those another
        lookup found (a walk beside a get: kernel lab, traced, 86 of 97 replies to the walks
        of a resolve that printed nothing came from clusters its get had passed by)."""
        for value, bits in prefixes:
            if self._is_shunned(value << (ID_BITS - bits), bits):
                continue  # a part of a cluster passed by already
            self._shunned = [(v, b) for v, b in self._shunned  # parts of this one: merged
                             if b < bits or v >> (b - bits) != value] + [(value, bits)]
            self.outcome.shunned_clusters = len(self._shunned)
            for c in self._cands.values():
                c.shunned |= c.id is not None and in_prefix(int.from_bytes(c.id, "big"),
                                                            (value, bits))

    def shunned_depth(self) -> int | None:
        """How many leading bits the nearest cluster passed by shares with the target."""
        t = int.from_bytes(self.target, "big")
        return min((b - (v ^ t >> (ID_BITS - b)).bit_length() for v, b in self._shunned),
                   default=None)

    def _is_shunned(self, node_id: int, bits: int = ID_BITS) -> bool:
        return any(in_prefix(node_id, p, bits) for p in self._shunned)

    def _counts(self, c: Candidate, now: float) -> bool:
        """Does ``c`` hold a place among the closest: not failed, and if asked, not past its
        give-up time (:mod:`pkdns.dht.rtt`; a late answer brings it back)."""
        if c.shunned:
            return False
        if c.state is State.INFLIGHT:
            return c.sent_at + self.rtt.give_up(c.addr) > now  # as next_wakeup computes it
        return c.state is not State.FAILED

    def _window(self, now: float, soft: float | None = None) -> list[Candidate]:
        """The closest candidates that count; with ``soft``, widened by one for every one
        of them asked longer ago than ``soft`` (the candidates to ask while we wait)."""
        alive = [c for c in self._cands.values() if self._counts(c, now)]
        alive.sort(key=self._key)
        width = self._width(alive)
        if soft is not None:
            width += sum(1 for c in alive[:width]
                         if c.state is State.INFLIGHT and c.sent_at + soft <= now)
        return alive[:width]

    def _width(self, alive: list[Candidate]) -> int:
        """How many of the closest (``alive``, sorted) must answer before the lookup is done."""
        return self.k

    # -- driver interface ----------------------------------------------------------------
    def next_requests(self, now: float) -> list[Candidate]:
        """Candidates to query now (marked in flight)."""
        if self.done(now):
            return []
        soft = self.rtt.soft_timeout()
        busy = sum(1 for c in self._cands.values()
                   if c.state is State.INFLIGHT and c.sent_at + soft > now)
        alpha = self.rtt.parallelism(self.alpha)
        out: list[Candidate] = []
        for c in self._window(now, soft):
            if busy >= alpha or self.outcome.queried >= self.max_queried:
                break
            if c.state is State.NEW:
                c.state, c.sent_at = State.INFLIGHT, now
                self.outcome.queried += 1
                busy += 1
                out.append(c)
        return out

    def next_wakeup(self, now: float) -> float:
        """Absolute time at which :meth:`next_requests` or :meth:`done` may say something
        new: a soft timeout frees a slot, a give-up time moves the window on."""
        soft = self.rtt.soft_timeout()
        soon = [self.deadline]
        for c in self._cands.values():
            if c.state is State.INFLIGHT:
                soon += [t for t in (c.sent_at + soft, c.sent_at + self.rtt.give_up(c.addr))
                         if t > now]
        return min(soon)

    def done(self, now: float) -> bool:
        self.outcome.converged = self.heard_closest()
        self.outcome.absent = self.outcome.converged and not self._has_value()
        if now >= self.deadline:
            self.outcome.deadline_hit = True
            return True
        window = self._window(now)
        if window and all(c.state is State.RESPONDED for c in window):
            return True
        if not window:  # nobody answered yet, and nobody is left to ask: wait for the late
            return not any(c.state is State.INFLIGHT for c in self._cands.values())
        waiting = any(c.state is State.INFLIGHT and self._counts(c, now)
                      for c in self._cands.values())
        return self.outcome.queried >= self.max_queried and not waiting

    def _take(self, addr: Address) -> Candidate | None:
        c = self._cands.get(addr)
        return c if c is not None and c.state is State.INFLIGHT else None

    def on_response(self, addr: Address, resp: Response, now: float) -> MutableItem | None:
        """Feed a reply from ``addr``; returns a newly verified item for value lookups."""
        c = self._take(addr)
        if c is None:
            return None
        self.rtt.observe(addr, now - c.sent_at)
        c.state, c.id, c.token = State.RESPONDED, resp.id, resp.token
        c.dist = distance(resp.id, self.target)
        self.outcome.responded += 1
        usable = [n for n in resp.nodes if is_valid_contact(n.id, n.host, n.port)]
        self._shun([n.id for n in usable] + [resp.id])  # a member names its mates, not itself
        usable = [n for n in usable if not self._is_shunned(int.from_bytes(n.id, "big"))]
        usable.sort(key=lambda n: distance(n.id, self.target))
        taken = 0
        for n in usable:  # K new ones at most: known ones (a cluster named again) take no place
            if taken >= self.k:
                break
            taken += self._add(n.id, n.addr)
        return self._value(c, resp)

    def _value(self, c: Candidate, resp: Response) -> MutableItem | None:
        return None

    def finish(self) -> MutableItem | None:
        """The lookup is over: an item it held back until now, if any (the driver yields it)."""
        return None

    def on_error(self, addr: Address, err: ErrorMessage, now: float) -> None:
        c = self._take(addr)
        if c is not None:
            c.state, c.refused = State.FAILED, True
            self.outcome.krpc_errors += 1

    def on_timeout(self, addr: Address, now: float) -> None:
        c = self._take(addr)
        if c is not None:
            self.rtt.lost()
            c.state = State.FAILED
            self.outcome.timed_out += 1

    def on_skipped(self, addr: Address, now: float) -> None:
        """The query was never sent (we had asked that node enough for now): the lookup
        moves on without it, but it is no loss -- counted as one, it would widen every
        lookup and spend more of the same budget -- and no answer for an absence proof."""
        c = self._take(addr)
        if c is not None:
            c.state = State.FAILED
            self.outcome.skipped += 1

    def proves_absence(self) -> bool:
        """Did this lookup show that no node holds a value for the target? Only when the k
        closest nodes it learnt of all answered (:meth:`heard_closest`), none with a value."""
        return not self._has_value() and self.heard_closest()

    def heard_closest(self) -> bool:
        """Have the k closest nodes this lookup learnt of all answered?

        Closest among every node any reply named, whether it was asked, answered, is still
        awaited or timed out. That is Kademlia's convergence (BEP 5: the search ends when no
        closer node is left to ask) with the nodes that stayed silent kept in place: a lookup
        that gave up on silent close nodes and filled its window with farther ones that
        answered proves nothing, the item may sit on exactly the nodes that did not answer.
        A node that answered a KRPC error is left out (alive, but it serves no item, so it
        cannot hold one for us); seeds whose id we never learnt cannot be placed and are too;
        so are shunned clusters, but then k others must have answered.
        """
        known = sorted((c for c in self._cands.values()
                        if c.dist >= 0 and not c.refused and not c.shunned), key=self._key)
        width = self._proof_width([c.dist for c in known[:2 * self.k]])
        closest = known[:width]
        if self._shunned and len(closest) < self.k:
            return False  # a cluster hid the rest: the few it left prove nothing
        return bool(closest) and all(c.state is State.RESPONDED for c in closest)

    def _proof_width(self, dists: list[int]) -> int:
        """How many of the closest known nodes (``dists``, sorted) must answer for a proof."""
        return self.k

    def _has_value(self) -> bool:
        return False

    def answered(self) -> bool:
        """Has the caller its answer already (the rest of the walk only looks for a newer
        one)? A find_node walk's answer is its end, so no."""
        return False

    def closest_responded(self, n: int | None = None) -> list[Candidate]:
        got = [c for c in self._cands.values() if c.state is State.RESPONDED and not c.shunned]
        got.sort(key=self._key)
        return got[:n or self.k]

    def put_targets(self, n: int) -> list[tuple[Address, bytes]]:
        """The ``n`` closest responders that gave a write token (BEP 44 put phase)."""
        got = [(c.addr, c.token) for c in self.closest_responded(len(self._cands))
               if c.token is not None]
        return [(a, t) for a, t in got if t is not None][:n]


__all__ = ["ALPHA", "K_CLOSEST", "MAX_CANDIDATES", "MAX_QUERIED", "Candidate", "IterativeLookup",
           "Outcome", "PutMutable", "PutResult", "State"]
