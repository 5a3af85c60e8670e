"""The pkarr client: a key's most recent signed packet, and publishing one, over the Mainline
DHT and pkarr relays (the role of the Rust pkarr ``Client``).

Every part of pkdns that reads or writes packets on the network goes through here with the
same rules: the daemon's packet source (:mod:`pkdns.answer.source`), the relay API's
NetworkOnly GET and its PUT (:mod:`pkdns.server.face`), ``pkdns resolve`` / ``pkdns publish``,
the republisher and the demo.

Reading (:meth:`PkarrClient.resolve`):

- a packet counts only when its signature verifies for the asked key: DHT values through
  :meth:`SignedPacket.from_bep44` (at most 1000 bytes of DNS packet, BEP 44), relay bodies
  through ``from_relay_payload`` (read up to 1104 bytes); a DHT value that is no valid packet
  is counted with its seq (a relay reports the newest such seq);
- a packet dated more than an hour after our wall clock is refused
  (:func:`pkdns.pkarr.evidence.from_the_future`);
- the most recent packet wins (:meth:`SignedPacket.more_recent_than`: timestamp, then bytes);
  the iteration yields each packet that beats every one before it, as it arrives;
- the DHT is asked in rounds: on a lossy network a round can end with every close node
  silent, and the next one (from a table that learnt meanwhile) often succeeds; rounds stop
  once a packet came, absence was proven, or the deadline passed; the relays are asked in
  parallel;
- absence: proven by a DHT lookup (:func:`pkdns.pkarr.evidence.absence_proven`); a relay 404
  proves it only for a client without a DHT (a relay knows only what was put through it or
  what its own lookup found);
- with relays configured and the DHT unreachable (silent to us), the DHT is not asked: the
  relays answer at once instead of after a DHT deadline. Without relays the DHT is always
  asked (the lookups are how the node notices it is back).

Publishing (:meth:`PkarrClient.publish`): a BEP 44 put of the packet's mutable item (seq = the
timestamp, v = the DNS packet) and a PUT to each relay, in parallel. KRPC errors 301 (CAS
mismatch) and 302 (sequence number less than current, BEP 44) and relay answers 409 (a more
recent packet is known) and 412 (``If-Match`` failed) are conflicts: a newer packet is out
there. Relays are imported lazily: aiohttp costs a cold command up to a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pkdns import log
from pkdns.clock import SYSTEM_CLOCK, Clock
from pkdns.dht.item import MutableItem
from pkdns.dht.lookup import Outcome
from pkdns.dht.put import PutResult
from pkdns.dht.storage import E_CAS, E_OLD_SEQ
from pkdns.errors import DecodeError, PkdnsError
from pkdns.pkarr.evidence import absence_proven, from_the_future
from pkdns.pkarr.keys import PublicKey
from pkdns.pkarr.signed_packet import SignedPacket

if TYPE_CHECKING:
    from pkdns.pkarr.relay_client import RelayResponse

_log = log.get("pkarr_client")
ROUND_MIN = 0.2
"""Another DHT round only after a round that lasted this long (it asked nodes that stayed
silent) and with this much of the deadline left."""
MAX_ROUNDS = 3
PUT_TIMEOUT = 5.0
CONFLICT_KRPC = (E_CAS[0], E_OLD_SEQ[0])
CONFLICT_HTTP = (409, 412)
DHT = "dht"
"""``Resolution.source`` of a packet the DHT gave (a relay's is its URL)."""


class MutableStream(Protocol):
    """What ``DhtNode.get_mutable`` returns: verified items as they arrive, then counters."""

    def __aiter__(self) -> AsyncIterator[Any]: ...

    @property
    def outcome(self) -> Outcome: ...

    async def cancel(self) -> None: ...


class Dht(Protocol):
    """The part of ``DhtNode`` the client uses."""

    def get_mutable(self, public_key: bytes, seq_floor: int | None = None, *,
                    timeout: float = ...) -> MutableStream: ...

    async def put_mutable(self, item: MutableItem, *, timeout: float = ...) -> PutResult: ...

    def reachable(self) -> bool:
        """False while the DHT stays silent to us (:mod:`pkdns.dht.health`)."""
        ...


class Relay(Protocol):
    """One pkarr relay (:class:`pkdns.pkarr.relay_client.RelayClient`)."""

    url: str

    async def get(self, key: PublicKey, policy: str | None = None,
                  newer_than: SignedPacket | None = None) -> RelayResponse: ...

    async def put(self, packet: SignedPacket, if_match: int | None = None) -> int: ...


def to_item(packet: SignedPacket) -> MutableItem:
    """A signed packet as the BEP 44 item it is (pkarr ``design/base.md``: seq = timestamp,
    v = packet)."""
    return MutableItem(k=packet.public_key.raw, seq=packet.timestamp, v=packet.packet,
                       sig=packet.signature)


@dataclass(slots=True)
class Resolution:
    """What one resolve found: the most recent packet and where from, or what shows there is
    none (``absent``), with the counters a caller reports."""

    key: PublicKey
    best: SignedPacket | None = None
    source: str = ""                   # DHT or the relay URL that gave ``best``
    dht_used: bool = False
    dht_absent: bool = False           # a DHT round proved absence
    relays_absent: int = 0             # relays that answered "no packet"
    invalid: int = 0                   # DHT values that were no valid packet
    newest_invalid_seq: int | None = None
    future: int = 0                    # packets dated more than an hour ahead (refused)
    errors: list[str] = field(default_factory=list)   # each relay that failed, in words
    dht_error: str | None = None       # the DHT could not be used at all (join failed)
    rounds: list[MutableStream] = field(default_factory=list)
    finished: bool = False             # every source ended (not cut short)
    has_dht: bool = False

    @property
    def absent(self) -> bool:
        """Proven absent: the DHT said so, or (without a DHT) a relay did."""
        if self.best is not None or not self.finished:
            return False
        return self.dht_absent if self.has_dht else self.relays_absent > 0

    def dht_counters(self) -> Outcome:
        """The counters of every DHT round, summed."""
        total = Outcome()
        for stream in self.rounds:
            o = stream.outcome
            total.queried += o.queried
            total.responded += o.responded
            total.values += o.values
            total.timed_out += o.timed_out
        return total


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


class Resolving:
    """One resolve in progress: iterate for each packet more recent than every one before it;
    :attr:`result` holds the outcome once the iteration ended (or :meth:`cancel` ran)."""

    def __init__(self, client: PkarrClient, key: PublicKey, timeout: float, grace: float | None,
                 rounds: int | None, round_min: float, use_dht: bool) -> None:
        self.result = Resolution(key, has_dht=client.dht is not None)
        self._client, self._timeout, self._grace = client, timeout, grace
        self._rounds, self._round_min, self._use_dht = rounds, round_min, use_dht
        self._queue: asyncio.Queue[SignedPacket | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._cutoff: float | None = None

    def __aiter__(self) -> AsyncIterator[SignedPacket]:
        return self._packets()

    async def _packets(self) -> AsyncIterator[SignedPacket]:
        parts = [self._relay(r) for r in self._client.relays]
        if self._use_dht and self._client.dht is not None and self._client.use_dht():
            parts.append(self._dht(self._client.dht))
        self._tasks = [asyncio.ensure_future(self._part(p)) for p in parts]
        running = len(self._tasks)
        while running:
            packet = await self._queue.get()
            if packet is None:
                running -= 1
            else:
                yield packet
        self.result.finished = True

    async def _part(self, coro: Awaitable[None]) -> None:
        try:
            await coro
        finally:
            self._queue.put_nowait(None)

    async def cancel(self) -> None:
        """Stop every source still asking (idempotent)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def collect(self) -> Resolution:
        """Run to the end; the result."""
        try:
            async for _ in self:
                pass
        finally:
            await self.cancel()
        return self.result

    def _take(self, packet: SignedPacket, where: str) -> None:
        """The rules every packet passes, whichever way it came."""
        r = self.result
        if packet.public_key != r.key:
            return
        if from_the_future(packet, self._client.clock.wall_us()):
            r.future += 1
            _log.warning("pkarr_future_packet_rejected", key=r.key.z32, ts=packet.timestamp,
                         source=where)
            return
        if r.best is None or packet.more_recent_than(r.best):
            r.best, r.source = packet, where
            self._queue.put_nowait(packet)
        if self._grace is not None and self._cutoff is None:
            self._cutoff = asyncio.get_running_loop().time() + self._grace

    async def _relay(self, relay: Relay) -> None:
        try:
            response = await relay.get(self.result.key)
        except Exception as exc:  # an unreachable relay is no evidence either way
            _log.debug("relay_lookup_failed", key=self.result.key.z32, error=repr(exc))
            self.result.errors.append(relay_error(relay, exc))
            return
        if response.packet is None:
            self.result.relays_absent += 1
        else:
            self._take(response.packet, relay.url)

    async def _dht(self, dht: Dht) -> None:
        """Rounds of DHT lookups (module docstring); the deadline starts once joined."""
        r = self.result
        if self._client.ready is not None:
            try:
                await self._client.ready()
            except PkdnsError as exc:
                r.dht_error = str(exc)
                return
        r.dht_used = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        done = 0
        while self._rounds is None or done < self._rounds:
            began = loop.time()
            done += 1
            if not await self._round(dht, deadline - began):
                return
            # a round that ended at once had no one to ask: another would not either
            left = deadline - loop.time()
            if (r.best is not None or loop.time() - began < self._round_min
                    or left < max(self._round_min, 0.1)):
                return

    async def _round(self, dht: Dht, timeout: float) -> bool:
        """One lookup; False when another round would be pointless (absence proven, every
        close node answered, or the DHT is broken: a broken DHT makes the key unavailable,
        never crashes the caller)."""
        r = self.result
        # No seq floor: nodes holding exactly our packet must send it, or a cache could never
        # confirm what it holds.
        try:
            stream = dht.get_mutable(r.key.raw, None, timeout=timeout)
        except Exception as exc:
            _log.warning("dht_lookup_failed", key=r.key.z32, error=repr(exc))
            return False
        r.rounds.append(stream)
        loop = asyncio.get_running_loop()
        items = aiter(stream)
        try:
            while True:
                wait = None if self._cutoff is None else max(0.0, self._cutoff - loop.time())
                try:
                    item = await asyncio.wait_for(anext(items), wait)
                except (StopAsyncIteration, TimeoutError):
                    break
                self._offer(item.k, item.seq, item.v, item.sig)
            r.dht_absent = r.dht_absent or absence_proven(stream.outcome)
        except Exception as exc:
            _log.warning("dht_lookup_failed", key=r.key.z32, error=repr(exc))
            return False
        finally:
            await stream.cancel()
        return not r.dht_absent and not stream.outcome.converged and self._cutoff is None

    def _offer(self, k: bytes, seq: int, v: bytes, sig: bytes) -> None:
        try:
            packet = SignedPacket.from_bep44(k, seq, v, sig)
        except DecodeError as exc:
            r = self.result
            r.invalid += 1
            r.newest_invalid_seq = max(r.newest_invalid_seq or 0, int(seq))
            _log.debug("dht_value_rejected", key=r.key.z32, error=str(exc))
            return
        self._take(packet, DHT)


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
                use_dht: bool = True) -> Resolving:
        """Start resolving ``key``; iterate the result for newer packets as they arrive.

        ``timeout``: the DHT rounds' deadline. ``grace``: once a packet is in, ask the DHT
        for this much longer, then stop (None: until the rounds end). ``rounds``: None for
        rounds until the deadline. ``use_dht=False``: only the relays (pkarr NetworkOnly
        over relays is not a thing; the relay API's NetworkOnly passes no relays instead).
        """
        return Resolving(self, key, timeout, grace, rounds, round_min, use_dht)

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
        result = await self.dht.put_mutable(to_item(packet), timeout=timeout)
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


def relay_error(relay: Relay, exc: Exception) -> str:
    """A relay's failure in words, naming the relay (our own errors already do)."""
    if isinstance(exc, PkdnsError):
        return str(exc)
    return f"relay {relay.url}: {type(exc).__name__}" + (f": {exc}" if str(exc) else "")


async def _nothing() -> None:
    return None


__all__ = ["DHT", "Dht", "MutableStream", "PkarrClient", "Publication", "Published", "Relay",
           "Resolution", "Resolving", "dht_published", "to_item"]
