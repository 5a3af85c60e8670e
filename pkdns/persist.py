"""The daemon's memory across restarts: a component that loads the state dir at start, saves it
every ``state.save_interval`` seconds and once more at shutdown.

At start (before the DNS listeners open) it puts the saved DHT contacts into the routing table,
so the node bootstraps from peers it knew, and the saved signed packets into the pkarr packet
cache with their real age, so known keys answer at once (stale if needed, refreshed in the
background) even while the DHT is unreachable. Every saved packet is verified again on load:
the file is ours, but a signature check is cheap insurance against a bad disk or a bad edit.

Snapshots are taken on the event loop (consistent, no locks); the sqlite writes run in a worker
thread so a slow disk never stalls query answering.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from pkdns import log
from pkdns.answer.packets import PacketSource
from pkdns.clock import Clock
from pkdns.config import StateConfig
from pkdns.errors import DecodeError
from pkdns.pkarr.signed_packet import SignedPacket
from pkdns.state import SavedNode, SavedPacket, ScheduleEntry, StateStore

_log = log.get("state")
RESTORE_BUDGET = 0.1
"""Seconds of start-up spent restoring packets before the rest continues in the background."""


class NodeTable(Protocol):
    """``DhtNode``'s routing-table hooks."""

    def export_nodes(self) -> list[SavedNode]: ...

    def import_nodes(self, nodes: Iterable[SavedNode]) -> None: ...


class Schedule(Protocol):
    """The republisher's plan."""

    def entries(self) -> list[ScheduleEntry]: ...


@dataclass(frozen=True, slots=True)
class Restored:
    """What :meth:`StateKeeper.restore` loaded within its start-up budget: routing-table
    nodes, verified packets, and saved packets that failed verification (skipped)."""

    nodes: int
    packets: int
    invalid: int


class StateKeeper:
    """Loads and saves the state dir; add it to the daemon before the DNS listeners."""

    name = "state"

    def __init__(self, state_dir: str, cfg: StateConfig, clock: Clock, *,
                 dht: NodeTable | None = None, packets: PacketSource | None = None,
                 auto_restore: bool = True) -> None:
        self.cfg, self.clock = cfg, clock
        self.store = StateStore(state_dir, self._wall())
        self.dht, self.packets = dht, packets
        self.schedule: Schedule | None = None
        self.restored: Restored | None = None
        self._task: asyncio.Task[None] | None = None
        self._rest: asyncio.Task[None] | None = None
        self._pending: list[SavedPacket] = []
        self._loaded = self._invalid = 0
        self.auto_restore = auto_restore   # False: the owner calls restore_in_background()

    def _wall(self) -> float:
        return self.clock.wall_us() / 1e6

    def saved_schedule(self) -> dict[str, ScheduleEntry]:
        """The republisher's saved plan (read before building the republisher)."""
        return self.store.load_schedule()

    def restore(self) -> Restored:
        """Saved nodes -> routing table; saved packets -> packet cache (with their age).

        Packets are verified and parsed newest-first for at most :data:`RESTORE_BUDGET`
        seconds; the rest (``pending``) is restored by :meth:`start` in the background, so a
        full state dir never delays the first answer (about 0.2 ms per packet).
        """
        nodes = self.store.load_nodes(self.cfg.max_nodes) if self.dht is not None else []
        if self.dht is not None and nodes:
            self.dht.import_nodes(nodes)
        if self.packets is not None:
            self._pending = self.store.load_packets(
                self._wall(), max_age=self.cfg.packet_max_age, limit=self.cfg.max_packets)
            self._pending.reverse()                  # pop() from the end: newest first
            deadline = self.clock.monotonic() + RESTORE_BUDGET
            while self._pending and self.clock.monotonic() < deadline:
                self._restore_some(64)
        self.restored = Restored(len(nodes), self._loaded, self._invalid)
        _log.info("state_loaded", path=str(self.store.path), nodes=len(nodes),
                  packets=self._loaded, invalid=self._invalid, pending=len(self._pending))
        return self.restored

    def _restore_some(self, n: int) -> None:
        if self.packets is None:
            return
        wall, mono = self._wall(), self.clock.monotonic()
        for _ in range(min(n, len(self._pending))):
            row = self._pending.pop()
            try:
                packet = SignedPacket.from_bytes(row.data)
            except DecodeError:
                self._invalid += 1
                continue
            self.packets.insert(packet, mono - max(0.0, wall - row.seen_at))
            self._loaded += 1

    def restore_in_background(self) -> None:
        """Restore the packets the start-up budget left (call once listening: it competes)."""
        if self._pending and self._rest is None:
            self._rest = asyncio.create_task(self._restore_rest(), name="state-restore")

    async def _restore_rest(self) -> None:
        while self._pending:
            self._restore_some(16)                   # ~4 ms of work: a query waits at most that
            await asyncio.sleep(0)
        _log.info("state_restored", packets=self._loaded, invalid=self._invalid)

    def _snapshot(self) -> tuple[list[SavedNode] | None, list[SavedPacket] | None,
                                 list[ScheduleEntry] | None]:
        wall, mono = self._wall(), self.clock.monotonic()
        nodes = self.dht.export_nodes() if self.dht is not None else None
        packets = None
        if self.packets is not None:
            packets = [SavedPacket(h.packet.public_key.raw, h.packet.timestamp,
                                   h.packet.to_bytes(), wall - max(0.0, mono - h.fetched_at))
                       for h in self.packets.cached()]
        schedule = self.schedule.entries() if self.schedule is not None else None
        return nodes, packets, schedule

    def _write(self, nodes: list[SavedNode] | None, packets: list[SavedPacket] | None,
               schedule: list[ScheduleEntry] | None, wall: float) -> None:
        if nodes:  # an empty table (offline start) must not erase the good saved contacts
            self.store.save_nodes(nodes, self.cfg.max_nodes)
        if packets is not None:
            self.store.save_packets(packets, wall, max_packets=self.cfg.max_packets,
                                    max_age=self.cfg.packet_max_age)
        if schedule is not None:
            self.store.save_schedule(schedule)

    async def save(self) -> None:
        """Snapshot now, write in a worker thread."""
        nodes, packets, schedule = self._snapshot()
        await asyncio.to_thread(self._write, nodes, packets, schedule, self._wall())
        _log.debug("state_saved", nodes=len(nodes or ()), packets=len(packets or ()))

    async def start(self) -> None:
        if self.restored is None:
            self.restore()
        if self.auto_restore:
            self.restore_in_background()
        if self.cfg.save_interval > 0:
            self._task = asyncio.create_task(self._loop(), name="state-save")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.save_interval)
            try:
                await self.save()
            except Exception:
                _log.exception("state_save_failed")

    async def stop(self) -> None:
        for task in (self._task, self._rest):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            await self.save()
        finally:
            self.store.close()
