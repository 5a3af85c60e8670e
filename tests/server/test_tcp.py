"""DNS over TCP in-process on loopback: pipelined cache misses (the callback fast path) are
counted like any query in progress -- answered after a half-close (RFC 7766 §6.2.4), bounded
by the pipeline limit, and never mistaken for an idle connection by the eviction."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import dns.message
import dns.rcode
import pytest

from pkdns.clock import SYSTEM_CLOCK
from pkdns.config import CacheConfig, Config, DnsConfig
from pkdns.dns.cache import WireCache
from pkdns.dns.forwarder import Forwarder
from pkdns.dns.resolver import Resolver
from pkdns.metrics import Metrics
from pkdns.server.tcp import PIPELINE_MAX, TcpServer
from tests.support.upstream import Delayed, FakeUpstream, Reply, answer

Serve = Callable[..., Any]


def slow(seconds: float) -> Callable[[bytes, str], Reply]:
    """Every UDP question answered with one A record after ``seconds`` (not blocking)."""
    def handle(data: bytes, _t: str) -> Reply:
        name = dns.message.from_wire(data).question[0].name
        return Delayed(answer(data, f"{name} 300 IN A 192.0.2.1"), seconds)
    return handle


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(upstream, **dns options)`` -> (TcpServer, port); drained afterwards."""
    servers: list[TcpServer] = []

    async def start(up: FakeUpstream, **kw: Any) -> tuple[TcpServer, int]:
        dns_cfg = DnsConfig(upstream=((up.host, up.port),), upstream_timeout=2.0,
                            query_deadline=3.0, rate_limit=0.0, **kw)
        cfg = Config(dns=dns_cfg, cache=CacheConfig())
        metrics = Metrics()
        fwd = Forwarder(dns_cfg.upstream, dns_cfg.upstream_timeout, metrics)
        resolver = Resolver(cfg, WireCache(cfg.cache), fwd, SYSTEM_CLOCK, metrics)
        tcp = TcpServer(resolver, dns_cfg)
        tcp.server = await asyncio.get_running_loop().create_server(
            tcp.protocol, "127.0.0.1", 0)
        servers.append(tcp)
        return tcp, tcp.server.sockets[0].getsockname()[1]

    try:
        yield start
    finally:
        for tcp in servers:
            await tcp.drain(0.5)


def queries(n: int, prefix: str) -> list[dns.message.Message]:
    return [dns.message.make_query(f"{prefix}{i}.example.test", "A") for i in range(n)]


def framed(qs: list[dns.message.Message]) -> bytes:
    return b"".join(struct.pack(">H", len(w)) + w for w in (q.to_wire() for q in qs))


async def read_all(reader: asyncio.StreamReader, n: int, timeout: float
                   ) -> list[dns.message.Message]:
    """Up to ``n`` answers, stopping early at EOF or a reset."""
    out: list[dns.message.Message] = []

    async def loop() -> None:
        while len(out) < n:
            try:
                size = struct.unpack(">H", await reader.readexactly(2))[0]
                out.append(dns.message.from_wire(await reader.readexactly(size)))
            except (asyncio.IncompleteReadError, ConnectionError):
                return

    await asyncio.wait_for(loop(), timeout)
    return out


async def test_half_close_answers_every_pipelined_miss(serve: Serve) -> None:
    with FakeUpstream(slow(0.3)) as up:
        _, port = await serve(up)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        qs = queries(20, "eof")
        writer.write(framed(qs))
        writer.write_eof()
        answers = await read_all(reader, 20, 3.0)
        assert await reader.read() == b""          # then the server closes
        writer.close()
    assert sorted(a.id for a in answers) == sorted(q.id for q in qs)
    assert all(a.rcode() == dns.rcode.NOERROR and a.answer for a in answers)


async def test_pipeline_limit_counts_forwarded_misses(serve: Serve) -> None:
    with FakeUpstream(slow(0.5)) as up:
        tcp, port = await serve(up)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        qs = queries(3 * PIPELINE_MAX, "pipe")
        writer.write(framed(qs))
        await asyncio.sleep(0.25)
        assert len(tcp.resolver.fetches) <= PIPELINE_MAX
        assert len(up.queries()) <= PIPELINE_MAX
        answers = await read_all(reader, len(qs), 5.0)
        writer.close()
    assert sorted(a.id for a in answers) == sorted(q.id for q in qs)


async def test_connection_with_pending_misses_is_not_evicted_as_idle(serve: Serve) -> None:
    with FakeUpstream(slow(0.8)) as up:
        _, port = await serve(up, tcp_max_connections=2)
        busy_r, busy_w = await asyncio.open_connection("127.0.0.1", port)
        q = queries(1, "busy")
        busy_w.write(framed(q))
        await asyncio.sleep(0.1)
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.1)
        new_r, new_w = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(idle_r.read(), 1.0) == b""     # the idle one went
        answers = await read_all(busy_r, 1, 2.0)
        assert [a.id for a in answers] == [q[0].id]
        q2 = queries(1, "new")
        new_w.write(framed(q2))
        assert [a.id for a in await read_all(new_r, 1, 2.0)] == [q2[0].id]
        for w in (busy_w, idle_w, new_w):
            w.close()
