"""The republisher: zones and popular packets with a fake clock and fake DHT, then for real
against a loopback DHT testnet."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from pkdns.config import RepublishConfig, ZoneConfig
from pkdns.dht.item import MutableItem, check_item
from pkdns.dht.node import DhtNode
from pkdns.dht.testnet import Testnet
from pkdns.errors import DhtError, UsageError
from pkdns.metrics import Metrics
from pkdns.pkarr.client import PkarrClient, to_item
from pkdns.pkarr.keys import PublicKey, read_seed_file
from pkdns.pkarr.signed_packet import SignedPacket
from pkdns.publish.republisher import Republisher
from pkdns.publish.zonebuild import ZoneBuilder
from tests.support import pkarr_factory as pf
from tests.support.clock import FakeClock


async def build_from_files(zone: ZoneConfig, ts: int) -> SignedPacket:
    """A small zone builder for the tests: one zone line per line of the file."""
    kp = read_seed_file(zone.seed)
    lines = [ln for ln in Path(zone.zone).read_text().splitlines() if ln.strip()]
    if not lines:
        raise UsageError(f"{zone.zone}: empty zone")
    return pf.packet(kp, lines, ts)


@pytest.fixture
def zone(tmp_path: Path) -> ZoneConfig:
    (tmp_path / "seed").write_text(pf.keypair(7).seed.hex() + "\n")
    (tmp_path / "zone").write_text("@ 300 IN A 192.0.2.1\nwww 300 IN TXT hello\n")
    return ZoneConfig(seed=str(tmp_path / "seed"), zone=str(tmp_path / "zone"), interval=600)


class FakeDht:
    """Records every put; ``stored`` nodes accept, or ``fail`` raises."""

    def __init__(self, stored: int = 8) -> None:
        self.stored = stored
        self.fail: Exception | None = None
        self.items: list[MutableItem] = []

    async def publish(self, packet: SignedPacket) -> int:
        item = to_item(packet)
        if self.fail is not None:
            raise self.fail
        self.items.append(item)
        return self.stored


@dataclass
class Held:
    packet: SignedPacket
    fetched_at: float


class FakeCache:
    def __init__(self) -> None:
        self.held: dict[bytes, Held] = {}
        self.counts: dict[PublicKey, int] = {}

    def cached(self) -> Iterable[Held]:
        return list(self.held.values())

    def query_counts(self) -> dict[PublicKey, int]:
        return dict(self.counts)

    def insert(self, packet: SignedPacket, fetched_at: float | None = None) -> bool:
        self.held[packet.public_key.raw] = Held(packet, fetched_at or 0.0)
        return True


def _make(zones: list[ZoneConfig], clock: FakeClock, dht: FakeDht, cache: FakeCache | None,
          metrics: Metrics | None = None, **cfg: object) -> Republisher:
    return Republisher(dataclasses.replace(RepublishConfig(), **cfg), zones, publish=dht.publish,
                       build=build_from_files, clock=clock, cache=cache, metrics=metrics)


def _count(metrics: Metrics, source: str, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "pkdns_republished_total", {"source": source, "result": result})
    return value or 0.0


async def test_zone_published_at_start_and_on_schedule(zone: ZoneConfig,
                                                       fake_clock: FakeClock) -> None:
    dht, cache, metrics = FakeDht(), FakeCache(), Metrics()
    rp = _make([zone], fake_clock, dht, cache, metrics)
    with capture_logs() as logs:
        await rp.run_once()
    (item,) = dht.items
    key = pf.keypair(7).public_key
    assert check_item(item.k, item.seq, item.v, item.sig, expected_key=key.raw) == item
    assert item.seq == fake_clock.wall_us()
    assert cache.held[key.raw].packet.timestamp == item.seq  # our own records answer at once
    assert logs[-1]["event"] == "zone_published" and logs[-1]["key"] == key.z32
    assert logs[-1]["stored"] == 8 and logs[-1]["records"] == 2 and logs[-1]["next_in"] == 600
    assert _count(metrics, "zone", "stored") == 1
    fake_clock.advance(599)
    await rp.run_once()
    assert len(dht.items) == 1
    Path(zone.zone).write_text("@ 300 IN A 192.0.2.99\n")  # the zone is re-read every time
    fake_clock.advance(1)
    await rp.run_once()
    assert len(dht.items) == 2 and dht.items[1].seq > item.seq
    assert SignedPacket.from_bep44(*dataclasses.astuple(dht.items[1])).records[0].rdata \
        .toZone() == "192.0.2.99"


async def test_failures_are_logged_counted_and_retried(zone: ZoneConfig,
                                                       fake_clock: FakeClock) -> None:
    dht, metrics = FakeDht(), Metrics()
    dht.fail = DhtError("no nodes answered")
    rp = _make([zone], fake_clock, dht, None, metrics)
    with capture_logs() as logs:
        await rp.run_once()
    assert logs[-1]["event"] == "zone_publish_failed" and logs[-1]["log_level"] == "warning"
    assert logs[-1]["error"] == "no nodes answered" and logs[-1]["next_in"] == 300
    dht.fail = None
    Path(zone.zone).write_text("")
    fake_clock.advance(300)
    with capture_logs() as logs:
        await rp.run_once()
    assert logs[-1]["error"].startswith(f"{zone.zone}:"), logs[-1]["error"]   # no "UsageError:"
    assert logs[-1]["error"].endswith("empty zone")

    Path(zone.zone).write_text("@ 60 IN A 192.0.2.2\n")
    dht.stored = 0  # reachable, but nobody stored it
    fake_clock.advance(300)
    with capture_logs() as logs:
        await rp.run_once()
    assert logs[-1]["error"] == "no node stored it"
    assert _count(metrics, "zone", "failed") == 3 and _count(metrics, "zone", "stored") == 0


async def test_reload_publishes_now(zone: ZoneConfig, fake_clock: FakeClock) -> None:
    dht = FakeDht()
    rp = _make([], fake_clock, dht, None)
    await rp.start()
    try:
        await asyncio.sleep(0.05)
        assert dht.items == []
        rp.reload([zone])                    # SIGHUP with a new [[zones]] entry
        for _ in range(100):
            if dht.items:
                break
            await asyncio.sleep(0.01)
        assert len(dht.items) == 1
    finally:
        await rp.stop()


async def test_popular_packet_reput_unchanged(fake_clock: FakeClock) -> None:
    dht, cache, metrics = FakeDht(), FakeCache(), Metrics()
    other = pf.packet(pf.keypair(9), ["@ 300 IN A 198.51.100.1"])
    quiet = pf.packet(pf.keypair(10), ["@ 300 IN A 198.51.100.2"])
    cache.insert(other, fake_clock.monotonic() - 3600)  # confirmed on the DHT an hour ago
    cache.insert(quiet, fake_clock.monotonic() - 3600)
    cache.counts = {other.public_key: 5, quiet.public_key: 1}
    rp = _make([], fake_clock, dht, cache, metrics)
    with capture_logs() as logs:
        await rp.run_once()
    assert dht.items == [to_item(other)]     # byte for byte the packet we hold
    assert logs[-1]["event"] == "packet_republished" and logs[-1]["key"] == other.public_key.z32
    assert _count(metrics, "popular", "stored") == 1
    fake_clock.advance(120)
    await rp.run_once()
    assert len(dht.items) == 1               # not again before republish_after
    cache.counts[other.public_key] = 9       # asked 4 more times
    fake_clock.advance(3600)
    await rp.run_once()
    assert dht.items == [to_item(other)] * 2
    names = {e.name for e in rp.entries()}
    assert names == {"popular:" + other.public_key.raw.hex()}


async def test_own_zone_key_is_not_reput_as_popular(zone: ZoneConfig,
                                                   fake_clock: FakeClock) -> None:
    dht, cache = FakeDht(), FakeCache()
    rp = _make([zone], fake_clock, dht, cache)
    await rp.run_once()
    held = cache.held[pf.keypair(7).public_key.raw]
    held.fetched_at = fake_clock.monotonic() - 7200
    cache.counts = {pf.keypair(7).public_key: 100}
    fake_clock.advance(61)
    await rp.run_once()
    assert len(dht.items) == 1


async def test_popular_disabled(fake_clock: FakeClock) -> None:
    dht, cache = FakeDht(), FakeCache()
    other = pf.packet(pf.keypair(9), ["@ 300 IN A 198.51.100.1"])
    cache.insert(other, fake_clock.monotonic() - 7200)
    cache.counts = {other.public_key: 50}
    await _make([], fake_clock, dht, cache, popular=False).run_once()
    assert dht.items == []


# --- for real: a loopback DHT testnet -----------------------------------------------------


async def _client(net: Testnet) -> DhtNode:
    node = DhtNode(mode="client", request_timeout=1.0)
    await node.start("127.0.0.1", 0)
    await node.bootstrap(net.bootstrap, timeout=5.0)
    return node


async def test_zone_and_popular_packet_on_a_real_testnet(zone: ZoneConfig,
                                                         testnet: Testnet) -> None:
    from pkdns.clock import SYSTEM_CLOCK

    publisher, reader = await _client(testnet), await _client(testnet)
    try:
        async def publish(packet: SignedPacket) -> int:
            answer = (await PkarrClient(publisher).publish(packet, timeout=5.0)).dht
            assert answer is not None
            return answer.stored

        cache = FakeCache()
        other = pf.packet(pf.keypair(11), ["@ 300 IN A 203.0.113.5"], ts=SYSTEM_CLOCK.wall_us())
        cache.insert(other, SYSTEM_CLOCK.monotonic() - 7200)
        cache.counts = {other.public_key: 10}
        metrics = Metrics()
        rp = Republisher(RepublishConfig(), [zone], publish=publish, build=build_from_files,
                         clock=SYSTEM_CLOCK, cache=cache, metrics=metrics)
        await rp.run_once()
        assert _count(metrics, "zone", "stored") == 1, rp.entries()
        assert _count(metrics, "popular", "stored") == 1, rp.entries()
        for key, expect in ((pf.keypair(7).public_key.raw, None), (other.public_key.raw, other)):
            got = await reader.get_mutable(key, timeout=5.0).collect()
            assert got, f"{key.hex()} not found on the testnet"
            best = max(got, key=lambda i: i.seq)
            packet = SignedPacket.from_bep44(best.k, best.seq, best.v, best.sig)
            if expect is not None:
                assert packet == expect      # re-put unchanged: same signature and bytes
            else:
                assert packet.public_key == pf.keypair(7).public_key
    finally:
        await publisher.close()
        await reader.close()


async def test_a_new_external_address_is_published_within_the_check_interval(
        tmp_path: Path, fake_clock: FakeClock) -> None:
    """DynDNS: the zone is re-signed as soon as a check sees the address change, not an
    interval (an hour) later. Real IP-echo HTTP server on loopback, fake clock."""
    current = {"ip": "198.51.100.1"}
    asked: list[str] = []

    async def reply(request: web.Request) -> web.Response:
        asked.append(current["ip"])
        return web.Response(text=current["ip"] + "\n")

    app = web.Application()
    app.router.add_get("/", reply)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    try:
        (tmp_path / "seed").write_text(pf.keypair(8).seed.hex())
        (tmp_path / "seed").chmod(0o600)
        (tmp_path / "zone").write_text("home 60 IN A {external_ipv4}\n")
        zone = ZoneConfig(seed=str(tmp_path / "seed"), zone=str(tmp_path / "zone"),
                          interval=3600)
        cfg = RepublishConfig(ip_echo_v4=(url,), ip_echo_timeout=2.0)
        builder, dht = ZoneBuilder(cfg), FakeDht()
        rp = Republisher(cfg, [zone], publish=dht.publish, build=builder, clock=fake_clock,
                         changed=builder.changed)

        def published() -> list[str]:
            return [SignedPacket.from_bep44(*dataclasses.astuple(i)).records[0].rdata.toZone()
                    for i in dht.items]

        await rp.run_once()
        assert published() == ["198.51.100.1"]
        fake_clock.advance(cfg.ip_check_interval)
        await rp.run_once()                       # checked: unchanged, nothing put
        assert published() == ["198.51.100.1"] and len(asked) == 2
        current["ip"] = "198.51.100.2"            # the ISP hands out a new address
        fake_clock.advance(cfg.ip_check_interval)
        with capture_logs() as logs:
            await rp.run_once()
        assert published() == ["198.51.100.1", "198.51.100.2"]
        assert "external_address_changed" in [e["event"] for e in logs]
        assert cfg.ip_check_interval <= 60
    finally:
        await runner.cleanup()
