"""The pkarr client: a key's most recent signed packet, and publishing one, over the Mainline
DHT and pkarr relays (the role of the Rust pkarr ``Client``).

Every part of pkdns that reads or writes packets on the network goes through here with the
same rules: the daemon's packet source (:mod:`pkdns.answer.source`), the relay API's
NetworkOnly GET and its PUT (:mod:`pkdns.server.face`), ``pkdns resolve`` / ``pkdns publish``,
the republisher and the demo. The rules of reading are :mod:`pkdns.pkarr.resolving`'s.

Publishing (:meth:`PkarrClient.publish`): a BEP 44 put of the packet's mutable item (seq = the
timestamp, v = the DNS packet) and a PUT to each relay, in parallel. KRPC errors 301 (CAS
mismatch) and 302 (sequence number less than current, BEP 44) and relay answers 409 (a more
recent packet is known) and 412 (``If-Match`` failed) are conflicts: a newer packet is out
there. Relays are imported lazily: aiohttp costs a cold command up to a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pkdns import log
from pkdns.clock import SYSTEM_CLOCK, Clock
from pkdns.dht.item import MutableItem
from pkdns.dht.put import PutResult
from pkdns.dht.storage import E_CAS, E_OLD_SEQ
from pkdns.errors import PkdnsError
from pkdns.pkarr.keys import PublicKey
from pkdns.pkarr.resolving import (
    DHT,
    MAX_ROUNDS,
    ROUND_MIN,
    Dht,
    MutableStream,
    Relay,
    Resolution,
    Resolving,
    relay_error,
)
from pkdns.pkarr.signed_packet import SignedPacket

_log = log.get("pkarr_client")
PUT_TIMEOUT = 5.0
CONFLICT_KRPC = (E_CAS[0], E_OLD_SEQ[0])
CONFLICT_HTTP = (409, 412)


def to_item(packet: SignedPacket) -> MutableItem:
    """A signed packet as the BEP 44 item it is (pkarr ``design/base.md``: seq = timestamp,
    v = packet)."""
    return MutableItem(k=packet.public_key.raw, seq=packet.timestamp, v=packet.packet,
                       sig=packet.signature)


@dataclass(frozen=True, slots=True)
class Published:
    """One destination's answer to a publish: ``stored`` nodes (a relay reports its own
    count), ``conflict`` when a more recent packet is out there, ``code`` the KRPC error or
    HTTP status of a refusal."""

    stored: int
    conflict: bool = False
    error: str | None = None
    code: int | None = None
    asked: int = 0


@dataclass(frozen=True, slots=True)
class Publication:
    """Every destination's answer: the DHT's (None when not used, or when it could not be
    used at all: ``dht_error``, e.g. the join failed) and each relay's."""

    dht: Published | None
    relays: tuple[tuple[str, Published], ...] = ()
    dht_error: str | None = None

    @property
    def stored(self) -> bool:
        return any(p.stored > 0 for p in self._all())

    @property
    def conflict(self) -> bool:
        return any(p.conflict for p in self._all())

    def _all(self) -> list[Published]:
        return ([self.dht] if self.dht is not None else []) + [p for _, p in self.relays]


