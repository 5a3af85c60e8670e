"""Interop with libtorrent 2.1.1 (the reference C++ DHT) on loopback: a libtorrent swarm
stores our put and ``dht_get_mutable_item`` returns our exact packet; our get reads items that
libtorrent nodes put (libtorrent chooses seq itself: highest seen + 1)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from pkdns.dht.item import MutableItem, sign_item
from pkdns.dht.node import DhtNode
from tests.support.peers import LibtorrentSwarm

pytestmark = [pytest.mark.interop, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module")
def lt_swarm() -> Iterator[LibtorrentSwarm]:
    swarm = LibtorrentSwarm(10)
    try:
        assert swarm.routing_table_size(9) > 0
        yield swarm
    finally:
        swarm.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(lt_swarm: LibtorrentSwarm) -> AsyncIterator[DhtNode]:
    # Server mode: libtorrent adds nodes that put to it (even with ro=1) to its table and then
    # waits its 15 s RPC timeout on a node that never answers (``rpc_manager.cpp``).
    node = DhtNode(mode="server", request_timeout=1.0, request_rate_limit=0)
    await node.start("127.0.0.1", 0)
    try:
        assert await node.bootstrap(lt_swarm.bootstrap) >= 5
        yield node
    finally:
        await node.close()


async def test_libtorrent_returns_our_exact_packet(lt_swarm: LibtorrentSwarm,
                                                   client: DhtNode) -> None:
    item = sign_item(os.urandom(32), 1_700_000_000_654_321, os.urandom(500))
    result = await client.put_mutable(item, timeout=4.0)
    assert result.stored >= 8 and result.error is None
    got = await asyncio.to_thread(lt_swarm.get, 7, item.k, 20)
    assert got is not None
    assert (got["seq"], got["v"], got["sig"]) == (item.seq, item.v, item.sig)


async def test_our_get_reads_libtorrent_items(lt_swarm: LibtorrentSwarm,
                                              client: DhtNode) -> None:
    seed = os.urandom(32)
    k = sign_item(seed, 0, b"").k
    v = os.urandom(300)
    put = await asyncio.to_thread(lt_swarm.put, 2, seed, k, v, 30)
    assert put is not None and put["num_success"] >= 1 and put["seq"] == 1
    items = await client.get_mutable(k, timeout=4.0).collect()
    assert items and items[-1] == MutableItem(k, 1, v, put["signature"])
    # libtorrent then writes highest + 1 over our newer item
    ours = sign_item(seed, 1_700_000_000_000_000, b"pkarr timestamp")
    assert (await client.put_mutable(ours, timeout=4.0)).stored >= 8
    put2 = await asyncio.to_thread(lt_swarm.put, 4, seed, k, b"after", 30)
    assert put2 is not None and put2["seq"] == ours.seq + 1
    newest = await client.get_mutable(k, ours.seq, timeout=4.0).collect()
    assert newest and newest[-1].seq == ours.seq + 1 and newest[-1].v == b"after"


async def test_libtorrent_refuses_997_bytes_we_refuse_nothing_smaller(
        lt_swarm: LibtorrentSwarm, client: DhtNode) -> None:
    """libtorrent stores bencoded v <= 1000, i.e. raw v <= 996 (205 above that)."""
    ok = sign_item(os.urandom(32), 5, os.urandom(996))
    assert (await client.put_mutable(ok, timeout=4.0)).stored >= 8
    big = sign_item(os.urandom(32), 5, os.urandom(997))
    refused = await client.put_mutable(big, timeout=4.0)
    assert refused.stored == 0 and refused.error is not None and refused.error[0] == 205
