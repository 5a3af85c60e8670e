"""The asyncio node on real loopback sockets: testnet put/get, modes, spoofed replies and floods."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator

import pytest

from pkdns.dht import krpc
from pkdns.dht.ids import distance
from pkdns.dht.item import sign_item
from pkdns.dht.krpc import Query, Response
from pkdns.dht.node import DhtNode
from pkdns.dht.resend import MIN_GAP, RETRANSMIT
from pkdns.dht.rtt import DEFAULT_SOFT
from pkdns.dht.testnet import Testnet
from pkdns.errors import DhtError

SEED = bytes(range(32))
NID = b"p" * 20


@pytest.fixture
async def testnet() -> AsyncIterator[Testnet]:
    net = await Testnet.start(12)
    try:
        yield net
    finally:
        await net.close()


@pytest.fixture
async def client() -> AsyncIterator[DhtNode]:
    node = DhtNode(request_timeout=0.5)
    await node.start("127.0.0.1", 0)
    try:
        yield node
    finally:
        await node.close()


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


async def _recv(s: socket.socket, timeout: float = 1.0) -> tuple[bytes, tuple[str, int]] | None:
    loop = asyncio.get_running_loop()
    try:
        data, addr = await asyncio.wait_for(loop.sock_recvfrom(s, 65535), timeout)
    except TimeoutError:
        return None
    return data, (addr[0], addr[1])


async def test_put_and_get_on_testnet(testnet: Testnet, client: DhtNode) -> None:
    assert all(len(n.table) >= 5 for n in testnet.nodes)
    assert await client.bootstrap(testnet.bootstrap) >= 5
    item = sign_item(SEED, 1_700_000_000_000_000, b"packet bytes")
    result = await client.put_mutable(item, timeout=3.0)
    assert result.stored >= 8 and result.error is None
    reader = DhtNode(request_timeout=0.5)
    await reader.start("127.0.0.1", 0)
    try:
        await reader.bootstrap([testnet.nodes[-1].address])
        query = reader.get_mutable(item.k, timeout=3.0)
        assert await query.collect() == [item]
        assert query.outcome.values >= 8 and query.outcome.invalid_values == 0
        newer = sign_item(SEED, item.seq + 1, b"newer packet")
        assert (await client.put_mutable(newer, timeout=3.0)).stored >= 8
        assert [i async for i in reader.get_mutable(item.k, item.seq)] == [newer]
        again = await client.put_mutable(item, timeout=3.0)
        assert again.stored == 0 and again.error is not None and again.error[0] == 302
    finally:
        await reader.close()
    assert client.estimated_network_size() > 0


async def test_a_put_tells_whether_it_reached_the_closest(testnet: Testnet,
                                                          client: DhtNode) -> None:
    """With the nodes closest to the key silent, the put still stores on farther ones, but
    says it did not reach the closest (a publisher retries; a test must not count it)."""
    assert await client.bootstrap(testnet.bootstrap) >= 5
    item = sign_item(SEED, 1_700_000_000_000_000, b"packet bytes")
    result = await client.put_mutable(item, timeout=3.0)
    assert result.converged and result.stored == result.asked >= 8
    nearest = sorted(testnet.nodes[4:], key=lambda n: distance(n.id, item.target))[:3]
    for node in nearest:                     # silent from now on (bootstrap nodes kept)
        await node.close()
    newer = sign_item(SEED, item.seq + 1, b"newer packet")
    result = await client.put_mutable(newer, timeout=3.0)
    assert result.stored >= 1 and not result.converged


async def test_export_import_nodes(testnet: Testnet, client: DhtNode) -> None:
    await client.bootstrap(testnet.bootstrap)
    saved = client.export_nodes()
    assert saved and all(len(i) == 20 and h == "127.0.0.1" for i, h, _ in saved)
    # A restarted daemon keeps its node ID (state.py), so its buckets hold what they held
    # before; a fresh random ID could put 9 of the 10 saved nodes into one 8-slot bucket.
    fresh = DhtNode(node_id=client.id)
    fresh.import_nodes(saved)
    assert fresh.routing_table_size() == len(saved)


async def test_bootstrap_through_injected_resolver(testnet: Testnet) -> None:
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[tuple[str, int]]:
        asked.append(host)
        if host == "router.test":
            return [testnet.nodes[0].address]
        raise OSError("no such host")

    node = DhtNode(resolve_host=resolve, request_timeout=0.5)
    await node.start("127.0.0.1", 0)
    try:
        assert await node.bootstrap([("router.test", 6881), ("gone.test", 1)]) >= 5
    finally:
        await node.close()
    assert asked == ["router.test", "gone.test"]


async def test_unreachable_bootstrap_gives_empty_table(client: DhtNode) -> None:
    dead = _udp()
    try:
        assert await client.bootstrap([dead.getsockname()], timeout=2.0) == 0
        query = client.get_mutable(SEED)
        assert await query.collect() == [] and query.outcome.queried == 0
    finally:
        dead.close()


async def test_read_only_client_is_silent_and_sends_ro(client: DhtNode) -> None:
    peer = _udp()
    try:
        peer.sendto(krpc.encode(Query(b"aa", "ping", NID)), client.address)
        assert await _recv(peer, 0.3) is None  # BEP 43: no answers
        task = asyncio.create_task(client.protocol.request(peer.getsockname(),
                                                           Query(b"", "ping", client.id,
                                                                 read_only=True), 1.0))
        got = await _recv(peer)
        assert got is not None and b"2:roi1e" in got[0]
        task.cancel()
    finally:
        peer.close()


async def test_reply_from_unasked_address_is_ignored(client: DhtNode) -> None:
    """On real sockets: same tid from another port is dropped; the real one is taken."""
    peer, spoofer = _udp(), _udp()
    try:
        task = asyncio.create_task(client.protocol.request(
            peer.getsockname(), Query(b"", "get", client.id, target=b"t" * 20), 2.0))
        got = await _recv(peer)
        assert got is not None
        q = krpc.decode(got[0])
        spoofer.sendto(krpc.encode(Response(q.tid, b"S" * 20)), client.address)
        await asyncio.sleep(0.05)
        assert not task.done()
        peer.sendto(krpc.encode(Response(q.tid, b"R" * 20)), client.address)
        reply = await task
        assert isinstance(reply, Response) and reply.id == b"R" * 20
        assert client.protocol.stats.unsolicited == 1
        peer.sendto(krpc.encode(Response(q.tid, b"L" * 20)), client.address)  # late duplicate
        await asyncio.sleep(0.05)
        assert client.protocol.stats.unsolicited == 2
    finally:
        peer.close()
        spoofer.close()


async def test_each_copy_has_its_own_tid_and_an_answer_to_any_counts(client: DhtNode) -> None:
    """On real sockets: a resend goes out with a fresh tid (so an answer names the copy it
    answers, RFC 9002 §5); the answer to the first copy, arriving after the second went
    out, is taken; the Asker times it from the first copy, not from the resend."""
    peer = _udp()
    copies: list[bytes] = []
    try:
        task = asyncio.create_task(client.protocol.request(
            peer.getsockname(), Query(b"", "get", client.id, target=b"t" * 20), 2.0,
            resend=[0.05, 1.5], on_copy=copies.append))
        first, second = await _recv(peer), await _recv(peer)
        assert first is not None and second is not None
        t1, t2 = krpc.decode(first[0]).tid, krpc.decode(second[0]).tid
        assert t1 != t2 and copies == [t1, t2]
        peer.sendto(krpc.encode(Response(t1, b"R" * 20)), client.address)
        reply = await task
        assert isinstance(reply, Response) and reply.tid == t1
        assert client.protocol.stats.resent == 1 and len(client.protocol.transactions) == 0
        peer.sendto(krpc.encode(Response(t2, b"L" * 20)), client.address)  # the copy's answer
        await asyncio.sleep(0.05)
        assert client.protocol.stats.unsolicited == 1
    finally:
        peer.close()


async def test_the_asker_times_an_answer_from_the_copy_it_answers() -> None:
    """The first copy is lost, the resend answered at once: a fast link, not a slow one."""
    node = DhtNode(mode="client", retransmit=0.2)
    await node.start("127.0.0.1", 0)
    peer = _udp()
    try:
        task = asyncio.create_task(node._asker.ask(
            peer.getsockname(), Query(b"", "ping", node.id)))
        assert await _recv(peer) is not None                       # dropped
        again = await _recv(peer, 1.0)
        assert again is not None
        peer.sendto(krpc.encode(Response(krpc.decode(again[0]).tid, NID)), node.address)
        assert isinstance(await task, Response)
        resends = node._asker.resends  # timed from the first copy it would be >= 0.2 s
        assert resends.rtt is not None and resends.rtt < 0.15
        assert resends.gap() == max(MIN_GAP, 4 * resends.rtt)
    finally:
        peer.close()
        await node.close()


async def test_a_join_measures_the_round_trip_for_the_first_lookup(testnet: Testnet) -> None:
    """A cold command looks up right after its join: the hellos' answers already set the
    resend gap (loopback: the floor), so the first round's lost datagrams are resent after
    MIN_GAP, not after the unmeasured RETRANSMIT; and the lookups' soft timeout, so its
    silent requests free their slots after twice that round trip, not DEFAULT_SOFT."""
    node = DhtNode(mode="client")
    await node.start("127.0.0.1", 0)
    try:
        assert node._asker.resends.rtt is None and node._asker.resends.gap() == RETRANSMIT
        assert node.rtt.soft_timeout() == DEFAULT_SOFT
        assert await node.join(testnet.bootstrap, timeout=2.0)
        rtt = node._asker.resends.rtt   # loopback: a few ms, so the gap is the floor
        assert rtt is not None and node._asker.resends.gap() == max(MIN_GAP, 4 * rtt)
        assert any(node.rtt.node(a) is not None for a in testnet.bootstrap)  # known: resent
        assert node.rtt.soft_timeout() < DEFAULT_SOFT
    finally:
        await node.close()


async def test_server_survives_garbage_and_rate_limits() -> None:
    """On the wire: no reply to garbage; a ping flood is answered only up to the
    per-IP budget; the node keeps serving."""
    server = DhtNode(mode="server", request_rate_limit=5.0)
    await server.start("127.0.0.1", 0)
    peer = _udp()
    try:
        for junk in (b"", b"d", b"garbage" * 10, b"d1:t2:aa1:y1:qe", b"l" * 60 + b"e" * 60):
            peer.sendto(junk, server.address)
        assert await _recv(peer, 0.2) is None
        for i in range(200):
            peer.sendto(krpc.encode(Query(i.to_bytes(2, "big"), "ping", NID)), server.address)
        replies = 0
        while await _recv(peer, 0.2) is not None:
            replies += 1
        assert 20 <= replies <= 30  # burst of 25 plus a few refills
        assert server.rate_limited >= 170
        assert server.protocol.stats.malformed == 5
    finally:
        peer.close()
        await server.close()


async def test_bad_bind_is_a_dht_error() -> None:
    node = DhtNode()
    with pytest.raises(DhtError):
        await node.start("192.0.2.1", 0)
    with pytest.raises(DhtError):
        _ = node.address


def _drain(s: socket.socket) -> list[krpc.Message]:
    out: list[krpc.Message] = []
    while True:
        try:
            out.append(krpc.decode(s.recvfrom(65535)[0]))
        except BlockingIOError:
            return out


async def test_queriers_are_good_only_after_answering(testnet: Testnet) -> None:
    """Issue 13: 64 senders of queries that never answer must not become routing-table
    contacts (on the old code every one did, and cold lookups then asked them and waited);
    a server-mode node that answers our ping does get in."""
    server = DhtNode(mode="server", request_rate_limit=0, request_timeout=1.0)
    await server.start("127.0.0.1", 0)
    fakes = [_udp() for _ in range(64)]
    # next to the server's id: a bucket with room (a random id fell in the far bucket, full
    # of the testnet's nodes, one run in ~16, and was rightly never pinged)
    joiner = DhtNode(mode="server", request_rate_limit=0, request_timeout=1.0,
                     node_id=server.id[:4] + random.Random(14).randbytes(16))
    await joiner.start("127.0.0.1", 0)
    try:
        await server.bootstrap(testnet.bootstrap)
        honest = {e.addr for e in server.table.entries()}
        rng = random.Random(13)
        for i, s in enumerate(fakes):
            fid = rng.getrandbits(160).to_bytes(20, "big")
            s.sendto(krpc.encode(Query(i.to_bytes(2, "big"), "find_node", fid,
                                       target=fid)), server.address)
        await asyncio.sleep(1.3)  # their verification pings (8 at a time) time out
        await joiner.bootstrap([server.address])
        for _ in range(250):  # the joiner answers the server's ping: bounded wait for it
            if joiner.address in {e.addr for e in server.table.entries()}:
                break
            await asyncio.sleep(0.02)
        fake_addrs = {s.getsockname() for s in fakes}
        table = {e.addr for e in server.table.entries()}
        assert not table & fake_addrs
        assert joiner.address in table and honest <= table
        got = [(i, m) for i, s in enumerate(fakes) for m in _drain(s)]
        assert sum(isinstance(m, Response) for _, m in got) == 64  # every query was answered
        # at most 8 pinged (a ping may be retransmitted, each copy with its own tid)
        pinged = {i for i, m in got if isinstance(m, Query) and m.method == "ping"}
        assert 0 < len(pinged) <= 8
        query = server.get_mutable(SEED, timeout=3.0)
        assert await query.collect() == []
        assert not [m for s in fakes for m in _drain(s)]  # the lookup asked none of them
    finally:
        for s in fakes:
            s.close()
        await joiner.close()
        await server.close()


async def test_network_size_is_unknown_until_the_node_walked_to_its_own_id(
        testnet: Testnet, client: DhtNode) -> None:
    # A CLI node only joins: its table holds the bootstrap host, from which the network
    # "looks" a few nodes large -- every key's neighbourhood would pass for a Sybil cluster
    # and each value be held back until the lookup ends. Unknown (0): the Sybil test assumes
    # a Mainline-sized network (pkdns.dht.sybil.UNKNOWN_SIZE).
    assert await client.join(testnet.bootstrap, timeout=3.0)
    assert len(client.table) >= 1
    assert client.estimated_network_size() == 0
    assert client.get_mutable(b"k" * 32, timeout=0.1).lookup.network_size == 0
    await client.bootstrap(testnet.bootstrap)
    assert client.estimated_network_size() > 0
    restored = DhtNode(node_id=client.id)
    restored.import_nodes(client.export_nodes())
    assert restored.estimated_network_size() == client.estimated_network_size()
