"""Resolving a key over the DHT and the relays: the rules every packet passes, as one
:class:`Resolving` (started by :meth:`pkdns.pkarr.client.PkarrClient.resolve`).

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
- a packet only a suspected Sybil cluster gave (the lookup holds it back,
  :mod:`pkdns.dht.sybil`) is taken only once the rounds are over -- LOOKS_PAST_A_CLUSTER
  rounds found nothing newer, or the deadline passed -- so a newer packet on the honest nodes
  beyond the cluster still wins;
- absence: proven by a DHT lookup (:func:`pkdns.pkarr.evidence.absence_proven`); a relay 404
  proves it only for a client without a DHT (a relay knows only what was put through it or
  what its own lookup found);
- with relays configured and the DHT unreachable (silent to us), the DHT is not asked: the
  relays answer at once instead of after a DHT deadline. Without relays the DHT is always
  asked (the lookups are how the node notices it is back).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pkdns import log
from pkdns.clock import Clock
from pkdns.dht.item import MutableItem
from pkdns.dht.lookup import Outcome
from pkdns.dht.put import PutResult
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
SETTLE_POLL = 0.02
"""How often a resolve with a packet in hand (and ``agree`` set) checks whether the DHT's nodes
agree on it."""
MAX_ROUNDS = 3
LOOKS_PAST_A_CLUSTER = 2
"""Rounds that ended with only a suspected Sybil cluster's packet after which a resolve takes
it: the second starts from a table that learnt during the first (a one-shot command's first
round often starts from the cluster itself, the closest contacts a bootstrap host lists)."""
DHT = "dht"
"""``Resolution.source`` of a packet the DHT gave (a relay's is its URL)."""


class MutableStream(Protocol):
    """What ``DhtNode.get_mutable`` returns: verified items as they arrive, then counters."""

    def __aiter__(self) -> AsyncIterator[Any]: ...

    @property
    def outcome(self) -> Outcome: ...

    async def cancel(self) -> None: ...

    def settled(self, quorum: int) -> bool:
        """``quorum`` nodes gave the newest item and none an older one (nothing held back)."""
        ...

    @property
    def held_back(self) -> MutableItem | None:
        """An item only a suspected Sybil cluster gave, which the lookup did not release
        (:attr:`pkdns.dht.getlookup.GetMutableLookup.held_back`), or None."""
        ...


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
            total.shunned_clusters += o.shunned_clusters
        return total


class Sources(Protocol):
    """Where a resolve asks (:class:`pkdns.pkarr.client.PkarrClient`)."""

    dht: Dht | None
    relays: tuple[Relay, ...]
    clock: Clock
    ready: Callable[[], Awaitable[None]] | None

    def use_dht(self) -> bool: ...


class Resolving:
    """One resolve in progress: iterate for each packet more recent than every one before it;
    :attr:`result` holds the outcome once the iteration ended (or :meth:`cancel` ran)."""

    def __init__(self, sources: Sources, key: PublicKey, timeout: float, grace: float | None,
                 rounds: int | None, round_min: float, use_dht: bool,
                 agree: int | None = None) -> None:
        self.result = Resolution(key, has_dht=sources.dht is not None)
        self._client, self._timeout, self._grace = sources, timeout, grace
        self._agree = agree
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
        await self._rounds_until(dht, asyncio.get_running_loop().time() + self._timeout)
        # A packet only a Sybil cluster gave, kept back while another round could find a
        # newer one: the last resort once the rounds are over (the most recent still wins).
        held = [s.held_back for s in r.rounds if s.held_back is not None]
        if held:
            last = max(held, key=lambda i: int(i.seq))
            self._offer(last.k, last.seq, last.v, last.sig)

    async def _rounds_until(self, dht: Dht, deadline: float) -> None:
        r = self.result
        loop = asyncio.get_running_loop()
        done = looks = 0
        while self._rounds is None or done < self._rounds:
            began = loop.time()
            done += 1
            if not await self._round(dht, deadline - began):
                return
            held = r.rounds[-1].held_back is not None
            looks += held
            if looks >= LOOKS_PAST_A_CLUSTER:
                return
            # a round that ended at once had no one to ask: another would not either (unless
            # it heard only a cluster: the next starts from everyone that answered meanwhile)
            left = deadline - loop.time()
            if (r.best is not None or (loop.time() - began < self._round_min and not held)
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
        # the next item is awaited in a task that outlives a poll's timeout (cancelling an
        # async generator's anext would end the generator)
        pending: asyncio.Future[Any] | None = None
        try:
            while True:
                wait = None if self._cutoff is None else max(0.0, self._cutoff - loop.time())
                if wait is not None and self._agree is not None:
                    wait = min(wait, SETTLE_POLL)
                if pending is None:
                    pending = asyncio.ensure_future(anext(items))
                done, _ = await asyncio.wait({pending}, timeout=wait)
                if not done:
                    if self._settled(stream) or loop.time() >= (self._cutoff or 0.0):
                        break
                    continue
                next_item, pending = pending, None
                try:
                    item = next_item.result()
                except StopAsyncIteration:
                    break
                self._offer(item.k, item.seq, item.v, item.sig)
            r.dht_absent = r.dht_absent or absence_proven(stream.outcome)
        except Exception as exc:
            _log.warning("dht_lookup_failed", key=r.key.z32, error=repr(exc))
            return False
        finally:
            if pending is not None:
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
            await stream.cancel()
        # converged: another round would learn nothing new -- unless this one heard only a
        # Sybil cluster's packet (whose members name only each other): the next starts from
        # a table that learnt from everyone who answered
        again = not stream.outcome.converged or stream.held_back is not None
        return not r.dht_absent and again and self._cutoff is None

    def _settled(self, stream: MutableStream) -> bool:
        """With ``agree``: enough of the DHT's nodes agree on its newest packet that the rest
        of the grace would only wait on stragglers."""
        return self._agree is not None and stream.settled(self._agree)

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


def relay_error(relay: Relay, exc: Exception) -> str:
    """A relay's failure in words, naming the relay (our own errors already do)."""
    if isinstance(exc, PkdnsError):
        return str(exc)
    return f"relay {relay.url}: {type(exc).__name__}" + (f": {exc}" if str(exc) else "")


__all__ = ["DHT", "MAX_ROUNDS", "ROUND_MIN", "Dht", "MutableStream", "Relay", "Resolution",
           "Resolving", "Sources", "relay_error"]
