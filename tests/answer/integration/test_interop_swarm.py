"""The daemon resolving through a swarm of foreign DHT nodes (npm bittorrent-dht@11).

The packet is stored on the swarm by one of our nodes that joined it; the daemon only knows
the swarm's bootstrap addresses, so every hop of its lookup goes through bittorrent-dht.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from pkdns.app import Daemon
from pkdns.config import Config, DhtConfig, DnsConfig, HttpConfig
from pkdns.dht.node import DhtNode
from tests.support.peers import bittorrent_swarm
from tests.support.pkarr_factory import keypair, packet
from tests.support.pkarr_fakes import item_of

pytestmark = [pytest.mark.interop, pytest.mark.slow]


@contextlib.asynccontextmanager
async def publisher(bootstrap: list[tuple[str, int]]) -> AsyncIterator[DhtNode]:
    node = DhtNode(mode="server", request_rate_limit=0, request_timeout=1.0)
    await node.start("127.0.0.1", 0)
    try:
        assert await node.bootstrap(bootstrap, timeout=10) > 0
        yield node
    finally:
        await node.close()


async def test_key_found_and_absent_through_a_bittorrent_dht_swarm(tmp_path: Path) -> None:
    kp = keypair(121)
    z = kp.public_key.z32
    with bittorrent_swarm(12, time_limit=120) as swarm:
        # The publisher stays up: a node that left is silent in the swarm's tables, and a
        # silent node among the closest proves nothing (SERVFAIL, not NXDOMAIN).
        async with publisher(swarm.bootstrap) as node:
            stored = await node.put_mutable(item_of(packet(kp, ["@ 300 IN A 192.0.2.121"])))
            assert stored.stored > 0
            await _found_and_absent(tmp_path, swarm.bootstrap, z)


async def _found_and_absent(tmp_path: Path, bootstrap: list[tuple[str, int]], z: str) -> None:
    cfg = Config(state_dir=str(tmp_path / "state"),
                 dns=DnsConfig(listen=(("127.0.0.1", 0),), upstream=(("127.0.0.1", 9),)),
                 dht=DhtConfig(port=0, bind="127.0.0.1", bootstrap=tuple(bootstrap),
                               request_timeout=1.0),
                 http=HttpConfig(enabled=False))
    d = Daemon(cfg)
    await d.start()
    try:
        await asyncio.wait_for(d.pkarr.bootstrapped.wait(), 15)
        port = d.dns.bound[0][1]
        found = await dns.asyncquery.udp(dns.message.make_query(f"{z}.key", "A"),
                                         "127.0.0.1", port=port, timeout=5)
        assert found.rcode() == dns.rcode.NOERROR
        assert found.answer[0].to_text() == f"{z}.key. 300 IN A 192.0.2.121"
        missing = keypair(122).public_key.z32
        absent = await dns.asyncquery.udp(dns.message.make_query(missing, "A"),
                                          "127.0.0.1", port=port, timeout=5)
        assert absent.rcode() == dns.rcode.NXDOMAIN
        assert absent.authority[0].rdtype == dns.rdatatype.SOA
    finally:
        await d.stop()
