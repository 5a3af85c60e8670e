"""StateKeeper: a restart restores routing-table nodes and packets (with their age), so a known
key answers at once with the DHT unreachable; saves are periodic and at stop."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from pathlib import Path

from pkdns.answer.source import PkarrSource, Status
from pkdns.config import PkarrConfig, StateConfig
from pkdns.persist import StateKeeper
from pkdns.pkarr.client import PkarrClient
from pkdns.state import SavedNode, SavedPacket, ScheduleEntry
from tests.support import pkarr_factory as pf
from tests.support.clock import FakeClock


class FakeTable:
    def __init__(self, nodes: list[SavedNode] | None = None) -> None:
        self.nodes = list(nodes or [])

    def export_nodes(self) -> list[SavedNode]:
        return list(self.nodes)

    def import_nodes(self, nodes: Iterable[SavedNode]) -> None:
        self.nodes.extend(nodes)


class FakeSchedule:
    def __init__(self, entries: list[ScheduleEntry]) -> None:
        self._entries = entries

    def entries(self) -> list[ScheduleEntry]:
        return list(self._entries)


NODES = [(bytes([i]) * 20, f"127.0.0.{i}", 7000 + i) for i in range(1, 4)]


def _source(clock: FakeClock) -> PkarrSource:
    return PkarrSource(PkarrClient(None, clock=clock), PkarrConfig(), clock)  # no DHT at all


async def test_restart_answers_a_known_key_without_the_dht(tmp_path: Path,
                                                          fake_clock: FakeClock) -> None:
    fresh = pf.packet(pf.keypair(1), ["@ 300 IN A 192.0.2.1"])
    old = pf.packet(pf.keypair(2), ["@ 300 IN A 192.0.2.2"])
    first = StateKeeper(str(tmp_path), StateConfig(), fake_clock)
    first.dht, first.packets = FakeTable(NODES), _source(fake_clock)
    first.schedule = FakeSchedule([ScheduleEntry("zone:/z", 123.0, "stored on 3 nodes", 100.0)])
    first.packets.insert(old, fake_clock.monotonic() - 1000)   # confirmed 1000 s ago
    first.packets.insert(fresh, fake_clock.monotonic() - 10)
    await first.start()
    await first.stop()

    fake_clock.advance(60)                                      # the restart takes a minute
    second = StateKeeper(str(tmp_path), StateConfig(), fake_clock)
    table, source = FakeTable(), _source(fake_clock)
    second.dht, second.packets = table, source
    assert second.saved_schedule()["zone:/z"].last_result == "stored on 3 nodes"
    await second.start()
    try:
        assert second.restored is not None
        assert (second.restored.nodes, second.restored.packets) == (3, 2)
        assert table.nodes == NODES
        got = await asyncio.wait_for(source.get(fresh.public_key, "127.0.0.1"), 1)
        assert got.status is Status.FOUND and got.packet == fresh and not got.stale
        assert 69 <= got.age <= 71
        stale = await asyncio.wait_for(source.get(old.public_key, "127.0.0.1"), 1)
        assert stale.status is Status.FOUND and stale.packet == old and stale.stale
    finally:
        await second.stop()
        await source.close()


async def test_empty_table_does_not_erase_saved_nodes(tmp_path: Path,
                                                      fake_clock: FakeClock) -> None:
    keeper = StateKeeper(str(tmp_path), StateConfig(), fake_clock)
    keeper.dht = FakeTable(NODES)
    await keeper.stop()
    again = StateKeeper(str(tmp_path), StateConfig(), fake_clock)
    again.dht = FakeTable([])            # came up offline: nothing learned
    await again.stop()
    assert StateKeeper(str(tmp_path), StateConfig(), fake_clock).store.load_nodes(10) == NODES


async def test_tampered_packet_is_skipped(tmp_path: Path, fake_clock: FakeClock) -> None:
    good = pf.packet(pf.keypair(1), ["@ 300 IN A 192.0.2.1"])
    keeper = StateKeeper(str(tmp_path), StateConfig(), fake_clock)
    wall = fake_clock.wall_us() / 1e6
    bad = bytearray(good.to_bytes())
    bad[-1] ^= 1
    keeper.store.save_packets(
        [SavedPacket(good.public_key.raw, good.timestamp, good.to_bytes(), wall),
         SavedPacket(b"x" * 32, 1, bytes(bad), wall)], wall, max_packets=10, max_age=100)
    keeper.packets = _source(fake_clock)
    restored = keeper.restore()
    assert (restored.packets, restored.invalid) == (1, 1)
    await keeper.stop()


async def test_periodic_save(tmp_path: Path, fake_clock: FakeClock) -> None:
    keeper = StateKeeper(str(tmp_path), dataclasses.replace(StateConfig(), save_interval=0),
                         fake_clock)
    keeper.dht = FakeTable(NODES)
    await keeper.start()
    assert keeper._task is None          # 0: only at shutdown
    await keeper.stop()
    quick = StateKeeper(str(tmp_path / "q"), StateConfig(), fake_clock)
    quick.cfg = dataclasses.replace(StateConfig(), save_interval=1)
    quick.dht = FakeTable(NODES[:1])
    await quick.start()
    try:
        for _ in range(40):
            await asyncio.sleep(0.05)
            if quick.store.load_nodes(10):
                break
        assert quick.store.load_nodes(10) == NODES[:1]
    finally:
        await quick.stop()


class TickingClock(FakeClock):
    """Every monotonic() read costs 30 ms: the restore budget runs out after a few reads."""

    def monotonic(self) -> float:
        self.now += 0.03
        return self.now


async def test_restore_is_time_boxed_newest_first_then_background(tmp_path: Path) -> None:
    clock = TickingClock()
    wall = clock.wall_us() / 1e6
    packets = [pf.packet(pf.keypair(i), [f"@ 300 IN A 192.0.2.{i}"]) for i in range(1, 201)]
    keeper = StateKeeper(str(tmp_path), StateConfig(), clock)
    keeper.store.save_packets(
        [SavedPacket(p.public_key.raw, p.timestamp, p.to_bytes(), wall - 1000 + i)
         for i, p in enumerate(packets)], wall, max_packets=1000, max_age=86400)
    source = keeper.packets = _source(clock)
    restored = keeper.restore()
    assert 0 < restored.packets < 200
    held = {c.packet.public_key for c in source.cached()}
    assert packets[-1].public_key in held and packets[0].public_key not in held  # newest first
    await keeper.start()
    try:
        for _ in range(100):
            if len(list(source.cached())) == 200:
                break
            await asyncio.sleep(0)
        assert len(list(source.cached())) == 200
    finally:
        await keeper.stop()
