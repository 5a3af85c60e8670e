"""Every common qtype is forwarded and answered, over UDP and over the TCP retry after TC=1.

The bug this guards against: the reply check lowercased the qtype bytes along with the qname,
so every type whose bytes are ASCII capitals (HTTPS = 0x0041, type 90 = 0x005A, 0x4141, ...)
had all replies rejected as "unwanted" and ended in SERVFAIL at the deadline.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from pkdns.clock import SYSTEM_CLOCK
from pkdns.config import CacheConfig, Config, DnsConfig
from pkdns.dns import wire
from pkdns.dns.actions import matches
from pkdns.dns.cache import WireCache
from pkdns.dns.door import Port
from pkdns.dns.forwarder import Forwarder
from pkdns.dns.resolver import ClientInfo, Resolver
from pkdns.metrics import Metrics
from tests.support.blackbox import dig
from tests.support.daemon import Daemon, run_daemon
from tests.support.knot import Knot, knot_server
from tests.support.upstream import FakeUpstream, Reply, answer

RDATA = {
    "A": "192.0.2.1",
    "AAAA": "2001:db8::1",
    "TXT": '"hello"',
    "MX": "10 mx.example.test.",
    "NS": "ns.example.test.",
    "SRV": "0 5 443 srv.example.test.",
    "CAA": '0 issue "ca.example.net"',
    "PTR": "ptr.example.test.",
    "SOA": "ns.example.test. host.example.test. 1 3600 600 86400 60",
    "HTTPS": '1 . alpn="h2"',
    "SVCB": '1 svc.example.test. port="8443"',
    "TYPE90": r"\# 4 01020304",
    "TYPE16705": r"\# 2 abcd",              # 0x4141: both bytes are "A"
}
TYPES = list(RDATA)


def _code(rdtype: str) -> int:
    return int(dns.rdatatype.from_text(rdtype))


def test_matches_compares_qtype_and_qclass_exactly() -> None:
    for rdtype in TYPES:
        q = dns.message.make_query("WwW.Example.test", rdtype)
        q.id = 0x1234
        reply = answer(q.to_wire(), rcode=0)
        question = wire.name_wire("www.example.test") + _code(rdtype).to_bytes(2, "big") \
            + b"\x00\x01"
        assert matches(reply, 0x1234, question), rdtype
    https = wire.name_wire("a.test") + b"\x00\x41\x00\x01"
    q = dns.message.make_query("a.test", dns.rdatatype.RdataType.make(0x61))   # 97, not 65
    q.id = 7
    assert not matches(answer(q.to_wire()), 7, https)


def _fake(data: bytes, transport: str, tc: bool) -> Reply:
    q = dns.message.from_wire(data).question[0]
    if tc and transport == "udp":
        return answer(data, tc=True)
    rdtype = dns.rdatatype.to_text(q.rdtype)
    return answer(data, f"{q.name} 300 IN {rdtype} {RDATA[rdtype]}")


@pytest.fixture(params=["udp", "tcp_after_tc"])
def upstream(request: pytest.FixtureRequest) -> Iterator[FakeUpstream]:
    tc = request.param == "tcp_after_tc"
    with FakeUpstream(lambda data, transport: _fake(data, transport, tc)) as up:
        yield up


def _resolver(up: FakeUpstream) -> Resolver:
    dns_cfg = DnsConfig(upstream=((up.host, up.port),), upstream_timeout=0.3,
                        query_deadline=1.0, rate_limit=0.0)
    cfg = Config(dns=dns_cfg, cache=CacheConfig())
    metrics = Metrics()
    fwd = Forwarder(dns_cfg.upstream, dns_cfg.upstream_timeout, metrics)
    return Resolver(cfg, WireCache(cfg.cache), fwd, SYSTEM_CLOCK, metrics)


async def test_forwarder_every_qtype(upstream: FakeUpstream) -> None:
    fwd = Forwarder(((upstream.host, upstream.port),), 0.3)
    for rdtype in TYPES:
        question = wire.name_wire("t.example.test") + _code(rdtype).to_bytes(2, "big") \
            + b"\x00\x01"
        reply = dns.message.from_wire(
            await fwd.exchange(question, False, False, 1.0))
        assert reply.answer and reply.answer[0].rdtype == _code(rdtype), rdtype


async def test_resolver_every_qtype_udp_and_tcp_clients(upstream: FakeUpstream) -> None:
    r = _resolver(upstream)
    for rdtype in TYPES:
        for transport in ("udp", "tcp"):
            q = dns.message.make_query(f"{transport}.Example.test", rdtype)
            out = await r.resolve(q.to_wire(), ClientInfo("127.0.0.1", transport), 1232)
            assert out is not None
            reply = dns.message.from_wire(out)
            assert reply.rcode() == dns.rcode.NOERROR, (rdtype, transport)
            assert reply.answer[0].rdtype == _code(rdtype)


async def test_callback_miss_path_every_qtype(upstream: FakeUpstream) -> None:
    """The door's miss path without a coroutine: the answer comes through ``port.send``."""
    r = _resolver(upstream)
    for rdtype in TYPES:
        q = dns.message.make_query("fast.example.test", rdtype).to_wire()
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        port = Port("udp", 1232, lambda reply, dest: dest.set_result(reply), lambda job: False)
        assert r.handle(q, "127.0.0.1", port, fut) is None and port.held == 1
        reply = dns.message.from_wire(await asyncio.wait_for(fut, 2.0))
        assert reply.rcode() == dns.rcode.NOERROR and reply.answer, rdtype
        assert port.held == 0


