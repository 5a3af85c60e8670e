"""Kademlia routing table (BEP 5): 160 k-buckets by shared-prefix length, pure.

No I/O and no clock reads: callers pass ``now`` (monotonic seconds). Sybil limits follow
libtorrent's ``dht_restrict_routing_ips`` (``routing_table.cpp``): one entry per IP, and no two
entries from the same /24 in one bucket. Loopback peers are keyed by ``(ip, port)`` instead,
because a loopback testnet runs every node on 127.0.0.1 (libtorrent needs
``dht_restrict_routing_ips=False`` for the same reason).
"""

from __future__ import annotations

import functools
import ipaddress
import random
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from pkdns.dht.ids import ID_BITS, ID_BYTES, bucket_index, distance

K = 8
"""BEP 5 bucket size."""
STALE_AFTER = 15 * 60.0
"""A node silent this long is "questionable" (BEP 5): pinged before it may be replaced."""
MAX_FAILS = 2
"""Consecutive timeouts after which an entry is bad: replaceable, and no seed while good ones
are left."""
DROP_AFTER = 20
"""Consecutive timeouts after which a bad entry goes even with nobody to take its place
(libtorrent's ``dht_max_fail_count``). At 50 % loss each way a live node's requests time out
several times in a row often enough that dropping entries at the third timeout emptied a
warm daemon's table (kernel lab: 30 entries down to 1-9, a quarter to half the keys SERVFAIL);
kept, such a node is back at its next answer, and any newcomer for its bucket replaces it."""
REFRESH_AFTER = 15 * 60.0
"""BEP 5: a bucket whose contents did not change for 15 minutes is refreshed by a find_node
for a random id in its range."""
WIDER = (16, 8, 4, 2)
"""The farthest buckets hold this many times K (libtorrent's ``dht_extended_routing_table``,
on by default: 128, 64, 32, 16). Every lookup's first hop goes to the table's contacts nearest
the target; with 8 contacts for half the id space, the same 8 nodes take the first queries of
half of all lookups, and a busy resolver spends their per-node budget (:mod:`pacing`) first
(kernel lab, 100 keys at 50 % loss: 8-16 nodes at the full 40 sends per 10 s, the rest of
the swarm at 2-17, the last keys SERVFAIL). Wider far buckets start each lookup nearer its
target too: fewer hops."""
SPARES = K
"""Replacement candidates kept per full bucket (newest first out when over)."""
CHECK_TIMEOUT = 30.0
"""A questionable entry handed out for a ping is not handed out again for this long, unless
its outcome is reported first (:meth:`RoutingTable.pinged`); covers a lost report."""


class AddResult(Enum):
    """What :meth:`RoutingTable.add` did: a new entry, a refresh of a known one, a refusal
    (own id, invalid contact, an IP changing identity, a second node from one /24 in a
    bucket: the Sybil limits), or nothing because the bucket holds only good nodes."""

    ADDED = "added"
    UPDATED = "updated"
    REJECTED = "rejected"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class PingFirst:
    """:meth:`RoutingTable.add` found the bucket full but ``entry`` questionable (BEP 5):
    the newcomer waits as a replacement candidate while the caller pings ``entry`` (retrying
    once) and reports back with :meth:`RoutingTable.pinged`."""

    entry: Entry


@dataclass(slots=True)
class Entry:
    """One routing-table contact. ``last_seen`` (monotonic) and ``fails`` (consecutive
    timeouts) decide whether it is good, questionable or bad (BEP 5); ``subnet`` is kept to
    enforce one node per /24 per bucket without re-parsing the address."""

    id: bytes
    host: str
    port: int
    last_seen: float
    subnet: str
    fails: int = 0
    checking: float | None = None
    """When this entry was handed out for a BEP 5 questionable-node ping (None: not)."""

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)


