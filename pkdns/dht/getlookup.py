"""BEP 44 ``get`` for a pkarr key as a pure state machine (the value lookup).

The walk itself -- whom to ask, timeouts, convergence, the absence proof -- is
:class:`pkdns.dht.lookup.IterativeLookup`; this adds what a value needs: verification, most
recent wins, and the guard against a Sybil cluster showing only an old packet
(:mod:`pkdns.dht.sybil`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from pkdns.dht.ids import ID_BITS, distance, target_of
from pkdns.dht.item import MutableItem, check_item
from pkdns.dht.krpc import Address, Method, Response
from pkdns.dht.lookup import ALPHA, K_CLOSEST, MAX_QUERIED, Candidate, IterativeLookup, State
from pkdns.dht.rtt import RttEstimator
from pkdns.dht.sybil import OFF_TARGET_BITS, QUORUM, Prefix, cluster_size, shell_targets
from pkdns.errors import VerifyError

FAR_SHELLS = 2
"""Walks toward the key's far half and quarter when clusters leave a lookup with too few others
to ask (:meth:`GetMutableLookup.hidden_shells`)."""
NEIGHBOURHOODS = 3
"""Walks toward the own ids of live nodes beyond the cluster, while walks are needed
(:meth:`GetMutableLookup.hidden_shells`)."""


class GetMutableLookup(IterativeLookup):
    """BEP 44 ``get`` for a pkarr key; yields only verified items strictly newer than before.

    A node's answer counts only if ``k`` is the requested key, ``sha1(k)`` the target, ``v`` at
    most 1000 bytes and the signature verifies (BEP 44; libtorrent ``get_item.cpp``). Items at
    or below ``seq_floor`` and items older than one already returned are dropped (a replayed
    older item never rolls back what this lookup already returned).

    Most recent wins, so the lookup guards against being shown only an old packet
    (:mod:`pkdns.dht.sybil`): candidates packed around the target more densely than
    ``network_size`` allows do not count toward k, and an item only they gave is held back
    (:attr:`held_back`) until the k closest nodes beyond them answered -- the lookup must
    know k there, the members name only each other -- or the lookup ends (:meth:`finish`).
    A lookup that runs out of nodes to ask before it knew k beyond the cluster keeps it held
    back: its caller can look again from a table that learnt meanwhile. When values disagree
    (a close node holds an older one) or fewer than QUORUM of the closest hold the best, k
    more nodes are asked.
    """

    method: ClassVar[Method] = "get"

    def __init__(self, public_key: bytes, seeds: Iterable[tuple[bytes | None, Address]],
                 now: float, *, seq_floor: int | None = None, timeout: float = 5.0,
                 own_id: bytes | None = None, k: int = K_CLOSEST, alpha: int = ALPHA,
                 max_queried: int = MAX_QUERIED, rtt: RttEstimator | None = None,
                 network_size: int = 0) -> None:
        super().__init__(target_of(public_key), seeds, now, timeout=timeout, own_id=own_id, k=k,
                         alpha=alpha, max_queried=max_queried, rtt=rtt, network_size=network_size)
        self.public_key = public_key
        self.seq_floor = seq_floor
        self.best: MutableItem | None = None
        self.held: dict[Address, MutableItem] = {}
        self._edge = -1
        """Distance of the farthest member of a suspected cluster (-1: none)."""
        self._seen_edge = -1
        """The farthest cluster edge :meth:`_cluster_edge` found so far."""
        self._heard_beyond = False
        """Have the k closest nodes beyond the cluster all answered?"""
        self._pending: MutableItem | None = None
        """The newest item only cluster members gave, held back."""
        self._holds_floor = False
        """A node said it holds an item no newer than ``seq_floor`` (so it is not absent)."""
        self.looking_around = False
        """Walks around the key still bring nodes (:mod:`pkdns.dht.around`): an item only
        the cluster gave stays held back until they end (unless out of time). The first
        nodes a walk hears are not yet the k closest beyond the cluster (kernel lab: with
        them, 3 of 20 cold resolves of one clustered key released its older packet)."""
        self._heard: set[Address] = set()
        """Nodes that answered the walks around the key (:meth:`add_heard`): alive, though
        this get may not have heard them (on a lossy link its query or their reply is lost)."""

    def _width(self, alive: list[Candidate]) -> int:
        m = min(self.k, cluster_size([max(0, c.dist) for c in alive[:2 * self.k]],
                                     self.network_size))
        self._edge = alive[m - 1].dist if m else -1
        beyond = alive[m:m + self.k]
        self._heard_beyond = (bool(beyond) and all(c.state is State.RESPONDED for c in beyond)
                              and self._pending is not None and self._knows_beyond())
        width = self.k + m
        if self.best is not None and self._thin_or_conflicting(alive[:width]):
            width += self.k
        return width

    def _knows_beyond(self, live: bool = False) -> bool:
        """Does the lookup know k nodes beyond the cluster (answered, silent or not asked
        yet)? Until then the few beyond it that answered say little: a one-shot lookup that
        starts from the cluster (the closest contacts a bootstrap host lists) may know one,
        and the cluster's members name only each other. ``live``: not counting those that
        failed (timed out or answered an error)."""
        known = sorted(c.dist for c in self._cands.values() if c.dist >= 0 and not c.shunned)
        m = min(self.k, cluster_size(known[:2 * self.k], self.network_size))
        if live:
            known = [c.dist for c in self._cands.values()
                     if c.dist >= 0 and not c.shunned and c.state is not State.FAILED]
        return m == 0 or len(known) >= m + self.k

    def hidden_shells(self) -> list[bytes]:
        """Targets whose walks find the honest nodes a cluster hides
        (:func:`pkdns.dht.sybil.shell_targets`); none while the lookup knows enough.

        - A cluster suspected around the key, fewer than k known beyond it: the shells from
          below the closest node known beyond the cluster up to the cluster.
        - Replies named clusters planted for other keys (passed by), fewer than k others,
          and none left to ask (:meth:`_unasked`): the shells below the closest node known
          (kernel lab: a cold resolve whose bootstrap host named five cluster members and
          three dead or broken nodes asked the same seven six times and ended with nothing).

        In both cases walks go toward the key's far half and quarter too. The few referrers
        known name the same contacts for any target near the key -- their one bucket for
        that part of the id space, which the clusters filled -- but their neighbours there
        each have their own (kernel lab, traced: a cold resolve whose one contact beyond the
        cluster was its bootstrap host walked the shells three times, found no new node and
        printed the older packet; resolves of the same key that the host had shown other
        nodes reached the holders).

        And toward the neighbourhoods (their own ids) of :data:`NEIGHBOURHOODS` live nodes
        beyond the cluster -- referrers, or nodes the walks heard (:meth:`add_heard`) -- those
        farthest from every other walk's target: a referrer names the same few contacts for
        any target near the key or near its far points, but its neighbours -- many: a
        Kademlia table holds the most contacts near its own id -- each have buckets of their
        own (kernel lab, traced: four cold resolves in a row whose only live contact was the
        bootstrap host, its bucket for the key's quarter filled by another key's cluster, 7
        of the 8 nodes it named for the far half dead, printed nothing; the resolve between
        them that reached one more live node printed the newest; in a later run the host
        answered only the walks, its replies to the get lost).

        Walks go on while fewer than k nodes beyond the cluster are alive, though the
        release (:meth:`finish`) counts the dead too (kernel lab: a get that knew 20 beyond,
        11 of them timed out and 4 erroring, walked nowhere and released the older packet;
        counting only the live for the release slows lossy networks, where honest
        neighbourhoods pass for clusters: the simulator's first values at 50 % loss).

        Read-only: the watch in :mod:`pkdns.dht.around` calls it between replies."""
        edge = self._edge_now()
        beyond = [c.dist for c in self._cands.values() if c.dist > edge and not c.shunned]
        depth = ID_BITS - min(beyond).bit_length() if beyond else 0
        far = shell_targets(self.target, -1, FAR_SHELLS)
        if edge >= 0:
            if self._knows_beyond(live=True):
                return []
            shells = shell_targets(self.target, depth, ID_BITS - edge.bit_length())
        elif not self._shunned or len(beyond) >= self.k or self._unasked():
            return []
        else:
            shells = shell_targets(self.target, depth, ID_BITS)
        targets = far + shells
        return list(dict.fromkeys(targets + self._homes(edge, [self.target, *targets])))

    def _unasked(self) -> bool:
        """Anyone left to ask? A get that only passed clusters by looks around once it ran
        out (kernel lab, traced: a warm daemon's gets, 32 contacts from its table, looked at
        the first poll whenever a reply named another key's cluster -- 74 walks in 20 s, the
        pacing budget gone, SERVFAIL for the next keys; the starved resolve runs out at once)."""
        return any(c.state is State.NEW and not c.shunned for c in self._cands.values())

    def clusters(self) -> list[Prefix]:
        """The id prefixes ``(value, bits)`` of the clusters this get knows: those passed by,
        and the one around the key (its members share the bits of the farthest with it, at
        least OFF_TARGET_BITS: a neighbourhood taken for a cluster on a badly estimated
        network would cover too much of the space). Walks around the key pass them by
        (:meth:`IterativeLookup.avoid`): their members name only each other."""
        edge = self._edge_now()
        bits = ID_BITS - edge.bit_length()
        if edge < 0 or bits < OFF_TARGET_BITS:
            return list(self._shunned)
        return [*self._shunned, (int.from_bytes(self.target, "big") >> (ID_BITS - bits), bits)]

    def add_heard(self, seeds: Iterable[tuple[bytes | None, Address]]) -> None:
        """Seeds that answered walks around the key: asked like any seed, and alive for
        :meth:`hidden_shells`' neighbourhoods."""
        seeds = list(seeds)
        self.add_seeds(seeds)
        self._heard.update(addr for _, addr in seeds)

    def _homes(self, edge: int, walked: list[bytes]) -> list[bytes]:
        """The own ids of the referrers beyond ``edge`` farthest from every target in
        ``walked`` (a walk toward an id near one of them would meet the same nodes)."""
        live = self._referring(edge)
        live.sort(key=lambda i: min(distance(i, t) for t in walked), reverse=True)
        return live[:NEIGHBOURHOODS]

    def referrers(self) -> int:
        """Live nodes beyond the cluster without its packet -- they answered this get, or the
        walks around the key (:meth:`add_heard`): the honest referrers a look around the key
        goes on from (:mod:`pkdns.dht.around` looks again while each look adds some). The
        cluster's members -- within its edge, or beyond it with the older packet -- do not
        count: they name only each other."""
        return len(self._referring(self._edge_now()))

    def _referring(self, edge: int) -> list[bytes]:
        """The ids of :meth:`referrers` beyond ``edge``."""
        return [c.id for c in self._cands.values()
                if c.id is not None and not c.shunned and c.dist > edge
                and c.addr not in self.held
                and (c.state is State.RESPONDED or c.addr in self._heard)]

    def _thin_or_conflicting(self, closest: list[Candidate]) -> bool:
        assert self.best is not None
        holders = older = 0
        for c in closest:
            item = self.held.get(c.addr) if c.state is State.RESPONDED else None
            holders += item == self.best
            older += item is not None and item.seq < self.best.seq
        return older > 0 or holders < QUORUM

    def on_response(self, addr: Address, resp: Response, now: float) -> MutableItem | None:
        item = super().on_response(addr, resp, now)
        if self._pending is None or self.looking_around:
            return item
        self._window(now)  # brings the cluster edge and what was heard beyond it up to date
        if not self._heard_beyond:
            return item
        released = self._release()
        return item if released is None else released

    def _proof_width(self, dists: list[int]) -> int:
        """Beyond a suspected cluster too: its members' word alone proves nothing."""
        return self.k + min(self.k, cluster_size(dists, self.network_size))

    def _has_value(self) -> bool:
        return self.outcome.values > 0 or self._holds_floor

    def answered(self) -> bool:
        """A verified item went out (one only a suspected cluster gave is held back, so it
        does not count: the lookup still needs the nodes beyond it)."""
        return self.best is not None

    def _value(self, c: Candidate, resp: Response) -> MutableItem | None:
        if resp.v is None and resp.sig is None:
            self._holds_floor |= resp.seq is not None  # BEP 44: seq alone, v not newer
            return None
        try:
            item = check_item(resp.k, resp.seq, resp.v, resp.sig,
                              expected_key=self.public_key, expected_target=self.target)
        except VerifyError:
            self.outcome.invalid_values += 1
            return None
        self.outcome.values += 1
        self.held[c.addr] = item
        if self.seq_floor is not None and item.seq <= self.seq_floor:
            return None
        if 0 <= c.dist <= self._cluster_edge():  # suspected cluster: wait for the others
            if item.newer_than(self._pending):
                self._pending = item
            return None
        return self._accept(item)

    def _cluster_edge(self) -> int:
        """The cluster's edge from every candidate known now (the reply being handled may
        have just named the rest of the cluster), never nearer than it was: a member whose
        packets were lost is still there, and a lookup that knew 9 members and lost 2 took
        the next member's older packet for the answer (7 no longer made a cluster)."""
        self._seen_edge = self._edge_now()
        return self._seen_edge

    def _edge_now(self) -> int:
        """:meth:`_cluster_edge` without recording it (for the read-only questions)."""
        return max(self._seen_edge, self._edge_of_known())

    def _edge_of_known(self) -> int:
        known = sorted(c.dist for c in self._cands.values() if c.state is not State.FAILED
                       and c.dist >= 0 and not c.shunned)[:2 * self.k]
        m = cluster_size(known, self.network_size)
        return known[m - 1] if m else -1

    def _accept(self, item: MutableItem) -> MutableItem | None:
        if not item.newer_than(self.best):
            return None
        self.best = item
        return item

    def _release(self) -> MutableItem | None:
        item, self._pending = self._pending, None
        return None if item is None else self._accept(item)

    @property
    def held_back(self) -> MutableItem | None:
        """The newest item only a suspected cluster gave, not yet released (a lookup that
        ran out of nodes to ask before its deadline keeps it: :meth:`finish`)."""
        return self._pending

    def finish(self) -> MutableItem | None:
        """A packet only the cluster gave is better than none once the lookup is out of time
        or has asked around k nodes beyond the cluster: released. A lookup that ran out of
        nodes to ask knowing fewer keeps it :attr:`held_back` -- in the kernel lab cold
        lookups that started from the cluster and lost their one other contact ended half a
        second in, and the cluster's older packet won where a second look finds the newest."""
        if self.outcome.deadline_hit or (not self.looking_around and self._knows_beyond()):
            return self._release()
        return None

    def settled(self, quorum: int = QUORUM) -> bool:
        """Is :attr:`best` established, so a one-shot caller may stop here? Yes once
        ``quorum`` nodes gave it, none gave an older one and nothing newer is held back. The
        rest of the lookup waits on the slow and the silent (on a lossy network most of its
        time) and would change the answer only if a newer packet sat on nodes not yet heard
        from (a put reaches its 20 nodes at once, so those that hold the old one rather than
        the new one are the few it missed)."""
        if self.best is None or self._pending is not None:
            return False
        holders = 0
        for item in self.held.values():
            if item.seq < self.best.seq:
                return False
            holders += item == self.best
        return holders >= quorum


__all__ = ["GetMutableLookup"]