async def test_resolve_icann_every_qtype(upstream: FakeUpstream) -> None:
    """The pkarr side's CNAME-to-ICANN lookups use this path."""
    r = _resolver(upstream)
    for rdtype in TYPES:
        rec = await r.icann.resolve("Target.Example.test", _code(rdtype))
        assert rec.header.rcode == 0 and rec.rr and rec.rr[0].rtype == _code(rdtype), rdtype


async def test_query_server_every_qtype(upstream: FakeUpstream) -> None:
    fwd = Forwarder(((upstream.host, upstream.port),), 0.3)
    for rdtype in TYPES:
        packet = dns.message.make_query("Ns.Example.test", rdtype).to_wire()
        reply = dns.message.from_wire(
            await fwd.query_server((upstream.host, upstream.port), packet, 1.0))
        assert reply.answer and reply.answer[0].rdtype == _code(rdtype), rdtype


# ------------------------------------------------------------------ knotd + dig, black-box

def _many(rdtype: str, i: int) -> str:
    """The i-th of many distinct records of ``rdtype`` (an RRset too big for 1232 bytes)."""
    return {
        "A": f"10.0.{i // 250}.{i % 250 + 1}",
        "AAAA": f"2001:db8::{i + 1:x}",
        "TXT": f'"{i:03d}{"x" * 60}"',
        "MX": f"{i} mx-{i}.types.test.",
        "NS": f"ns-{i}.types.test.",
        "SRV": f"0 5 {1000 + i} srv-{i}.types.test.",
        "CAA": f'0 issue "ca-{i:03d}.example.net"',
        "PTR": f"ptr-{i}.types.test.",
        "HTTPS": f'{i + 1} svc-{i}.types.test. alpn="h2"',
        "SVCB": f'{i + 1} svc-{i}.types.test. port="{1000 + i}"',
        "TYPE90": rf"\# 40 {i:02x}" + "ab" * 39,
        "TYPE16705": rf"\# 40 {i:02x}" + "cd" * 39,
    }[rdtype]


BIG = 90          # records per big RRset: every type's answer exceeds 1232 bytes
BIG_TYPES = [t for t in TYPES if t != "SOA"]      # one SOA per zone; it always fits


def _zone(origin: str, ns: list[str]) -> str:
    lines = [f"$ORIGIN {origin}", "$TTL 300",
             "@ IN SOA ns.example.test. host.example.test. 1 3600 600 86400 60"]
    lines += [f"@ IN NS {n}" for n in ns]
    for rdtype in TYPES:
        if rdtype not in ("SOA", "NS"):
            lines.append(f"small IN {rdtype} {RDATA[rdtype]}")
            lines += [f"big IN {rdtype} {_many(rdtype, i)}" for i in range(BIG)]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Knot]:
    zones = {"types.test.": _zone("types.test.", ["ns.example.test."]),
             "bigns.test.": _zone("bigns.test.", [_many("NS", i) for i in range(BIG)])}
    with knot_server(tmp_path_factory.mktemp("knot-types"), zones) as k:
        yield k


@pytest.fixture(scope="module")
def daemon(knot: Knot, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with run_daemon(tmp_path_factory.mktemp("pkdns-types"), upstreams=(knot.addr,),
                    config="[dns]\nrate_limit = 0.0\n") as d:
        yield d


def _dig_count(port: int, name: str, rdtype: str, *flags: str) -> tuple[str, int, Any]:
    out = dig(port, *flags, name, rdtype)
    status = re.search(r"status: (\w+)", out)
    count = re.search(r"ANSWER: (\d+),", out)
    return (status.group(1) if status else "none", int(count.group(1)) if count else -1, out)


@pytest.mark.slow
@pytest.mark.parametrize("rdtype", TYPES)
def test_dig_through_knot_every_qtype_udp(daemon: Daemon, rdtype: str) -> None:
    name = {"SOA": "types.test", "NS": "types.test"}.get(rdtype, "small.types.test")
    status, count, out = _dig_count(daemon.port, name, rdtype)
    assert (status, count) == ("NOERROR", 1), out


@pytest.mark.slow
@pytest.mark.parametrize("rdtype", BIG_TYPES)
def test_dig_through_knot_every_qtype_tcp_fallback(daemon: Daemon, knot: Knot,
                                                   rdtype: str) -> None:
    """knotd truncates these answers at our 1232-byte EDNS size: pkdns retries over TCP."""
    name = "bigns.test" if rdtype == "NS" else "big.types.test"
    direct = dig(knot.port, "+notcp", "+ignore", "+bufsize=1232", name, rdtype)
    assert "flags: qr aa tc" in direct, direct          # the upstream really truncates
    status, count, out = _dig_count(daemon.port, name, rdtype, "+tcp")
    assert (status, count) == ("NOERROR", BIG), out
    status, count, out = _dig_count(daemon.port, name, rdtype)    # UDP client: TC, then TCP
    assert (status, count) == ("NOERROR", BIG) and "Truncated, retrying in TCP" in out, out
