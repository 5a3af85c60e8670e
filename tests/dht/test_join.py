"""Joining over a lossy network (pkdns/dht/join.py): resends with backoff, every attempt open
until the deadline, the first real answer wins; a node whose first hellos are lost still
joins, and a read-only node seeds its lookups from the contacts the greeted node listed."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

from pkdns.dht import krpc
from pkdns.dht.join import Greeter, first_answer, hello_offsets, resend_offsets, system_resolve
from pkdns.dht.krpc import Address, ErrorMessage, NodeInfo, Query, Response
from pkdns.dht.node import DhtNode
from tests.support.clock import run_in_virtual_time

ID = b"\x01" * 20
PEER = b"\x02" * 20


def test_resend_offsets_double_up_to_the_cap() -> None:
    assert resend_offsets(10.0) == [0.0, 0.25, 0.75, 1.75, 3.75, 5.75, 7.75, 9.75]
    assert resend_offsets(0.2) == [0.0]
    assert resend_offsets(1.0, first=0.125, most=0.25) == [0.0, 0.125, 0.375, 0.625, 0.875]


def test_hello_offsets_stay_steady_for_the_first_second() -> None:
    assert resend_offsets(4.0, steady=1.0) == [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5]
    assert hello_offsets(4.0) == [0.0, 0.05, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5]
    assert hello_offsets(0.05) == [0.0]
    assert hello_offsets(0.06) == [0.0, 0.05]


def test_a_join_through_one_lossy_host_resends_every_quarter_second() -> None:
    """Five hellos lost in a row (one join in 30 at 30 % loss each way): the sixth goes out
    1 s after the first, not 7.75 s (a doubling schedule). In virtual time: the schedule
    itself, not how late a loaded machine ran it."""
    sent: list[float] = []

    async def ask(addr: Address, q: Query, wait: float) -> Response | None:
        sent.append(asyncio.get_running_loop().time())
        if len(sent) < 6:
            await asyncio.sleep(wait)
            return None
        return Response(b"aa", PEER)

    async def join() -> None:
        greeter = Greeter(ID, True, ask, lambda i, a: None)
        tasks: set[asyncio.Task[None]] = set()
        assert await greeter.greet([("127.0.0.2", 2)], 10.0, tasks)
        await asyncio.gather(*tasks)

    run_in_virtual_time(join())
    assert sent == pytest.approx([0.0, 0.05, 0.25, 0.5, 0.75, 1.0])  # 0.05: the early copy


def test_a_late_reply_to_the_first_attempt_still_wins() -> None:
    """The first datagram was slow, not lost: its reply arrives after the second was sent."""
    calls: list[float] = []

    async def attempt(wait: float) -> Response | None:
        calls.append(wait)
        if len(calls) == 1:
            await asyncio.sleep(0.08)
            return Response(b"aa", PEER)
        await asyncio.sleep(wait)
        return None

    async def race() -> tuple[Response | None, float]:
        got = await first_answer(attempt, 1.0, [0.0, 0.05, 0.5])
        return got, asyncio.get_running_loop().time()

    got, at = run_in_virtual_time(race())
    assert got is not None and got.id == PEER
    assert calls == pytest.approx([1.0, 0.95]) and at == pytest.approx(0.08)


async def test_errors_and_silence_are_not_answers() -> None:
    async def attempt(wait: float) -> Response | ErrorMessage | None:
        return ErrorMessage(b"aa", 202, "Server Error")

    assert await first_answer(attempt, 0.1, [0.0, 0.02, 0.04]) is None


async def test_lost_hellos_are_resent_until_one_gets_through() -> None:
    """Two datagrams lost, the third answered: joined, the peer and its listed contacts kept."""
    seen: list[tuple[bytes, Address]] = []
    sent: list[Query] = []
    listed = (NodeInfo(b"\x03" * 20, "127.0.0.3", 3), NodeInfo(b"\x7f" * 20, "127.0.0.4", 4))

    async def ask(addr: Address, q: Query, wait: float) -> Response | None:
        sent.append(q)
        if len(sent) < 3:
            await asyncio.sleep(wait)  # lost: nothing comes back before the deadline
            return None
        return Response(b"aa", PEER, nodes=listed)

    greeter = Greeter(ID, True, ask, lambda i, a: seen.append((i, a)), resend_first=0.02)
    tasks: set[asyncio.Task[None]] = set()
    assert await greeter.greet([("127.0.0.2", 2)], 2.0, tasks)
    assert seen == [(PEER, ("127.0.0.2", 2))]
    assert [q.method for q in sent] == ["find_node"] * 3
    assert all(q.read_only and q.target == ID for q in sent)
    # hints top up the (empty) table's seeds, closest to the target first
    assert greeter.seeds([], b"\x7f" * 20) == [(b"\x7f" * 20, ("127.0.0.4", 4)),
                                               (b"\x03" * 20, ("127.0.0.3", 3))]
    await asyncio.gather(*tasks)


def test_nobody_answers_within_the_timeout() -> None:
    async def ask(addr: Address, q: Query, wait: float) -> Response | None:
        await asyncio.sleep(wait)
        return None

    async def join() -> float:
        greeter = Greeter(ID, False, ask, lambda i, a: None, resend_first=0.05)
        assert not await greeter.greet([("127.0.0.2", 2), ("127.0.0.3", 3)], 0.3, set())
        return asyncio.get_running_loop().time()

    assert run_in_virtual_time(join()) == pytest.approx(0.3)   # the timeout, to the tick


class _DropFirst(asyncio.DatagramProtocol):
    """A real UDP peer that ignores the first query it gets and answers the rest."""

    def __init__(self) -> None:
        self.got = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.got += 1
        q = krpc.decode(data)
        if self.got > 1 and isinstance(q, Query) and self.transport is not None:
            self.transport.sendto(krpc.encode(Response(q.tid, PEER)), addr)


async def test_a_lost_query_is_retransmitted_within_the_request_timeout() -> None:
    """On a lossy link the node resends an unanswered query (0.25 s later) instead of
    counting the node dead after one lost datagram."""
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(_DropFirst,
                                                          local_addr=("127.0.0.1", 0))
    node = DhtNode(mode="client", request_timeout=2.0)
    await node.start("127.0.0.1", 0)
    try:
        t0 = time.monotonic()
        assert await node.ping(transport.get_extra_info("sockname")[:2])
        # answered within the 2 s request timeout by a resent copy, sent no sooner than 0.25 s
        # (how much later a loaded machine sends it is no part of the promise)
        assert peer.got == 2 and node.protocol.stats.resent == 1
        assert time.monotonic() - t0 >= 0.2
    finally:
        await node.close()
        transport.close()


async def test_an_address_literal_is_not_looked_up(monkeypatch: Any) -> None:
    """A bootstrap address needs no getaddrinfo: a one-shot command starts no resolver thread
    for it. A name still goes to getaddrinfo (a fake here, the test never leaves the host)."""
    asked: list[str] = []

    async def getaddrinfo(host: str, port: int, **kw: Any) -> list[Any]:
        asked.append(host)
        return [(2, 2, 17, "", ("192.0.2.7", port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    assert await system_resolve("127.0.0.1", 6881) == [("127.0.0.1", 6881)]
    assert await system_resolve("10.1.2.3", 1) == [("10.1.2.3", 1)]
    assert asked == []
    assert await system_resolve("router.example", 6881) == [("192.0.2.7", 6881)]
    assert await system_resolve("1.2.3", 6881) == [("192.0.2.7", 6881)]  # inet_aton's, not ours
    assert asked == ["router.example", "1.2.3"]


def test_a_hint_silent_twice_is_no_seed_and_is_not_taken_again() -> None:
    """A hint is not in the routing table, which counts an entry's failures: the greeter
    counts them. Silent twice, it is no seed any more, even when a later hello lists it."""
    async def never(addr: Address, query: Query, wait: float) -> None:
        return None
    greeter = Greeter(ID, True, never, lambda i, a: None)
    dead, live = NodeInfo(b"\x03" * 20, "10.0.0.3", 6881), NodeInfo(b"\x04" * 20, "10.0.0.4", 6881)
    greeter.hint([dead, live])
    greeter.failed(dead.addr)
    assert [a for _, a in greeter.seeds([], PEER)] == [dead.addr, live.addr]  # once: loss?
    greeter.failed(dead.addr)
    greeter.hint([dead])
    assert [a for _, a in greeter.seeds([], PEER)] == [live.addr]


def test_a_hint_that_answers_starts_its_count_again() -> None:
    """Twice silent *in a row*, as for a table entry: at 30 % loss a live node is silent now
    and then, and an answer between two losses shows it is alive."""
    async def never(addr: Address, query: Query, wait: float) -> None:
        return None
    greeter = Greeter(ID, True, never, lambda i, a: None)
    lossy = NodeInfo(b"\x05" * 20, "10.0.0.5", 6881)
    greeter.hint([lossy])
    greeter.failed(lossy.addr)
    greeter.answered(lossy.addr)
    greeter.failed(lossy.addr)
    assert [a for _, a in greeter.seeds([], PEER)] == [lossy.addr]


class _NamesTheSilent(asyncio.DatagramProtocol):
    """A bootstrap host whose greeting lists ``silent`` (dead nodes its table kept); it
    answers a get with no value and no contacts."""

    def __init__(self, silent: list[NodeInfo]) -> None:
        self.silent = silent
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        q = krpc.decode(data)
        if not isinstance(q, Query) or self.transport is None:
            return
        nodes = tuple(self.silent) if q.method == "find_node" else ()
        self.transport.sendto(krpc.encode(Response(q.tid, PEER, nodes=nodes, token=b"t")), addr)


class _Silent(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got = 0

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.got += 1


async def test_lookups_stop_asking_the_hints_that_stayed_silent_twice() -> None:
    """Kernel lab (traced): the bootstrap host listed dead nodes, and every lookup of a
    one-shot resolve -- eight walks at a time -- started by asking them. Two lookups that
    asked them in vain, and the third asks only the host."""
    loop = asyncio.get_running_loop()
    silent = [await loop.create_datagram_endpoint(_Silent, local_addr=("127.0.0.1", 0))
              for _ in range(6)]
    infos = [NodeInfo(bytes([0x80 + i]) + b"\x00" * 19, "127.0.0.1",
                      t.get_extra_info("sockname")[1]) for i, (t, _) in enumerate(silent)]
    host_t, _ = await loop.create_datagram_endpoint(lambda: _NamesTheSilent(infos),
                                                    local_addr=("127.0.0.1", 0))
    node = DhtNode(mode="client", request_timeout=0.4)
    await node.start("127.0.0.1", 0)
    try:
        assert await node.join([host_t.get_extra_info("sockname")[:2]], timeout=2.0,
                               target=PEER)
        for _ in range(2):
            await node.get_mutable(PEER, timeout=1.5).collect()
        assert all(p.got >= 2 for _, p in silent)  # asked, in vain, by both lookups
        before = [p.got for _, p in silent]
        await node.get_mutable(PEER, timeout=1.5).collect()
        assert [p.got for _, p in silent] == before
    finally:
        await node.close()
        host_t.close()
        for t, _ in silent:
            t.close()
