"""The HTTP face wired to real parts: DhtNode on a loopback Testnet, PkarrSource, relay
clients, and a second pkdns HTTP face acting as the relay for a third."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from pkdns.answer.source import PkarrSource
from pkdns.clock import SYSTEM_CLOCK
from pkdns.config import Config, HttpConfig, PkarrConfig
from pkdns.dht.node import DhtNode
from pkdns.dht.testnet import Testnet
from pkdns.metrics import Metrics
from pkdns.pkarr.client import PkarrClient
from pkdns.pkarr.relay_client import RelayClient
from pkdns.server.face import HttpFace
from tests.support.pkarr_factory import keypair, packet
from tests.support.require import require_tool

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]
KP = keypair(21)


@dataclass
class Instance:
    """One pkdns's HTTP face with its own packet source (and DHT node, if any)."""

    face: HttpFace
    source: PkarrSource
    node: DhtNode | None

    @property
    def url(self) -> str:
        host, port = self.face.addresses[0]
        return f"http://{host}:{port}"

    async def close(self) -> None:
        await self.face.stop()
        await self.source.close()
        if self.node is not None:
            await self.node.close()


async def _instance(testnet: Testnet | None, relays: tuple[RelayClient, ...] = ()) -> Instance:
    cfg = Config(http=HttpConfig(listen=(("127.0.0.1", 0),), relay_rate_limit=0),
                 pkarr=PkarrConfig(lookup_timeout=3.0, dht_rate_limit=0))
    node = None
    if testnet is not None:
        node = DhtNode(mode="client", request_timeout=1.0)
        await node.start("127.0.0.1", 0)
        await node.bootstrap(testnet.bootstrap, timeout=5.0)
    source = PkarrSource(PkarrClient(node, relays), cfg.pkarr, SYSTEM_CLOCK)
    face = HttpFace(cfg, SYSTEM_CLOCK, Metrics(), None, SYSTEM_CLOCK.monotonic())
    face.source, face.dht = source, node
    await face.start()
    return Instance(face, source, node)


async def test_publish_through_one_pkdns_resolve_through_others(testnet: Testnet,
                                                                tmp_path: Path) -> None:
    a = await _instance(testnet)
    b = await _instance(testnet)
    to_a = RelayClient(a.url, timeout=10)
    c = await _instance(None, relays=(to_a,))       # no DHT: pkdns A is its relay
    clients = [RelayClient(i.url, timeout=10) for i in (b, c)]
    try:
        demo = packet(KP, ["@ 300 IN A 192.0.2.77", "www 300 IN CNAME example.com.",
                           '_demo 300 IN TXT "published through the relay API"'],
                      SYSTEM_CLOCK.wall_us())
        stored = await to_a.put(demo)
        assert stored >= 3                         # real testnet nodes acknowledged the put
        via_dht = await clients[0].get(KP.public_key)        # B: DHT lookup (CacheFirst miss)
        assert via_dht.packet == demo
        via_relay = await clients[1].get(KP.public_key)      # C: asks A over the relay API
        assert via_relay.packet == demo
        network = await clients[0].get(KP.public_key, policy="NetworkOnly")
        assert network.packet == demo
        newer = packet(KP, ["@ 300 IN A 192.0.2.78"], demo.timestamp + 1)
        assert await clients[0].put(newer) >= 3      # B publishes a newer one...
        assert (await to_a.get(KP.public_key, policy="NetworkOnly")).packet == newer
        with pytest.raises(Exception, match="409"):
            await to_a.put(demo)                     # ...so A now refuses the older one
        async with aiohttp.ClientSession() as s, s.get(f"{b.url}/metrics") as r:
            text = await r.text()
        assert 'pkdns_relay_requests_total{method="PUT",status="204"} 1.0' in text
        assert "pkdns_dht_routing_table_nodes" in text
        assert "pkdns_dht_reachable 1.0" in text and "pkdns_dht_answered_ratio" in text
        loss = re.search(r"^pkdns_dht_round_trip_loss (\S+)$", text, re.M)
        assert loss is not None and 0.0 <= float(loss.group(1)) < 0.35   # loopback: no loss
        await _chromium_lookup(b.url, tmp_path)
    finally:
        for client in [to_a, *clients]:
            await client.close()
        for inst in (c, b, a):
            await inst.close()


async def _chromium_lookup(url: str, tmp_path: Path) -> None:
    """The status page of pkdns B in headless Chromium: look the demo key up via the form."""
    node = require_tool("node")
    chromium = require_tool("chromium", "/usr/bin/chromium")
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        node, str(ROOT / "interop" / "status_page.mjs"), "--chromium", chromium, "--url", url + "/",
        "--key", KP.public_key.z32, "--screenshot", str(artifacts / "status_page_testnet.png"),
        "--user-data-dir", str(tmp_path / "chromium"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()[-2000:]
    page = json.loads(out.decode().strip().splitlines()[-1])
    assert [r[2:] for r in page["rows"]] == [["A", "192.0.2.78"]]
    assert int(page["status"]["routing_table_size"]) >= 4
    assert page["status"]["dht_mode"] == "client"