class PkarrClient:
    """Resolve and publish over a DHT node (or none) and relays (maybe none).

    ``ready``, when given, is awaited before the DHT is used (the command line joins the DHT
    there while the relays are already asked); a :class:`PkdnsError` from it is the DHT's
    failure, reported next to what the relays said.
    """

    def __init__(self, dht: Dht | None, relays: Sequence[Relay] = (), *,
                 clock: Clock = SYSTEM_CLOCK,
                 ready: Callable[[], Awaitable[None]] | None = None) -> None:
        self.dht, self.relays, self.clock, self.ready = dht, tuple(relays), clock, ready
        self._dht_reachable = True

    def resolve(self, key: PublicKey, *, timeout: float, grace: float | None = None,
                rounds: int | None = MAX_ROUNDS, round_min: float = ROUND_MIN,
                use_dht: bool = True, agree: int | None = None) -> Resolving:
        """Start resolving ``key``; iterate the result for newer packets as they arrive.

        ``timeout``: the DHT rounds' deadline. ``grace``: once a packet is in, ask the DHT
        for this much longer, then stop (None: until the rounds end). ``rounds``: None for
        rounds until the deadline. ``use_dht=False``: only the relays (pkarr NetworkOnly
        over relays is not a thing; the relay API's NetworkOnly passes no relays instead).
        ``agree``: stop before the grace is over once this many DHT nodes gave the packet in
        hand and none an older one (a one-shot command; :meth:`GetMutableLookup.settled`).
        """
        return Resolving(self, key, timeout, grace, rounds, round_min, use_dht, agree)

    async def resolve_most_recent(self, key: PublicKey, *, timeout: float,
                                  grace: float | None = None) -> Resolution:
        """The most recent packet over every source (the result of a whole :meth:`resolve`)."""
        return await self.resolve(key, timeout=timeout, grace=grace).collect()

    def use_dht(self) -> bool:
        """Ask the DHT unless it is unreachable and relays can answer instead (logged when
        that changes)."""
        if self.dht is None:
            return False
        reachable = not self.relays or self.dht.reachable()
        if reachable != self._dht_reachable:
            self._dht_reachable = reachable
            if reachable:
                _log.info("dht_reachable_again")
            else:
                _log.warning("dht_unreachable", answering_from=f"{len(self.relays)} relay(s)")
        return reachable

    async def publish(self, packet: SignedPacket, *, timeout: float = PUT_TIMEOUT,
                      use_relays: bool = True, if_match: int | None = None) -> Publication:
        """Put ``packet`` on the DHT and the relays at once; every destination's answer."""
        relays = self.relays if use_relays else ()
        dht_part = self._put_dht(packet, timeout) if self.dht is not None else _nothing()
        dht, *answers = await asyncio.gather(dht_part, *(_put_relay(r, packet, if_match)
                                                         for r in relays))
        per_relay = tuple((r.url, a) for r, a in zip(relays, answers, strict=True)
                          if isinstance(a, Published))
        if isinstance(dht, str):
            return Publication(None, per_relay, dht_error=dht)
        return Publication(dht, per_relay)

    async def _put_dht(self, packet: SignedPacket, timeout: float) -> Published | str:
        """The DHT's answer, or why the DHT could not be used at all."""
        assert self.dht is not None
        if self.ready is not None:
            try:
                await self.ready()
            except PkdnsError as exc:
                return str(exc)
        try:
            result = await self.dht.put_mutable(to_item(packet), timeout=timeout)
        except Exception as exc:  # a broken DHT is its own answer; the relays' still count
            _log.warning("dht_put_failed", error=repr(exc))
            return f"DHT put failed: {exc}"
        return dht_published(result)


def dht_published(result: PutResult) -> Published:
    """What a BEP 44 put's result means (module docstring)."""
    if result.stored:
        return Published(result.stored, asked=result.asked)
    if result.error is None:
        why = "no DHT node answered" if result.asked else "no DHT nodes to ask"
        return Published(0, error=why, asked=result.asked)
    code, message = result.error
    return Published(0, conflict=code in CONFLICT_KRPC, error=f"KRPC error {code}: {message}",
                     code=code, asked=result.asked)


async def _put_relay(relay: Relay, packet: SignedPacket, if_match: int | None) -> Published:
    try:
        return Published(await relay.put(packet, if_match))
    except Exception as exc:  # the relay's failure is its answer; others still count
        status = getattr(exc, "status", None)
        return Published(0, conflict=status in CONFLICT_HTTP, error=relay_error(relay, exc),
                          code=status)


async def _nothing() -> None:
    return None


__all__ = ["DHT", "Dht", "MutableStream", "PkarrClient", "Publication", "Published", "Relay",
           "Resolution", "Resolving", "dht_published", "to_item"]
