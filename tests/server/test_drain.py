"""Draining the DNS listeners (what SIGTERM runs), in-process on loopback with a slow fake
upstream: each transport drains only the queries it took.

An upstream fetch is shared: a UDP query, a TCP query and a DoH query for the same name join
one fetch. A listener's drain waits for its own answers and cancels only its own tasks; the
fetch goes on for whoever else waits on it (the resolver ends the ones left at the daemon's
final stop, :meth:`pkdns.dns.resolver.Resolver.close`). A TCP listener takes no new query once
it drains, answers those in progress, then closes each connection with a FIN.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import dns.message
import dns.rcode
import pytest

from pkdns.clock import SYSTEM_CLOCK
from pkdns.config import CacheConfig, Config, DnsConfig
from pkdns.dns import wire
from pkdns.dns.cache import WireCache
from pkdns.dns.forwarder import Forwarder
from pkdns.dns.reply import inspect_reply
from pkdns.dns.resolver import Resolver
from pkdns.metrics import Metrics
from pkdns.server.listeners import DnsListeners
from tests.support.upstream import Delayed, FakeUpstream, Reply, answer

Start = Callable[[FakeUpstream], Awaitable[DnsListeners]]
FRESH, STALE = "192.0.2.20", "192.0.2.10"


def delays(**seconds: float) -> Callable[[bytes, str], Reply]:
    """Answer ``<label>.example.test`` with FRESH after ``seconds[label]`` (UDP, not blocking)."""
    def handle(data: bytes, _t: str) -> Reply:
        name = dns.message.from_wire(data).question[0].name
        reply = answer(data, f"{name} 300 IN A {FRESH}")
        return Delayed(reply, seconds[name.labels[0].decode().lower()])
    return handle


@pytest.fixture
async def listeners() -> AsyncIterator[Start]:
    """``await listeners(upstream)``: UDP + TCP on 127.0.0.1 (one free port) in front of one
    resolver, as the daemon builds them; stopped afterwards."""
    made: list[DnsListeners] = []

    async def start(up: FakeUpstream) -> DnsListeners:
        dns_cfg = DnsConfig(listen=(("127.0.0.1", 0),), upstream=((up.host, up.port),),
                            rate_limit=0.0)
        cfg = Config(dns=dns_cfg, cache=CacheConfig())
        metrics = Metrics()
        fwd = Forwarder(dns_cfg.upstream, dns_cfg.upstream_timeout, metrics)
        resolver = Resolver(cfg, WireCache(cfg.cache), fwd, SYSTEM_CLOCK, metrics)
        listening = DnsListeners(resolver, dns_cfg)
        await listening.start()
        made.append(listening)
        return listening

    try:
        yield start
    finally:
        for listening in made:
            await listening.stop()
            await listening.resolver.close()


def query(label: str) -> dns.message.Message:
    return dns.message.make_query(f"{label}.example.test", "A")


def make_stale(resolver: Resolver, label: str) -> None:
    """An expired entry for ``label`` (within its serve-stale window): a query for it takes the
    slow path, which waits on the name's fetch as a coroutine (RFC 8767 refresh)."""
    q = query(label).to_wire()
    scanned = wire.scan(q)
    assert scanned is not None
    reply = answer(q, f"{label}.example.test. 300 IN A {STALE}")
    resolver.cache.store(scanned[0], inspect_reply(reply), SYSTEM_CLOCK.monotonic() - 1000)


def udp_client(port: int, q: dns.message.Message) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.sendto(q.to_wire(), ("127.0.0.1", port))
    return sock


async def udp_answer(sock: socket.socket, timeout: float) -> dns.message.Message:
    loop = asyncio.get_running_loop()
    data = await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout)
    return dns.message.from_wire(data)


