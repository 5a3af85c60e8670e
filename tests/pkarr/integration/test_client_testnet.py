"""The pkarr client against real DHT nodes (a loopback testnet of our own nodes): publish,
resolve from another node, what the nodes' refusals mean (a stale packet is a conflict, BEP 44
error 302) and a proven absence. (Against real relays: tests/pkarr/test_relay_client.py; against
foreign DHT swarms, through ``pkdns publish``/``resolve``: tests/cmd/integration/test_cli.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pkdns.clock import SYSTEM_CLOCK
from pkdns.dht.node import DhtNode
from pkdns.dht.testnet import Testnet
from pkdns.pkarr.client import DHT, PkarrClient
from tests.support.pkarr_factory import keypair, packet

KP = keypair(41)


@pytest.fixture
async def nodes(testnet: Testnet) -> AsyncIterator[tuple[DhtNode, DhtNode]]:
    """Two client-mode nodes that joined the testnet (a writer and a reader)."""
    made = []
    try:
        for _ in range(2):
            node = DhtNode(mode="client", request_timeout=1.0)
            made.append(node)
            await node.start("127.0.0.1", 0)
            await node.bootstrap(testnet.bootstrap, timeout=5.0)
        yield made[0], made[1]
    finally:
        for node in made:
            await node.close()


async def test_publish_resolve_and_a_stale_packet_refused(
        nodes: tuple[DhtNode, DhtNode]) -> None:
    writer, reader = PkarrClient(nodes[0]), PkarrClient(nodes[1])
    now = SYSTEM_CLOCK.wall_us()
    old = packet(KP, ["@ 300 IN A 192.0.2.1"], now - 10_000_000)
    new = packet(KP, ["@ 300 IN A 192.0.2.2"], now)
    first = await writer.publish(new)
    assert first.dht is not None and first.dht.stored >= 3 and not first.conflict
    found = await reader.resolve_most_recent(KP.public_key, timeout=3.0)
    assert found.best == new and found.source == DHT and found.dht_used
    stale = await writer.publish(old)          # every holder has a higher seq: 302
    assert stale.dht is not None and stale.dht.stored == 0 and stale.conflict
    assert stale.dht.code == 302 and stale.dht.error is not None
    assert (await reader.resolve_most_recent(KP.public_key, timeout=3.0)).best == new


async def test_a_key_nobody_published_is_proven_absent(nodes: tuple[DhtNode, DhtNode]) -> None:
    found = await PkarrClient(nodes[1]).resolve_most_recent(keypair(42).public_key, timeout=3.0)
    assert found.best is None and found.absent and found.finished
