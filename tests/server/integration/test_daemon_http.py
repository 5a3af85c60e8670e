"""The whole daemon (pkdns.app.Daemon) on a loopback testnet: a packet PUT through its relay
API is answered over its DoH endpoint, and its status page and metrics reflect it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import dns.asyncquery
import dns.message
import pytest

from pkdns.app import Daemon
from pkdns.clock import SYSTEM_CLOCK
from pkdns.config import Config, DhtConfig, DnsConfig, HttpConfig
from pkdns.dht.testnet import Testnet
from pkdns.pkarr.relay_client import RelayClient
from tests.support.pkarr_factory import keypair, packet

pytestmark = pytest.mark.slow
KP = keypair(33)


@pytest.fixture
async def daemon(tmp_path: object) -> AsyncIterator[Daemon]:
    net = await Testnet.start(6)
    cfg = Config(
        state_dir=str(tmp_path),
        dns=DnsConfig(listen=(("127.0.0.1", 0),), upstream=(("127.0.0.1", 9),)),
        http=HttpConfig(listen=(("127.0.0.1", 0),)),
        dht=DhtConfig(port=0, bind="127.0.0.1", bootstrap=tuple(net.bootstrap)))
    d = Daemon(cfg)
    try:
        await d.start()
        await d.pkarr.bootstrapped.wait()
        yield d
    finally:
        await d.stop()
        await net.close()


async def test_relay_put_then_doh_answer(daemon: Daemon) -> None:
    assert daemon.http is not None
    host, port = daemon.http.addresses[0]
    base = f"http://{host}:{port}"
    client = RelayClient(base)
    try:
        demo = packet(KP, ["@ 300 IN A 192.0.2.55"], SYSTEM_CLOCK.wall_us())
        assert await client.put(demo) >= 1
    finally:
        await client.close()
    q = dns.message.make_query(f"{KP.public_key.z32}.", "A")
    r = await dns.asyncquery.https(q, f"{base}/dns-query", timeout=10)
    assert [rr.to_text() for rr in r.answer[0]] == ["192.0.2.55"]
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/api/status") as resp:
            status = await resp.json()
        async with s.get(f"{base}/metrics") as resp:
            metrics = await resp.text()
    assert status["routing_table_size"] >= 1 and status["packets"] == 1
    assert status["dns_listeners"] and status["http_listeners"] == [f"{host}:{port}"]
    assert 'transport="doh"' in metrics
