"""Signed packets for public keys: cache, single-flight DHT lookups, relays.

- fresh cached packet (age < clamp(min record TTL, pkarr.min_ttl, pkarr.max_ttl)) -> at once;
- stale packet -> at once (marked stale), refreshed in the background, until pkarr.stale_max_age
  past its freshness (RFC 8767 serve-stale);
- cold key -> ONE lookup per key at a time, shared by every concurrent caller: the DHT and the
  configured relays are asked in parallel, the most recent verified packet wins. Callers are
  answered once a packet arrived AND pkarr.first_answer_window passed (a newer one may still come)
  or the lookup finished; the lookup keeps running afterwards to update the cache;
- nothing found -> NOT_FOUND (cached pkarr.negative_ttl) only if the DHT proved absence
  (:mod:`pkdns.pkarr.evidence`: enough close nodes answered without it), else UNAVAILABLE
  (SERVFAIL, never NXDOMAIN: pkdns 0.7 answered DHT timeouts with NXDOMAIN, cached 60 s);
  a relay 404 is no such proof, so it counts only in a source without a DHT.

What is held (never downgraded by a replayed older packet; nothing dated more than an hour
ahead) is :mod:`pkdns.answer.packets`.
Cold lookups draw on a node-wide budget (pkarr.dht_rate_limit, pkarr.max_concurrent_lookups);
what does not fit waits its turn, fairly between clients (:mod:`pkdns.answer.gate`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pkdns import log
from pkdns.answer.budget import Admission
from pkdns.answer.gate import LookupGate
from pkdns.answer.packets import CachedPacket, HeldPackets, SourceResult, Status
from pkdns.clock import Clock
from pkdns.config import PkarrConfig
from pkdns.errors import DecodeError
from pkdns.metrics import Metrics
from pkdns.pkarr.evidence import absence_proven
from pkdns.pkarr.keys import PublicKey
from pkdns.pkarr.signed_packet import SignedPacket

_log = log.get("pkarr_source")
ROUND_MIN = 0.2
"""Another DHT round only after a round that lasted this long (it asked nodes that stayed
silent) and with this much of the deadline left."""
MAX_ROUNDS = 3


class MutableItemLike(Protocol):
    """A verified BEP 44 item as the DHT yields it."""

    k: bytes
    seq: int
    v: bytes
    sig: bytes


class MutableStream(Protocol):
    """What ``DhtNode.get_mutable`` returns: items as they arrive, then outcome counters."""

    def __aiter__(self) -> AsyncIterator[Any]: ...

    @property
    def outcome(self) -> Any: ...

    async def cancel(self) -> None: ...


class Dht(Protocol):
    """The part of ``DhtNode`` the packet source uses."""

    def get_mutable(self, public_key: bytes, seq_floor: int | None = None, *,
                    timeout: float = ...) -> MutableStream: ...

    def reachable(self) -> bool:
        """False while the DHT stays silent to us (:mod:`pkdns.dht.health`)."""
        ...


RelayFetch = Callable[[PublicKey], Awaitable[SignedPacket | None]]
"""A relay client: the key's packet, None when the relay has none; raises when unreachable."""


@dataclass(slots=True)
class Flight:
    """One running lookup for a key, shared by every caller waiting on ``first``."""

    key: PublicKey
    first: asyncio.Future[SourceResult]
    best: SignedPacket | None = None
    dht_absent: bool = False  # the DHT lookup proved absence (:func:`absence_proven`)
    relays_absent: int = 0    # relays that answered "no packet" (404)
    invalid: int = 0
    finished: bool = False
    confirmed: bool = False  # the network returned exactly the packet we hold
    window: asyncio.TimerHandle | None = None

    def open_window(self, seconds: float, callback: Callable[[], None]) -> None:
        """After the first packet, wait ``seconds`` for a newer one before answering."""
        if self.window is None and not self.first.done():
            self.window = asyncio.get_running_loop().call_later(seconds, callback)

    def cancel_window(self) -> None:
        if self.window is not None:
            self.window.cancel()


