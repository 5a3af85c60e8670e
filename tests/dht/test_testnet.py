"""The loopback testnet starts quiet: nodes join a few at a time, and start returns only once
their start-up traffic is over (so a test's first lookups are not answered seconds late)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

import pytest

from pkdns.dht import testnet as testnet_mod
from pkdns.dht.node import DhtNode
from pkdns.dht.testnet import JOINING_AT_ONCE, Testnet


async def test_nodes_join_a_few_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    joining, most = 0, 0
    bootstrap = DhtNode.bootstrap

    async def counted(self: DhtNode, nodes: Sequence[tuple[str, int]], *,
                      timeout: float = 10.0) -> int:
        nonlocal joining, most
        joining += 1
        most = max(most, joining)
        try:
            return await bootstrap(self, nodes, timeout=timeout)
        finally:
            joining -= 1

    monkeypatch.setattr(testnet_mod.DhtNode, "bootstrap", counted)
    net = await Testnet.start(12)
    try:
        assert most == JOINING_AT_ONCE
        assert all(len(n.table) >= 5 for n in net.nodes)
    finally:
        await net.close()


async def test_settle_waits_for_the_hellos_still_resending() -> None:
    """A join returns at the first answer; the hello to a silent address resends on in the
    background until its timeout, and settle waits for it."""
    net = await Testnet.start(2)
    node = DhtNode(mode="server", request_rate_limit=0)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        silent.bind(("127.0.0.1", 0))
        await node.start("127.0.0.1", 0)
        assert await node.join([silent.getsockname(), net.nodes[0].address], timeout=1.0)
        assert len(node.protocol.transactions) == 1            # the hello to the silent one
        await asyncio.wait_for(node.settle(), 5)
        assert len(node.protocol.transactions) == 0
    finally:
        silent.close()
        await node.close()
        await net.close()


async def test_a_walk_keeps_the_nodes_that_answer_after_it_gave_up_on_them() -> None:
    """A loaded machine: every node but the bootstrap one answers 1.3 s late, past the walk's
    give-up time (1 s with no round trips measured) but inside the request timeout. The walk
    ends with the bootstrap node alone; its queries go on, and the late answers still join."""
    net = await Testnet.start(8)
    loop = asyncio.get_running_loop()
    for node in net.nodes[1:]:
        send = node.protocol.send
        setattr(node.protocol, "send",  # noqa: B010
                lambda msg, addr, send=send: loop.call_later(1.3, send, msg, addr))
    client = DhtNode(mode="client", request_timeout=3.0)
    try:
        await client.start("127.0.0.1", 0)
        assert await client.bootstrap([net.nodes[0].address], timeout=10.0) < 8
        await asyncio.wait_for(client.settle(), 10)
        assert len(client.table) == 8
    finally:
        await client.close()
        await net.close()
