"""What the pkarr packet source holds (verified packets, remembered absences and query counts,
each in a bounded LRU of pkarr.packet_cache_size entries), and the one interface every user of
the source types against (:class:`PacketSource`).

Why a module of its own: these are the rules about what is *kept*, with no network and no
lookups: a packet is never downgraded (a replayed older packet changes nothing), one dated more
than an hour ahead is rejected (a signer with a broken clock must not freeze its record), a
packet is fresh for its minimum record TTL clamped to pkarr.min_ttl .. pkarr.max_ttl, and a
proven absence is remembered for pkarr.negative_ttl.
:class:`~pkdns.answer.source.PkarrSource` adds the lookups on top; persistence and the
republisher only use this part (``insert``, ``cached``, ``query_counts``). Pure: time is passed
in, and the owner logs.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from cachetools import LRUCache

from pkdns.config import PkarrConfig
from pkdns.pkarr.evidence import from_the_future
from pkdns.pkarr.keys import PublicKey
from pkdns.pkarr.signed_packet import SignedPacket


class Status(enum.Enum):
    """Outcome of :meth:`PacketSource.get`; the handler maps each to one RCODE."""

    FOUND = "found"                # NOERROR (answer from the packet)
    NOT_FOUND = "not_found"        # NXDOMAIN + SOA
    UNAVAILABLE = "unavailable"    # SERVFAIL
    RATE_LIMITED = "rate_limited"  # REFUSED
    OVERLOADED = "overloaded"      # SERVFAIL


@dataclass(frozen=True, slots=True)
class SourceResult:
    """A packet (maybe stale) with its age in seconds, or why there is none."""

    status: Status
    packet: SignedPacket | None = None
    age: float = 0.0
    stale: bool = False
    negative_ttl: int = 0


@dataclass(slots=True)
class CachedPacket:
    """A held packet; ``fetched_at`` (monotonic) is when the network last confirmed it."""

    packet: SignedPacket
    fetched_at: float
    last_attempt: float = field(default=float("-inf"))


class PacketSource(Protocol):
    """Where signed packets come from (:class:`~pkdns.answer.source.PkarrSource`): the DNS
    handler and the HTTPS gateway ``get``; the relay API, persistence and the republisher also
    read and fill what is held."""

    async def get(self, key: PublicKey, client_ip: str) -> SourceResult:
        """The key's packet: cached, refreshed or looked up (never raises for network
        trouble)."""
        ...

    def insert(self, packet: SignedPacket, fetched_at: float | None = None) -> bool: ...

    def cached(self) -> Iterator[CachedPacket]: ...

    def held(self, key: PublicKey) -> CachedPacket | None: ...

    def query_counts(self) -> dict[PublicKey, int]: ...


class Kept(enum.Enum):
    """What :meth:`HeldPackets.insert` did with a packet."""

    STORED = "stored"
    NOT_NEWER = "not_newer"        # an equal or more recent packet is held
    FROM_THE_FUTURE = "future"     # dated more than an hour after the wall clock


class HeldPackets:
    """Held packets, negative entries and per-key query counts: pure bookkeeping, the caller
    passes the time (``now`` monotonic, ``wall_us``) and logs what it needs to."""

    def __init__(self, cfg: PkarrConfig) -> None:
        self.cfg = cfg
        size = max(cfg.packet_cache_size, 1)
        self._packets: LRUCache[bytes, CachedPacket] = LRUCache(size)
        self._negative: LRUCache[bytes, float] = LRUCache(size)
        self._queries: LRUCache[bytes, int] = LRUCache(size)

    def insert(self, packet: SignedPacket, fetched_at: float, wall_us: int) -> Kept:
        """Hold ``packet`` (confirmed by the network at ``fetched_at``, monotonic) unless an
        equal or more recent one is held, or it is dated more than an hour after ``wall_us``
        (:func:`from_the_future`)."""
        if from_the_future(packet, wall_us):
            return Kept.FROM_THE_FUTURE
        raw = packet.public_key.raw
        held = self._packets.get(raw)
        if held is not None and not packet.more_recent_than(held.packet):
            return Kept.NOT_NEWER
        self._packets[raw] = CachedPacket(packet, fetched_at)
        self._negative.pop(raw, None)
        return Kept.STORED

    def cached(self) -> Iterator[CachedPacket]:
        """Every held packet (a snapshot, safe to iterate while queries run)."""
        return iter(list(self._packets.values()))

    def held(self, key: PublicKey) -> CachedPacket | None:
        """The packet held for ``key``, or None (a use: it becomes the most recently used)."""
        return self._packets.get(key.raw)

    def forget(self, key: PublicKey) -> None:
        """Drop the held packet (too old to serve even stale)."""
        self._packets.pop(key.raw, None)

    def query_count(self, key: PublicKey) -> int:
        """How many queries asked for ``key`` since it entered the bounded counter."""
        return self._queries.get(key.raw, 0)

    def query_counts(self) -> dict[PublicKey, int]:
        """Queries per key for every key still counted."""
        return {PublicKey(raw): n for raw, n in list(self._queries.items())}

    def count_query(self, key: PublicKey) -> None:
        raw = key.raw
        self._queries[raw] = self._queries.get(raw, 0) + 1

    def fresh_for(self, entry: CachedPacket) -> int:
        """Seconds ``entry`` is fresh after ``fetched_at`` (min record TTL, clamped)."""
        return entry.packet.ttl(self.cfg.min_ttl, self.cfg.max_ttl)

    def absent_for(self, key: PublicKey, now: float) -> int | None:
        """Whole seconds (>= 1) the key's remembered absence has left; None if none."""
        expires = self._negative.get(key.raw)
        if expires is None or expires <= now:
            return None
        return max(int(expires - now), 1)

    def remember_absent(self, key: PublicKey, now: float) -> None:
        self._negative[key.raw] = now + self.cfg.negative_ttl
