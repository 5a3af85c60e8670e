"""The resolver's ACL (``dns.allow``) and per-client rate limit apply to DoH clients too.

A refused DoH client gets HTTP 200 carrying a DNS REFUSED reply, not an HTTP error: RFC 8484
§4.2.1 says a 2xx status is used for any valid DNS response regardless of its RCODE, and the
client is the one the HTTP face sees (the TCP peer, or the ``X-Forwarded-For`` entry a trusted
proxy added; :func:`pkdns.server.http.client_ip`). The daemon runs in-process with a fake
upstream; its DHT node has no bootstrap (ICANN names only).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import aiohttp
import dns.message
import dns.rcode
import pytest

from pkdns.app import Daemon
from pkdns.config import DEFAULT_ALLOW, Config, DhtConfig, DnsConfig, HttpConfig
from pkdns.server.doh import CONTENT_TYPE
from tests.support.upstream import FakeUpstream, a_record

Run = Callable[..., AbstractAsyncContextManager[str]]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """``run(allow=..., rate=(rate, burst), trusted=...)``: a daemon; its DoH URL."""

    @asynccontextmanager
    async def start(allow: tuple[str, ...] = DEFAULT_ALLOW, rate: tuple[float, float] = (0, 1),
                    trusted: tuple[str, ...] = ()) -> AsyncIterator[str]:
        with FakeUpstream(a_record("192.0.2.8")) as up:
            cfg = Config(
                state_dir=str(tmp_path),
                dns=DnsConfig(listen=(("127.0.0.1", 0),), upstream=((up.host, up.port),),
                              allow=allow, rate_limit=rate[0], rate_limit_burst=rate[1],
                              forwarders=()),           # the clients here are on loopback
                http=HttpConfig(listen=(("127.0.0.1", 0),), trusted_proxies=trusted),
                dht=DhtConfig(port=0, bind="127.0.0.1", bootstrap=()))
            daemon = Daemon(cfg)
            await daemon.start()
            try:
                assert daemon.http is not None
                host, port = daemon.http.addresses[0]
                yield f"http://{host}:{port}/dns-query"
            finally:
                await daemon.stop()

    return start


async def _ask(url: str, name: str, headers: dict[str, str] | None = None
               ) -> tuple[int, dns.message.Message]:
    query = dns.message.make_query(name, "A")
    async with aiohttp.ClientSession() as s, s.post(
            url, data=query.to_wire(), headers={"Content-Type": CONTENT_TYPE, **(headers or {})}
    ) as r:
        body = await r.read()
    return r.status, dns.message.from_wire(body)


async def test_client_outside_the_acl_is_refused(run: Run) -> None:
    async with run(allow=("127.0.0.2/32",)) as url:
        status, reply = await _ask(url, "acl.example.")
    assert status == 200 and reply.rcode() == dns.rcode.REFUSED and not reply.answer


async def test_forwarded_client_outside_the_acl_is_refused(run: Run) -> None:
    """Behind a trusted proxy (127.0.0.1) the ACL judges the forwarded address."""
    async with run(trusted=("127.0.0.1/32",)) as url:
        status, reply = await _ask(url, "fwd.example.", {"X-Forwarded-For": "203.0.113.9"})
        assert status == 200 and reply.rcode() == dns.rcode.REFUSED
        status, reply = await _ask(url, "fwd.example.", {"X-Forwarded-For": "10.1.2.3"})
        assert status == 200 and reply.rcode() == dns.rcode.NOERROR
        assert reply.answer[0][0].to_text() == "192.0.2.8"


async def test_client_over_the_rate_limit_is_refused(run: Run) -> None:
    async with run(rate=(0.01, 2.0), trusted=("127.0.0.1/32",)) as url:
        rcodes = [(await _ask(url, f"n{i}.rate.example."))[1].rcode() for i in range(4)]
        assert rcodes[:2] == [dns.rcode.NOERROR] * 2
        assert rcodes[2:] == [dns.rcode.REFUSED] * 2
        # another client (forwarded by the trusted proxy) has its own bucket
        status, reply = await _ask(url, "other.rate.example.", {"X-Forwarded-For": "10.9.9.9"})
        assert status == 200 and reply.rcode() == dns.rcode.NOERROR
