"""Signed packets for public keys: cache, single-flight lookups through the pkarr client.

- fresh cached packet (age < clamp(min record TTL, pkarr.min_ttl, pkarr.max_ttl)) -> at once;
- stale packet -> at once (marked stale), refreshed in the background, until pkarr.stale_max_age
  past its freshness (RFC 8767 serve-stale);
- cold key -> ONE lookup per key at a time, shared by every concurrent caller: the DHT and the
  configured relays are asked in parallel (:class:`pkdns.pkarr.client.PkarrClient`, whose rules
  decide what counts), the most recent verified packet wins. Callers are
  answered once a packet arrived AND pkarr.first_answer_window passed (a newer one may still come)
  or the lookup finished; the lookup keeps running afterwards to update the cache;
- nothing found -> NOT_FOUND (cached pkarr.negative_ttl) only if the DHT proved absence
  (:mod:`pkdns.pkarr.evidence`: the k closest nodes the lookup learnt of all answered
  without it), else UNAVAILABLE
  (SERVFAIL, never NXDOMAIN: pkdns 0.7 answered DHT timeouts with NXDOMAIN, cached 60 s);
  a relay 404 is no such proof, so it counts only in a source without a DHT.

What is held is :mod:`pkdns.answer.packets` (pure); this class reads the clock and logs for it.

Cold lookups draw on a node-wide budget (pkarr.dht_rate_limit, pkarr.max_concurrent_lookups);
what does not fit waits its turn, fairly between clients (:mod:`pkdns.answer.gate`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pkdns import log
from pkdns.answer.budget import Admission
from pkdns.answer.gate import LookupGate
from pkdns.answer.packets import CachedPacket, HeldPackets, Kept, SourceResult, Status
from pkdns.clock import Clock
from pkdns.config import PkarrConfig
from pkdns.metrics import Metrics
from pkdns.pkarr.client import PkarrClient, Resolution
from pkdns.pkarr.keys import PublicKey
from pkdns.pkarr.signed_packet import SignedPacket

_log = log.get("pkarr_source")


@dataclass(slots=True)
class Flight:
    """One running lookup for a key, shared by every caller waiting on ``first``."""

    key: PublicKey
    first: asyncio.Future[SourceResult]
    best: SignedPacket | None = None
    confirmed: bool = False  # the network returned exactly the packet we hold
    window: asyncio.TimerHandle | None = None

    def open_window(self, seconds: float, callback: Callable[[], None]) -> None:
        """After the first packet, wait ``seconds`` for a newer one before answering."""
        if self.window is None and not self.first.done():
            self.window = asyncio.get_running_loop().call_later(seconds, callback)

    def cancel_window(self) -> None:
        if self.window is not None:
            self.window.cancel()


class PkarrSource:
    """The packet cache in front of the pkarr client (a
    :class:`~pkdns.answer.packets.PacketSource`)."""

    def __init__(self, client: PkarrClient, cfg: PkarrConfig, clock: Clock, *,
                 metrics: Metrics | None = None, forwarders: tuple[str, ...] = ()) -> None:
        self.client, self._cfg, self._clock, self._metrics = client, cfg, clock, metrics
        self.packets = HeldPackets(cfg)
        self._inflight: dict[bytes, Flight] = {}
        self.gate: LookupGate[Flight] = LookupGate(cfg, clock, self._launch, self._give_up,
                                                   forwarders)
        self._tasks: set[asyncio.Task[None]] = set()
        self.lookups_started = 0

    # --- what is held ---------------------------------------------------------------------

    def insert(self, packet: SignedPacket, fetched_at: float | None = None) -> bool:
        """Hold ``packet`` unless an equal or more recent one is held, or it is dated more
        than an hour ahead (logged); True if it was stored. ``fetched_at`` (monotonic) lets a
        packet loaded from disk start out aged."""
        when = self._clock.monotonic() if fetched_at is None else fetched_at
        kept = self.packets.insert(packet, when, self._clock.wall_us())
        if kept is Kept.FROM_THE_FUTURE:
            _log.warning("pkarr_future_packet_rejected", key=packet.public_key.z32,
                         ts=packet.timestamp)
        return kept is Kept.STORED

    def cached(self) -> Iterator[CachedPacket]:
        return self.packets.cached()

    def held(self, key: PublicKey) -> CachedPacket | None:
        return self.packets.held(key)

    def query_count(self, key: PublicKey) -> int:
        return self.packets.query_count(key)

    def query_counts(self) -> dict[PublicKey, int]:
        return self.packets.query_counts()

    # --- the query path ------------------------------------------------------------------

    async def get(self, key: PublicKey, client_ip: str) -> SourceResult:
        """The key's packet: cached, refreshed or looked up (never raises for network trouble)."""
        now = self._clock.monotonic()
        self.packets.count_query(key)
        held = self._held(key, now)
        if held is not None:
            return held
        absent = self.packets.absent_for(key, now)
        if absent is not None:
            return SourceResult(Status.NOT_FOUND, negative_ttl=absent)
        flight = self._inflight.get(key.raw)
        if flight is None:
            flight = self._flight(key)
            if self.gate.admit(client_ip, flight) is Admission.REFUSED:
                del self._inflight[key.raw]
                return SourceResult(Status.RATE_LIMITED)
        result: SourceResult = await asyncio.shield(flight.first)
        return result

    def _held(self, key: PublicKey, now: float) -> SourceResult | None:
        entry = self.packets.held(key)
        if entry is None:
            return None
        age = now - entry.fetched_at
        fresh_for = self.packets.fresh_for(entry)
        if age < fresh_for:
            return SourceResult(Status.FOUND, entry.packet, age)
        if age >= fresh_for + self._cfg.stale_max_age:
            self.packets.forget(key)  # too old to serve even stale: a cold lookup again
            return None
        if (key.raw not in self._inflight and now - entry.last_attempt >= self._cfg.negative_ttl
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
        resolving = self.client.resolve(flight.key, timeout=self._cfg.lookup_timeout)
        try:
            async with asyncio.timeout(self._cfg.lookup_timeout * 2):
                async for packet in resolving:
                    self._accept(flight, packet)
        except TimeoutError:
            pass
        finally:
            await resolving.cancel()
            deadline.cancel()
            flight.cancel_window()
            self._inflight.pop(flight.key.raw, None)
            self.gate.finished()
            outcome = self._conclude(flight, resolving.result)
            if self._metrics is not None:
                self._metrics.dht_lookups.labels(outcome.value).inc()
                self._metrics.dht_lookup_seconds.observe(loop.time() - started)

    def _accept(self, flight: Flight, packet: SignedPacket) -> None:
        """A packet newer than the lookup's others arrived: keep it if it is the newest we
        hold, confirm the one held, start the answer window."""
        if not self.insert(packet):
            held = self.packets.held(flight.key)
            if held is not None and held.packet.to_bytes() == packet.to_bytes():
                flight.confirmed = True
        if flight.best is None or packet.more_recent_than(flight.best):
            flight.best = packet
        flight.open_window(self._cfg.first_answer_window, lambda: self._settle(flight))

    def _settle(self, flight: Flight) -> None:
        """Answer waiting callers now: the best packet so far, or UNAVAILABLE at the deadline."""
        if flight.first.done():
            return
        entry = self.packets.held(flight.key)
        if flight.best is None:
            flight.first.set_result(SourceResult(Status.UNAVAILABLE))
        elif entry is None:  # evicted meanwhile: still the newest verified packet we saw
            flight.first.set_result(SourceResult(Status.FOUND, flight.best))
        else:
            age = self._clock.monotonic() - entry.fetched_at
            stale = age >= self.packets.fresh_for(entry)
            flight.first.set_result(SourceResult(Status.FOUND, entry.packet, age, stale))

    def _conclude(self, flight: Flight, found: Resolution) -> Status:
        """The lookup ended: confirm, negatively cache, and answer anyone still waiting."""
        now = self._clock.monotonic()
        entry = self.packets.held(flight.key)
        if entry is not None and flight.confirmed:
            entry.fetched_at = now
        if flight.best is not None:
            status = Status.FOUND
        elif found.absent:
            status = Status.NOT_FOUND
        else:
            status = Status.UNAVAILABLE
        if not flight.first.done():
            if status is Status.NOT_FOUND and entry is None:
                self.packets.remember_absent(flight.key, now)
                flight.first.set_result(SourceResult(status, negative_ttl=self._cfg.negative_ttl))
            else:
                self._settle(flight)
        _log.debug("pkarr_lookup_done", key=flight.key.z32, status=status.value,
                   invalid=found.invalid, dht_absent=found.dht_absent,
                   relay_404s=found.relays_absent)
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


__all__ = ["CachedPacket", "PkarrSource", "SourceResult", "Status"]