def is_valid_contact(node_id: bytes, host: str, port: int) -> bool:
    """Reject port 0, unspecified, multicast and broadcast addresses (bogus contacts
    in a reply must not poison the routing table)."""
    return len(node_id) == ID_BYTES and 0 < port < 65536 and _usable_host(host)


@functools.lru_cache(maxsize=4096)
def _usable_host(host: str) -> bool:
    """Cached: every reply carries 8 contacts, mostly addresses seen before, and parsing one
    with :mod:`ipaddress` costs more than the rest of a routing-table insert."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not (ip.is_unspecified or ip.is_multicast or ip.is_reserved
                or host == "255.255.255.255")


def ip_key(host: str, port: int) -> str:
    """Identity for the one-entry-per-IP rule; loopback hosts are told apart by port."""
    return f"{host}:{port}" if host.startswith("127.") or host == "::1" else host


def subnet_key(host: str, port: int) -> str:
    """The /24 (IPv4) or /64 (IPv6) of a host, for per-bucket diversity; loopback by port."""
    if host.startswith("127.") or host == "::1":
        return f"{host}:{port}"
    if host.count(".") == 3:
        return host.rsplit(".", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{host}/{prefix}", strict=False))


class RoutingTable:
    """k-buckets around ``own_id``; bounded to 160 × ``k`` entries, (156 + 30) × ``k`` wide."""

    def __init__(self, own_id: bytes, k: int = K, now: float = 0.0, wide: bool = False) -> None:
        self.own_id = own_id
        self.k = k
        self._wider = WIDER if wide else ()
        """With ``wide`` the far buckets hold more (:data:`WIDER`); off, every bucket holds
        ``k`` (BEP 5, and most foreign nodes: bittorrent-dht, the test networks)."""
        self._buckets: list[list[Entry]] = [[] for _ in range(ID_BITS)]
        self._by_ip: dict[str, Entry] = {}
        self._changed = [now] * ID_BITS
        """BEP 5 "last changed" per bucket: a node added, replaced, or heard from again."""
        self._spares: dict[int, list[Entry]] = {}
        """Per full bucket, newcomers waiting for a questionable or bad entry to go."""

    def __len__(self) -> int:
        return len(self._by_ip)

    def good(self) -> int:
        """Entries not bad (fewer than MAX_FAILS timeouts in a row): what the table is worth
        for lookups and upkeep; bad ones may linger until DROP_AFTER."""
        return sum(1 for e in self._by_ip.values() if e.fails < MAX_FAILS)

    def limit(self, index: int) -> int:
        """How many entries bucket ``index`` holds (:data:`WIDER`)."""
        return self.k * self._wider[index] if index < len(self._wider) else self.k

    def add(self, node_id: bytes, host: str, port: int, now: float) -> AddResult | PingFirst:
        """Record a node that answered one of our queries (BEP 5 "good"). A full bucket
        replaces a bad entry at once; a questionable one is pinged first (:class:`PingFirst`)."""
        if node_id == self.own_id or not is_valid_contact(node_id, host, port):
            return AddResult.REJECTED
        key = ip_key(host, port)
        known = self._by_ip.get(key)
        if known is not None:
            if known.id != node_id:
                return AddResult.REJECTED  # an IP may not change identity at will
            known.last_seen, known.fails, known.port, known.checking = now, 0, port, None
            self._changed[bucket_index(self.own_id, node_id)] = now
            return AddResult.UPDATED
        index = bucket_index(self.own_id, node_id)
        bucket = self._buckets[index]
        subnet = subnet_key(host, port)
        if any(e.subnet == subnet for e in bucket):
            return AddResult.REJECTED
        newcomer = Entry(node_id, host, port, now, subnet)
        if len(bucket) >= self.limit(index):
            worst = max(bucket, key=lambda e: (e.fails, -e.last_seen))
            if worst.fails < MAX_FAILS:  # BEP 5: only a bad node is replaced at once
                return self._full(index, newcomer, now)
            self._remove(bucket, worst)
        self._insert(index, newcomer, now)
        return AddResult.ADDED

    def touch(self, node_id: bytes, host: str, port: int, now: float) -> bool:
        """A known entry sent us a query: it is good again (BEP 5: a node that "has ever
        responded to one of our queries and has sent us a query within the last 15 minutes").
        False when the address is not in the table under this id (nothing changed)."""
        known = self._by_ip.get(ip_key(host, port))
        if known is None or known.id != node_id or known.port != port:
            return False
        known.last_seen, known.fails = now, 0
        return True

    def admits(self, node_id: bytes, host: str, port: int, now: float) -> bool:
        """Would :meth:`add` take this unknown contact (a free slot, or a bad or questionable
        entry it could replace)? A dry run: nothing changes. Lets the caller skip the
        verification ping of a querier the table has no room for."""
        if node_id == self.own_id or not is_valid_contact(node_id, host, port):
            return False
        if ip_key(host, port) in self._by_ip:
            return False
        index = bucket_index(self.own_id, node_id)
        bucket = self._buckets[index]
        subnet = subnet_key(host, port)
        if any(e.subnet == subnet for e in bucket):
            return False
        return len(bucket) < self.limit(index) or any(
            e.fails >= MAX_FAILS or now - e.last_seen > STALE_AFTER for e in bucket)

    def _full(self, index: int, newcomer: Entry, now: float) -> AddResult | PingFirst:
        """BEP 5: a bucket of good nodes drops the newcomer; otherwise it waits as a spare
        while the least recently seen questionable entry not already being pinged is."""
        bucket = self._buckets[index]
        if not any(now - e.last_seen > STALE_AFTER for e in bucket):
            return AddResult.FULL
        key = ip_key(newcomer.host, newcomer.port)
        spares = [s for s in self._spares.get(index, []) if ip_key(s.host, s.port) != key]
        self._spares[index] = [newcomer, *spares][:SPARES]
        target = self._next_check(bucket, now)
        return AddResult.FULL if target is None else PingFirst(target)

    def _next_check(self, bucket: list[Entry], now: float) -> Entry | None:
        due = [e for e in bucket if now - e.last_seen > STALE_AFTER
               and (e.checking is None or now - e.checking > CHECK_TIMEOUT)]
        if not due:
            return None
        target = min(due, key=lambda e: e.last_seen)
        target.checking = now
        return target

    def _insert(self, index: int, entry: Entry, now: float) -> None:
        self._buckets[index].append(entry)
        self._by_ip[ip_key(entry.host, entry.port)] = entry
        self._changed[index] = now

    def _promote(self, index: int, now: float) -> None:
        """Fill a freed slot with the newest spare that still passes the Sybil limits."""
        spares = self._spares.get(index, [])
        while spares and len(self._buckets[index]) < self.limit(index):
            spare = spares.pop(0)
            if (ip_key(spare.host, spare.port) not in self._by_ip
                    and all(e.subnet != spare.subnet for e in self._buckets[index])):
                self._insert(index, spare, now)
        if not spares:
            self._spares.pop(index, None)

    def _remove(self, bucket: list[Entry], entry: Entry) -> None:
        bucket.remove(entry)
        self._by_ip.pop(ip_key(entry.host, entry.port), None)

    def failed(self, host: str, port: int) -> None:
        """A request to this address timed out. After MAX_FAILS the entry is bad: a spare
        takes its place if there is one (BEP 5), else it stays until DROP_AFTER."""
        entry = self._by_ip.get(ip_key(host, port))
        if entry is None or entry.port != port:
            return
        entry.fails += 1
        index = bucket_index(self.own_id, entry.id)
        if entry.fails >= DROP_AFTER or (entry.fails >= MAX_FAILS and index in self._spares):
            self._remove(self._buckets[index], entry)
            self._promote(index, self._changed[index])

    def pinged(self, host: str, port: int, answered: bool, now: float) -> tuple[str, int] | None:
        """The outcome of a :class:`PingFirst` ping (with its retry). Silent: a spare replaces
        the entry. Answered: it stays, and the address of the bucket's next questionable entry
        is returned to ping while spares wait (BEP 5); the spares stay as candidates."""
        entry = self._by_ip.get(ip_key(host, port))
        if entry is None or entry.port != port:
            return None
        entry.checking = None
        index = bucket_index(self.own_id, entry.id)
        if not answered:
            if index in self._spares:
                self._remove(self._buckets[index], entry)
                self._promote(index, now)
            return None
        entry.last_seen, entry.fails = now, 0
        target = self._next_check(self._buckets[index], now) if index in self._spares else None
        return None if target is None else target.addr

    def closest(self, target: bytes, n: int = K) -> list[Entry]:
        """The ``n`` known nodes closest to ``target`` that are not bad, topped up with the
        closest bad ones when there are fewer (a burst of loss must not leave lookups with
        no seeds while the table still knows nodes)."""
        ranked = sorted(self._by_ip.values(),
                        key=lambda e: (e.fails >= MAX_FAILS, distance(e.id, target)))
        return ranked[:n]

    def entries(self) -> list[Entry]:
        return list(self._by_ip.values())

    def questionable(self, now: float, limit: int = 8) -> list[Entry]:
        """Entries to ping, least recently seen first: silent for STALE_AFTER (BEP 5 calls
        them questionable). A ping that times out counts as a failure (:meth:`failed`), so a
        node that stays silent is replaced by a newcomer after MAX_FAILS rounds, and dropped
        after DROP_AFTER."""
        old = [e for e in self._by_ip.values() if now - e.last_seen > STALE_AFTER]
        old.sort(key=lambda e: e.last_seen)
        return old[:limit]

    def depth(self) -> int:
        """One past the deepest non-empty bucket: the buckets in range of the network we know.
        Deeper buckets would need ids closer to ours than any node that exists (-1: empty)."""
        deepest = max((i for i, b in enumerate(self._buckets) if b), default=-2)
        return min(deepest + 1, ID_BITS - 1)

    def stale_buckets(self, now: float, limit: int = 4) -> list[int]:
        """Indices of in-range buckets not changed for REFRESH_AFTER, oldest first (BEP 5)."""
        due = [i for i in range(self.depth() + 1) if now - self._changed[i] > REFRESH_AFTER]
        due.sort(key=lambda i: self._changed[i])
        return due[:limit]

    def refreshed(self, index: int, now: float) -> None:
        """A refresh lookup for bucket ``index`` ran: it is not due again for REFRESH_AFTER,
        even when the lookup found nobody new for it."""
        self._changed[index] = now

    def import_nodes(self, nodes: Iterable[tuple[bytes, str, int]], now: float) -> int:
        """Load saved contacts (e.g. from the state dir); returns how many were kept."""
        return sum(self.add(i, h, p, now) is AddResult.ADDED for i, h, p in nodes)

    def estimated_size(self) -> int:
        """Network size from how densely ids pack around ours (least squares on i / d_i).

        With N uniformly random ids, the i-th closest to a point lies at about i/N of the id
        space, so N ≈ Σ i² / Σ (i · d_i / 2^160) over our closest contacts.
        """
        closest = self.closest(self.own_id, 16)
        if not closest:
            return 0
        num = den = 0.0
        for i, e in enumerate(closest, start=1):
            num += i * i
            den += i * distance(e.id, self.own_id) / 2.0**160
        return int(num / den) if den > 0 else len(closest)


def random_id_in_bucket(own_id: bytes, index: int, rng: random.Random) -> bytes:
    """A random id sharing exactly ``index`` leading bits with ``own_id`` (the refresh target
    for that bucket); index 159 also covers the ids sharing all 160 bits but one."""
    width = ID_BITS - 1 - index
    d = (1 << width) | rng.getrandbits(width) if width else 1
    value = int.from_bytes(own_id, "big") ^ d
    return value.to_bytes(ID_BYTES, "big")
