"""The republisher: the thin asyncio half around :class:`RepublishPlan`.

It signs ``[[zones]]`` through an injected ``build`` coroutine (seed + zone file + DynDNS
variables, re-read on every run), re-puts popular cached packets unchanged, and reports through
logs (``zone_published``, ``zone_publish_failed``, ``packet_republished``) and the
``pkdns_republished{source, result}`` counter. The DHT is reached only through ``publish``
(a signed packet in, the number of nodes that stored it out), so tests use fakes and the
daemon publishes through its pkarr client (:meth:`pkdns.pkarr.client.PkarrClient.publish`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence

from pkdns import log
from pkdns.answer.packets import PacketSource
from pkdns.clock import Clock
from pkdns.config import Config, RepublishConfig, ZoneConfig
from pkdns.errors import PkdnsError
from pkdns.metrics import Metrics
from pkdns.pkarr.signed_packet import SignedPacket
from pkdns.publish.schedule import Candidate, RepublishPlan, ZoneJob
from pkdns.state import ScheduleEntry

_log = log.get("republisher")

Publish = Callable[[SignedPacket], Awaitable[int]]
"""Put one signed packet on the DHT; returns how many nodes stored it (raises on failure)."""
BuildZone = Callable[[ZoneConfig, int], Awaitable[SignedPacket]]
"""Sign a zone at a timestamp (µs); raises PkdnsError with a clear message on bad input."""
AddressChanged = Callable[[ZoneConfig], Awaitable[bool | None]]
"""Has the host's address for the zone's DynDNS variables changed since it was signed?
(None: the zone uses no variable, or was not signed yet: nothing to check.)"""
MAX_PARALLEL = 4


class Republisher:
    """Keeps our zones and popular packets alive on the DHT (a daemon component)."""

    name = "republisher"

    def __init__(self, cfg: RepublishConfig, zones: Sequence[ZoneConfig], *, publish: Publish,
                 build: BuildZone, clock: Clock, cache: PacketSource | None = None,
                 metrics: Metrics | None = None,
                 saved: Mapping[str, ScheduleEntry] | None = None,
                 ready: Callable[[], Awaitable[object]] | None = None,
                 changed: AddressChanged | None = None) -> None:
        """``ready``: awaited before the first round (the DHT node has joined), so the
        start-up publish does not fail on an empty routing table. ``changed``: the DynDNS
        address check (:meth:`pkdns.publish.zonebuild.ZoneBuilder.changed`)."""
        self._publish, self._build, self._clock = publish, build, clock
        self._changed = changed
        self._ready = ready
        self._cache, self._metrics = cache, metrics
        self.plan = RepublishPlan(cfg, self._wall(), saved)
        self.plan.set_zones(zones, self._wall())
        self._own: dict[str, bytes] = {}     # zone name -> public key, once built
        self._last_ts: dict[bytes, int] = {}  # never sign twice at the same timestamp
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sem = asyncio.Semaphore(MAX_PARALLEL)

    def _wall(self) -> float:
        return self._clock.wall_us() / 1e6

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="republisher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    live = ("republish.*", "zones")
    """Options applied on reload (:class:`pkdns.reload.Live`)."""

    def reconfigure(self, old: Config, cfg: Config) -> None:
        """SIGHUP: the new ``[republish]`` rules, and the zones (each republished now)."""
        self.plan.set_config(cfg.republish, self._wall())
        self.reload(cfg.zones)

    def reload(self, zones: Sequence[ZoneConfig]) -> None:
        """Take the new zone list and publish every zone now."""
        self.plan.set_zones(zones, self._wall())
        self._wake.set()

    def entries(self) -> list[ScheduleEntry]:
        """The schedule, for the state store."""
        return self.plan.entries()

    async def _loop(self) -> None:
        if self._ready is not None:
            await self._ready()
        while True:
            try:
                await self.run_once()
            except Exception:  # a bug here must not stop future republishing
                _log.exception("republisher_failed")
            now = self._wall()
            delay = min(max(self.plan.next_wakeup(now) - now, 1.0), 60.0)
            self._wake.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
            # that comes as the wake is set, and this loop would outlive the daemon's stop
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    # --- one round -----------------------------------------------------------------------

    async def run_once(self) -> None:
        """Publish every zone and popular packet that is due now."""
        now = self._wall()
        if self._changed is not None:
            await asyncio.gather(*(self._check(job, now) for job in self.plan.due_checks(now)))
        jobs = [self._zone(job) for job in self.plan.due_zones(now)]
        await asyncio.gather(*jobs, *self._popular(now))

    async def _zone(self, job: ZoneJob) -> None:
        async with self._sem:
            try:
                packet = await self._build(job.zone, self._next_timestamp(job))
                self._own[job.name] = packet.public_key.raw
                stored = await self._publish(packet)
            except Exception as exc:  # bad zone file, network: log, retry later
                self._report_zone(job, None, 0, describe(exc))
                return
            if self._cache is not None:
                self._cache.insert(packet)  # answer our own records at once
            self._report_zone(job, packet, stored, None)

    async def _check(self, job: ZoneJob, now: float) -> None:
        """One DynDNS address check; a failed lookup waits for the next check."""
        assert self._changed is not None
        changed: bool | None
        try:
            changed = await self._changed(job.zone)
        except Exception as exc:  # IP-echo unreachable: the next check (or interval) retries
            _log.info("address_check_failed", zone=job.zone.zone, error=describe(exc))
            changed = False
        if self.plan.checked(job.name, changed, now):
            _log.info("external_address_changed", zone=job.zone.zone)

    def _next_timestamp(self, job: ZoneJob) -> int:
        ts = self._clock.wall_us()
        key = self._own.get(job.name)
        if key is not None and ts <= self._last_ts.get(key, -1):
            ts = self._last_ts[key] + 1  # the DHT keeps the higher seq; never go back
        return ts

    def _report_zone(self, job: ZoneJob, packet: SignedPacket | None, stored: int,
                     error: str | None) -> None:
        now = self._wall()
        next_at = self.plan.zone_done(job.name, stored, error, now)
        ok = error is None and stored >= self.plan.cfg.min_stored
        self._count("zone", ok)
        fields = {"zone": job.zone.zone, "stored": stored, "next_in": round(next_at - now)}
        if packet is not None:
            self._last_ts[packet.public_key.raw] = packet.timestamp
            fields |= {"key": packet.public_key.z32, "records": len(packet.records)}
        if ok:
            _log.info("zone_published", **fields)
        else:
            _log.warning("zone_publish_failed", error=error or "no node stored it", **fields)

    def _popular(self, now: float) -> list[Awaitable[None]]:
        if self._cache is None:
            return []
        mono, counts = self._clock.monotonic(), self._cache.query_counts()
        held = {c.packet.public_key.raw: c for c in self._cache.cached()}
        queries = {k.raw: n for k, n in counts.items()}
        candidates = [Candidate(raw, queries.get(raw, 0), now - (mono - c.fetched_at))
                      for raw, c in held.items()]
        self.plan.forget_popular(held)
        due = self.plan.due_popular(candidates, now, exclude=set(self._own.values()))
        return [self._repost(held[raw].packet, queries.get(raw, 0)) for raw in due]

    async def _repost(self, packet: SignedPacket, queries: int) -> None:
        async with self._sem:
            error: str | None = None
            stored = 0
            try:
                stored = await self._publish(packet)
            except Exception as exc:
                error = describe(exc)
            self.plan.popular_done(packet.public_key.raw, queries, stored, error, self._wall())
            ok = error is None and stored >= self.plan.cfg.min_stored
            self._count("popular", ok)
            _log.info("packet_republished" if ok else "packet_republish_failed",
                      key=packet.public_key.z32, stored=stored, error=error,
                      timestamp=packet.timestamp)

    def _count(self, source: str, ok: bool) -> None:
        if self._metrics is not None:
            self._metrics.republished.labels(source=source,
                                             result="stored" if ok else "failed").inc()


def describe(exc: BaseException) -> str:
    """The error text for logs and the status page: our own errors already say what is wrong
    in words (``pkdns.zone:4: A record: ...``), so only unexpected ones get their class name."""
    if isinstance(exc, PkdnsError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
