"""A loopback DHT: N server-mode :class:`DhtNode` s on 127.0.0.1, bootstrapped to each other.

Used by the tests, ``pkdns testnet`` and ``pkdns --testnet`` (the offline demo). Rate limits
are off because every node shares one source IP.
"""

from __future__ import annotations

import asyncio

from pkdns.dht.node import DhtNode

HOST = "127.0.0.1"
JOINING_AT_ONCE = 4
"""Nodes bootstrapping at the same time. They share one event loop and join through one
node: all 47 of a 48-node net at once flooded its socket, replies queued behind thousands of
datagrams until they timed out and were resent, and on a loaded machine the net stayed deaf
for seconds after start (the first puts then reached one far node or none). Four at a time
joins the same net in a third of the datagrams, with no resends."""


class Testnet:
    """``await Testnet.start(n)``; ``.bootstrap`` gives addresses a client can join through."""

    __test__ = False  # not a pytest class

    def __init__(self, nodes: list[DhtNode]) -> None:
        self.nodes = nodes

    @classmethod
    async def start(cls, n: int = 10, port: int = 0, *, request_timeout: float = 1.0) -> Testnet:
        """Start ``n`` nodes on consecutive ports from ``port`` (``0``: any free ports)."""
        if n < 1:
            raise ValueError("a testnet needs at least one node")
        nodes: list[DhtNode] = []
        try:
            for i in range(n):
                node = DhtNode(mode="server", request_rate_limit=0,
                               request_timeout=request_timeout)
                nodes.append(node)
                await node.start(HOST, port + i if port else 0)
            room = asyncio.Semaphore(JOINING_AT_ONCE)

            async def join(node: DhtNode) -> None:
                async with room:
                    await node.bootstrap([nodes[0].address], timeout=5.0)

            await asyncio.gather(*(join(node) for node in nodes[1:]))
            # second pass so early nodes learn the late ones
            await asyncio.gather(*(join(node) for node in nodes))
            # start-up traffic over (hellos still resending, verification pings): the first
            # lookup a caller makes is answered at once
            await asyncio.gather(*(node.settle() for node in nodes))
        except BaseException:
            await asyncio.gather(*(node.close() for node in nodes))
            raise
        return cls(nodes)

    @property
    def bootstrap(self) -> list[tuple[str, int]]:
        return [node.address for node in self.nodes[:4]]

    async def close(self) -> None:
        await asyncio.gather(*(node.close() for node in self.nodes))