async def tcp_client(port: int, q: dns.message.Message
                     ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    wire_q = q.to_wire()
    writer.write(struct.pack(">H", len(wire_q)) + wire_q)
    await writer.drain()
    return reader, writer


async def tcp_answer(reader: asyncio.StreamReader, timeout: float) -> dns.message.Message:
    async def one() -> dns.message.Message:
        size = struct.unpack(">H", await reader.readexactly(2))[0]
        return dns.message.from_wire(await reader.readexactly(size))
    return await asyncio.wait_for(one(), timeout)


def address(reply: dns.message.Message) -> str:
    assert reply.rcode() == dns.rcode.NOERROR, reply
    return str(reply.answer[0][0])


async def test_udp_drain_leaves_the_shared_fetch_to_a_tcp_query(listeners: Start) -> None:
    """The UDP listener's drain runs out (grace 0.3 s) while its query and a TCP query wait on
    one fetch: it ends its own query, and the TCP query still gets the fetched answer."""
    with FakeUpstream(delays(shared=0.7)) as up:
        dns_ = await listeners(up)
        port = dns_.bound[0][1]
        make_stale(dns_.resolver, "shared")
        sock = udp_client(port, query("shared"))
        reader, writer = await tcp_client(port, query("shared"))
        await asyncio.sleep(0.1)
        assert len(dns_.resolver.fetches) == 1 and dns_.udp[0].tasks
        await dns_.udp[0].drain(0.3)
        try:
            assert address(await tcp_answer(reader, 2.0)) == FRESH
        finally:
            writer.close()
            sock.close()
        assert len(up.queries()) == 1


async def test_udp_drain_waits_only_for_its_own_answers(listeners: Start) -> None:
    """A fetch only a TCP query waits on (2 s) does not hold up the UDP drain, which returns
    once its own miss (0.3 s) is answered."""
    with FakeUpstream(delays(mine=0.3, theirs=2.0)) as up:
        dns_ = await listeners(up)
        port = dns_.bound[0][1]
        reader, writer = await tcp_client(port, query("theirs"))
        sock = udp_client(port, query("mine"))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await dns_.udp[0].drain(3.0)
        took = time.monotonic() - started
        try:
            assert address(await udp_answer(sock, 0.1)) == FRESH
            assert took < 1.0, took
            assert address(await tcp_answer(reader, 3.0)) == FRESH     # TCP still serves
        finally:
            writer.close()
            sock.close()


async def test_tcp_drain_answers_what_it_took_then_closes_with_a_fin(listeners: Start) -> None:
    """TCP drain: the query in progress is answered, a query sent after the drain began is
    not read, the connection ends with a FIN (EOF, not a reset) once the answer is out, and
    the drain does not wait for a fetch only a UDP client waits on."""
    with FakeUpstream(delays(mine=0.5, later=0.1, theirs=2.5)) as up:
        dns_ = await listeners(up)
        port = dns_.bound[0][1]
        sock = udp_client(port, query("theirs"))
        reader, writer = await tcp_client(port, query("mine"))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        drain = asyncio.create_task(dns_.tcp[0].drain(3.0))
        await asyncio.sleep(0.05)
        late = query("later").to_wire()
        writer.write(struct.pack(">H", len(late)) + late)
        try:
            assert address(await tcp_answer(reader, 2.0)) == FRESH
            assert await asyncio.wait_for(reader.read(), 1.0) == b""     # FIN, no reset
            await asyncio.wait_for(drain, 1.5)
            assert time.monotonic() - started < 1.5
            asked = [s.message.question[0].name.labels[0].lower() for s in up.queries()]
            assert asked == [b"theirs", b"mine"]                # "later" was never read
        finally:
            writer.close()
            sock.close()


async def test_resolver_close_ends_the_fetches_left(listeners: Start) -> None:
    """The daemon's final stop: a fetch still running is ended in one place; its callback
    waiter (a plain UDP miss) gets SERVFAIL and its coroutine waiter (a TCP query with a stale
    entry) the stale answer, at once; the upstream's late reply is not cached."""
    with FakeUpstream(delays(plain=1.0, old=1.0)) as up:
        dns_ = await listeners(up)
        port = dns_.bound[0][1]
        make_stale(dns_.resolver, "old")
        sock = udp_client(port, query("plain"))
        reader, writer = await tcp_client(port, query("old"))
        await asyncio.sleep(0.1)
        assert len(dns_.resolver.fetches) == 2
        await dns_.resolver.close()
        try:
            assert (await udp_answer(sock, 0.2)).rcode() == dns.rcode.SERVFAIL
            assert address(await tcp_answer(reader, 0.2)) == STALE
        finally:
            writer.close()
            sock.close()
        assert len(dns_.resolver.fetches) == 0
        await asyncio.sleep(1.1)                     # the upstream replies to a closed socket
        scanned = wire.scan(query("plain").to_wire())
        assert scanned is not None and dns_.resolver.cache.get(scanned[0]) is None
