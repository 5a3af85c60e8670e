"""The installed daemon stopped by SIGTERM while queries wait on a slow upstream: UDP, TCP and
DoH queries that share one upstream fetch are all answered, a reload that shortened
``dns.query_deadline`` (so the DNS listeners' grace runs out first) does not cut a DoH query
off the fetch it shares, a DoH query gets the whole ``dns.query_deadline``, and every
transport stops taking queries at once. Every stop exits 0 with no error in the log (no
cancelled task, no traceback)."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from pkdns.server.doh import CONTENT_TYPE
from tests.support.daemonproc import Proc, pkdns
from tests.support.upstream import Delayed, FakeUpstream, Reply, answer

pytestmark = pytest.mark.slow
FRESH, STALE = "192.0.2.20", "192.0.2.10"


def first_fast_then(seconds: float) -> Callable[[bytes, str], Reply]:
    """Each name's first question answered at once with STALE (TTL 1), the later ones with
    FRESH (TTL 300) after ``seconds``."""
    asked: set[str] = set()
    lock = threading.Lock()

    def handle(data: bytes, _t: str) -> Reply:
        name = str(dns.message.from_wire(data).question[0].name).lower()
        with lock:
            first = name not in asked
            asked.add(name)
        if first:
            return answer(data, f"{name} 1 IN A {STALE}")
        return Delayed(answer(data, f"{name} 300 IN A {FRESH}"), seconds)

    return handle


def config(path: Path, upstream: str, deadline: float = 3.0) -> Path:
    path.write_text(
        f"[dns]\nlisten = ['127.0.0.1:0']\nupstream = ['{upstream}']\nrate_limit = 0.0\n"
        f"query_deadline = {deadline}\nupstream_timeout = {deadline}\n"
        "[http]\nlisten = ['127.0.0.1:0']\n"
        "[dht]\nport = 0\nbind = '127.0.0.1'\nbootstrap = ['127.0.0.1:1']\n"
        "request_timeout = 0.5\n")
    return path


async def doh(d: Proc, name: str) -> dns.message.Message:
    event = await d.wait_for("http_listening")
    return await doh_at(f"http://{event['addresses'][0]}/dns-query", name)


async def doh_at(url: str, name: str) -> dns.message.Message:
    q = dns.message.make_query(name, "A")
    async with aiohttp.ClientSession() as s, s.post(
            url, data=q.to_wire(), headers={"Content-Type": CONTENT_TYPE},
            timeout=aiohttp.ClientTimeout(total=8)) as r:
        assert r.status == 200
        return dns.message.from_wire(await r.read())


def slow_upstream(seconds: float) -> Callable[[bytes, str], Reply]:
    """Every question answered with FRESH after ``seconds`` (UDP, not blocking)."""
    def handle(data: bytes, _t: str) -> Reply:
        name = dns.message.from_wire(data).question[0].name
        return Delayed(answer(data, f"{name} 300 IN A {FRESH}"), seconds)
    return handle


def address(reply: dns.message.Message) -> str:
    assert reply.rcode() == dns.rcode.NOERROR, reply
    return str(reply.answer[0][0])


async def stale(d: Proc, name: str) -> None:
    """Cache ``name`` with TTL 1 and let it expire: the next queries refresh it (RFC 8767)."""
    assert address(await d.query(name)) == STALE
    await asyncio.sleep(1.1)


def assert_clean_stop(d: Proc, code: int) -> None:
    assert code == 0
    assert d.events("stopped")
    bad = [e for e in d.events() if e.get("level") in ("error", "critical")]
    assert not bad and "Traceback" not in d.text() and "CancelledError" not in d.text(), bad


async def test_sigterm_answers_udp_tcp_and_doh_sharing_one_slow_fetch(tmp_path: Path) -> None:
    with FakeUpstream(first_fast_then(0.8)) as up:
        conf = config(tmp_path / "pkdns.toml", up.addr)
        async with pkdns(tmp_path, "--config", str(conf), "--state-dir",
                         str(tmp_path / "state")) as d:
            await stale(d, "shared.test")
            asked = [asyncio.create_task(d.query("shared.test")),
                     asyncio.create_task(d.query("shared.test", tcp=True)),
                     asyncio.create_task(doh(d, "shared.test"))]
            await asyncio.sleep(0.2)
            d.signal(signal.SIGTERM)
            replies = await asyncio.gather(*asked)
            assert [address(r) for r in replies] == [FRESH] * 3
            assert_clean_stop(d, await d.stop())


async def test_a_reload_shortening_the_deadline_does_not_cut_doh_off_a_shared_fetch(
        tmp_path: Path) -> None:
    """The fetch started under a 3 s deadline; a reload then lowers it to 0.5 s, the DNS
    listeners' grace. Their drain runs out while the fetch goes on: the DoH query waiting on
    it still gets the answer (it used to be cancelled with the fetch, and cut off)."""
    with FakeUpstream(first_fast_then(1.2)) as up:
        conf = config(tmp_path / "pkdns.toml", up.addr)
        async with pkdns(tmp_path, "--config", str(conf), "--state-dir",
                         str(tmp_path / "state")) as d:
            await stale(d, "shared.test")
            asked = asyncio.create_task(doh(d, "shared.test"))
            await asyncio.sleep(0.1)
            config(conf, up.addr, deadline=0.5)
            d.signal(signal.SIGHUP)
            await d.wait_for("reloaded")
            d.signal(signal.SIGTERM)
            assert address(await asked) == FRESH
            assert_clean_stop(d, await d.stop())


async def test_sigterm_gives_a_doh_query_the_whole_query_deadline(tmp_path: Path) -> None:
    """With ``dns.query_deadline = 5``, a DoH miss whose upstream answers 4.6 s later is
    answered, although no UDP or TCP query keeps the daemon draining that long (the HTTP face
    used to give requests in progress a fixed 2 s, twice: cut off at 4 s)."""
    with FakeUpstream(slow_upstream(4.6)) as up:
        conf = config(tmp_path / "pkdns.toml", up.addr, deadline=5.0)
        async with pkdns(tmp_path, "--config", str(conf), "--state-dir",
                         str(tmp_path / "state")) as d:
            asked = asyncio.create_task(doh(d, "slow.test"))
            await asyncio.sleep(0.3)
            assert up.queries()
            d.signal(signal.SIGTERM)
            assert address(await asked) == FRESH
            assert_clean_stop(d, await d.stop())


async def test_sigterm_stops_every_transport_taking_queries_at_once(tmp_path: Path) -> None:
    """While the UDP listener drains a query in flight, the HTTP face takes no new DoH query
    either (connection refused: the client can turn to another server at once); it used to
    serve DoH until the DNS listeners had drained."""
    with FakeUpstream(slow_upstream(1.5)) as up:
        conf = config(tmp_path / "pkdns.toml", up.addr)
        async with pkdns(tmp_path, "--config", str(conf), "--state-dir",
                         str(tmp_path / "state")) as d:
            event = await d.wait_for("http_listening")
            url = f"http://{event['addresses'][0]}/dns-query"
            in_flight = asyncio.create_task(d.query("udp.test"))
            await asyncio.sleep(0.2)
            d.signal(signal.SIGTERM)
            await d.wait_for("stopping")
            await asyncio.sleep(0.2)
            with pytest.raises(aiohttp.ClientConnectorError):
                await doh_at(url, "late.test")
            assert address(await in_flight) == FRESH
            assert_clean_stop(d, await d.stop())