class PkarrSource(HeldPackets):
    """The packet cache in front of the DHT and the relays."""

    def __init__(self, dht: Dht | None, cfg: PkarrConfig, clock: Clock, *,
                 relays: Sequence[RelayFetch] = (), metrics: Metrics | None = None,
                 forwarders: tuple[str, ...] = ()) -> None:
        super().__init__(cfg, clock)
        self._dht, self._relays, self._metrics = dht, tuple(relays), metrics
        self._inflight: dict[bytes, Flight] = {}
        self.gate: LookupGate[Flight] = LookupGate(cfg, clock, self._launch, self._give_up,
                                                   forwarders)
        self._tasks: set[asyncio.Task[None]] = set()
        self.lookups_started = 0
        self._dht_reachable = True

    # --- the query path ------------------------------------------------------------------

    async def get(self, key: PublicKey, client_ip: str) -> SourceResult:
        """The key's packet: cached, refreshed or looked up (never raises for network trouble)."""
        raw, now = key.raw, self._clock.monotonic()
        self._count_query(raw)
        held = self._held(raw, now)
        if held is not None:
            return held
        absent = self._absent_for(raw, now)
        if absent is not None:
            return SourceResult(Status.NOT_FOUND, negative_ttl=absent)
        flight = self._inflight.get(raw)
        if flight is None:
            flight = self._flight(key)
            if self.gate.admit(client_ip, flight) is Admission.REFUSED:
                del self._inflight[raw]
                return SourceResult(Status.RATE_LIMITED)
        result: SourceResult = await asyncio.shield(flight.first)
        return result

    def _held(self, raw: bytes, now: float) -> SourceResult | None:
        entry = self._packets.get(raw)
        if entry is None:
            return None
        age = now - entry.fetched_at
        fresh_for = self._fresh_for(entry)
        if age < fresh_for:
            return SourceResult(Status.FOUND, entry.packet, age)
        if age >= fresh_for + self._cfg.stale_max_age:
            del self._packets[raw]  # too old to serve even stale: a cold lookup again
            return None
        if (raw not in self._inflight and now - entry.last_attempt >= self._cfg.negative_ttl
                and self.gate.refresh(now)):
            entry.last_attempt = now
            self._launch(self._flight(entry.packet.public_key))
        return SourceResult(Status.FOUND, entry.packet, age, stale=True)

    # --- lookups ---------------------------------------------------------------------------

    def _flight(self, key: PublicKey) -> Flight:
        """A lookup for ``key`` that callers can join; :meth:`_launch` runs it."""
        flight = self._inflight[key.raw] = Flight(key, asyncio.get_running_loop().create_future())
        return flight

    def _launch(self, flight: Flight) -> None:
        self.lookups_started += 1
        task = asyncio.create_task(self._run(flight), name=f"pkarr-lookup-{flight.key.z32}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _give_up(self, flight: Flight) -> None:
        """The node's lookup budget had no room for ``flight`` in time: SERVFAIL, not REFUSED
        (the name is fine; we are busy)."""
        self._inflight.pop(flight.key.raw, None)
        if not flight.first.done():
            flight.first.set_result(SourceResult(Status.OVERLOADED))
        if self._metrics is not None:
            self._metrics.rate_limited.labels("dht_lookup_wait").inc()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("pkarr_lookup_crashed", error=repr(task.exception()))

    async def _run(self, flight: Flight) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = loop.call_later(self._cfg.lookup_timeout, self._settle, flight)
        parts = [self._ask_relay(flight, r) for r in self._relays]
        if self._use_dht():
            parts.append(self._ask_dht(flight))
        try:
            async with asyncio.timeout(self._cfg.lookup_timeout * 2):
                await asyncio.gather(*parts)
            flight.finished = True
        except TimeoutError:
            pass
        finally:
            deadline.cancel()
            flight.cancel_window()
            self._inflight.pop(flight.key.raw, None)
            self.gate.finished()
            outcome = self._conclude(flight)
            if self._metrics is not None:
                self._metrics.dht_lookups.labels(outcome.value).inc()
                self._metrics.dht_lookup_seconds.observe(loop.time() - started)

    def _use_dht(self) -> bool:
        """Ask the DHT unless it is unreachable and relays can answer instead: then a cold
        key gets the relays' answer (or SERVFAIL) at once, not after a DHT lookup deadline.
        Without relays the DHT is always asked (the lookups are how it notices it is back)."""
        if self._dht is None:
            return False
        reachable = not self._relays or self._dht.reachable()
        if reachable != self._dht_reachable:
            self._dht_reachable = reachable
            if reachable:
                _log.info("dht_reachable_again")
            else:
                _log.warning("dht_unreachable", answering_from=f"{len(self._relays)} relay(s)")
        return reachable

    async def _ask_dht(self, flight: Flight) -> None:
        """Rounds of DHT lookups until a packet came, absence is proven or the lookup
        deadline passed: on a lossy network a round can end early with every close node
        silent, and the next one (from a table that learnt meanwhile) often succeeds."""
        if self._dht is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._cfg.lookup_timeout
        for _ in range(MAX_ROUNDS):
            began = loop.time()
            if not await self._dht_round(flight, self._dht, deadline - began):
                return
            # a round that ended at once had no one to ask: another would not either
            if (flight.best is not None or loop.time() - began < ROUND_MIN
                    or deadline - loop.time() < ROUND_MIN):
                return

    async def _dht_round(self, flight: Flight, dht: Dht, timeout: float) -> bool:
        """One lookup; False when another round would be pointless (absence proven, or the
        DHT is broken)."""
        # No seq floor: nodes holding exactly our packet must send it, or we could never
        # confirm it and would keep serving it stale.
        try:
            stream = dht.get_mutable(flight.key.raw, None, timeout=timeout)
        except Exception as exc:
            _log.warning("dht_lookup_failed", key=flight.key.z32, error=repr(exc))
            return False
        try:
            async for item in stream:
                self._offer(flight, item.k, item.seq, item.v, item.sig)
            flight.dht_absent = absence_proven(stream.outcome)
        except Exception as exc:  # a broken DHT is UNAVAILABLE, never a crash of the query
            _log.warning("dht_lookup_failed", key=flight.key.z32, error=repr(exc))
            return False
        finally:
            await stream.cancel()
        return not flight.dht_absent

    async def _ask_relay(self, flight: Flight, relay: RelayFetch) -> None:
        try:
            packet = await relay(flight.key)
        except Exception as exc:  # an unreachable relay is no evidence either way
            _log.debug("relay_lookup_failed", key=flight.key.z32, error=repr(exc))
            return
        if packet is None:
            flight.relays_absent += 1
        elif packet.public_key == flight.key:
            self._accept(flight, packet)

    def _offer(self, flight: Flight, k: bytes, seq: int, v: bytes, sig: bytes) -> None:
        try:
            packet = SignedPacket.from_bep44(k, seq, v, sig)
        except DecodeError as exc:
            flight.invalid += 1
            _log.debug("dht_value_rejected", key=flight.key.z32, error=str(exc))
            return
        if packet.public_key == flight.key:
            self._accept(flight, packet)

    def _accept(self, flight: Flight, packet: SignedPacket) -> None:
        """A verified packet arrived: keep it if it is the newest, start the answer window."""
        if self._from_the_future(packet):
            return
        if not self.insert(packet):
            held = self._packets.get(flight.key.raw)
            if held is not None and held.packet.to_bytes() == packet.to_bytes():
                flight.confirmed = True
        if flight.best is None or packet.more_recent_than(flight.best):
            flight.best = packet
        flight.open_window(self._cfg.first_answer_window, lambda: self._settle(flight))

    def _settle(self, flight: Flight) -> None:
        """Answer waiting callers now: the best packet so far, or UNAVAILABLE at the deadline."""
        if flight.first.done():
            return
        entry = self._packets.get(flight.key.raw)
        if flight.best is None:
            flight.first.set_result(SourceResult(Status.UNAVAILABLE))
        elif entry is None:  # evicted meanwhile: still the newest verified packet we saw
            flight.first.set_result(SourceResult(Status.FOUND, flight.best))
        else:
            age = self._clock.monotonic() - entry.fetched_at
            stale = age >= self._fresh_for(entry)
            flight.first.set_result(SourceResult(Status.FOUND, entry.packet, age, stale))

    def _conclude(self, flight: Flight) -> Status:
        """The lookup ended: confirm, negatively cache, and answer anyone still waiting."""
        now = self._clock.monotonic()
        entry = self._packets.get(flight.key.raw)
        if entry is not None and flight.confirmed:
            entry.fetched_at = now
        if flight.best is not None:
            status = Status.FOUND
        elif flight.finished and (flight.dht_absent if self._dht is not None
                                  else flight.relays_absent > 0):
            status = Status.NOT_FOUND
        else:
            status = Status.UNAVAILABLE
        if not flight.first.done():
            if status is Status.NOT_FOUND and entry is None:
                self._remember_absent(flight.key.raw, now)
                flight.first.set_result(SourceResult(status, negative_ttl=self._cfg.negative_ttl))
            else:
                self._settle(flight)
        _log.debug("pkarr_lookup_done", key=flight.key.z32, status=status.value,
                   invalid=flight.invalid, dht_absent=flight.dht_absent,
                   relay_404s=flight.relays_absent)
        return status

    # --- shutdown ----------------------------------------------------------------------

    async def close(self) -> None:
        """Cancel running lookups (callers still waiting get UNAVAILABLE)."""
        self.gate.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for flight in list(self._inflight.values()):   # still waiting for the budget
            if not flight.first.done():
                flight.first.set_result(SourceResult(Status.UNAVAILABLE))
        self._inflight.clear()


__all__ = ["CachedPacket", "Dht", "PkarrSource", "RelayFetch", "SourceResult", "Status"]
