"""The real daemon as a service: sd_notify, SIGHUP reload (cache kept), SIGTERM drain, restart
from the state dir with the DHT gone, zones published to a loopback testnet, socket activation."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import dns.rcode
import pytest
from aiohttp import web

from pkdns.dht.node import DhtNode
from pkdns.dht.testnet import Testnet
from pkdns.pkarr.client import to_item
from pkdns.pkarr.signed_packet import SignedPacket
from tests.support import pkarr_factory as pf
from tests.support.daemonproc import pkdns
from tests.support.knot import free_port
from tests.support.upstream import FakeUpstream, Reply, a_record, answer

pytestmark = pytest.mark.slow

DEAD = "127.0.0.1:1"   # a DHT bootstrap address nobody answers on (loopback, refused)


def _config(path: Path, upstream: str, *, level: str = "info", extra: str = "",
            bootstrap: str = DEAD) -> Path:
    path.write_text(
        f"[log]\nlevel = '{level}'\n"
        f"[dns]\nlisten = ['127.0.0.1:0']\nupstream = ['{upstream}']\nrate_limit = 0.0\n"
        f"[http]\nenabled = false\n"
        f"[dht]\nport = 0\nbind = '127.0.0.1'\nbootstrap = ['{bootstrap}']\n"
        f"request_timeout = 0.5\n" + extra)
    return path


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


async def _messages(sock: socket.socket, until: str, timeout: float = 10.0) -> list[str]:
    """sd_notify datagrams until one contains ``until``."""
    loop, out = asyncio.get_running_loop(), []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 0.5)
        except TimeoutError:
            continue
        out.append(data.decode())
        if until in out[-1]:
            return out
    raise AssertionError(f"no {until} in {out}")


def _ip(reply: dns.message.Message) -> str:
    return str(reply.answer[0][0])


async def test_notify_reload_keeps_cache_and_sigterm_drains(tmp_path: Path,
                                                            notify: socket.socket) -> None:
    def slow(data: bytes, _t: str) -> Reply:
        time.sleep(0.8)
        return answer(data, "slow.test. 300 IN A 192.0.2.3")

    with FakeUpstream(a_record("192.0.2.1")) as up_a, FakeUpstream(a_record("192.0.2.2")) as \
            up_b, FakeUpstream(slow) as up_slow:
        conf = _config(tmp_path / "pkdns.toml", up_a.addr)
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify")}
        async with pkdns(tmp_path, "--config", str(conf), "--state-dir",
                         str(tmp_path / "state"), env=env) as d:
            ready = await _messages(notify, "READY=1")
            assert ready[-1] == f"READY=1\nSTATUS=serving DNS on 127.0.0.1:{d.port}"
            assert _ip(await d.query("a.test")) == "192.0.2.1"

            _config(conf, up_b.addr, level="debug")          # new upstream, debug log
            d.signal(signal.SIGHUP)
            reloaded = await d.wait_for("reloaded")
            assert reloaded["changed"] == ["dns.upstream", "log.level"]
            msgs = await _messages(notify, "READY=1")
            assert msgs[0].startswith("RELOADING=1\nMONOTONIC_USEC=")
            assert _ip(await d.query("a.test")) == "192.0.2.1"  # the cache survived
            assert _ip(await d.query("b.test")) == "192.0.2.2"  # the new upstream
            assert [s.message.question[0].name.to_text().lower() for s in up_b.seen] == ["b.test."]
            await d.wait_for("query", where=lambda e: e.get("qname") == "b.test")

            conf.write_text("[dns]\nlisten = 'oops'\n")          # a broken edit
            d.signal(signal.SIGHUP)
            failed = await d.wait_for("reload_failed")
            assert "pkdns.toml:2: dns.listen" in failed["error"]
            assert _ip(await d.query("c.test")) == "192.0.2.2"  # still serving, old config

            _config(conf, up_slow.addr, extra="")
            d.signal(signal.SIGHUP)
            await d.wait_for("reloaded", count=2)
            in_flight = asyncio.create_task(d.query("slow.test"))
            for _ in range(200):                                # until the daemon is asking
                if up_slow.seen:                                # (its upstream answers 0.8 s
                    break                                       # later)
                await asyncio.sleep(0.02)
            assert up_slow.seen, "the query never reached the upstream"
            d.signal(signal.SIGTERM)                            # drain: the answer still comes
            assert _ip(await in_flight) == "192.0.2.3"
            assert await d.stop() == 0
            assert "STOPPING=1" in (await _messages(notify, "STOPPING=1"))[-1]
            await d.wait_for("stopped")
            assert (tmp_path / "state" / "state.sqlite3").exists()


async def test_restart_answers_a_known_key_with_the_dht_gone(tmp_path: Path) -> None:
    net = await Testnet.start(6)
    kp = pf.keypair(41)
    p = pf.packet(kp, ["@ 60 IN A 192.0.2.41"], ts=int(time.time() * 1e6))
    with FakeUpstream(a_record()) as up:
        try:
            assert (await net.nodes[-1].put_mutable(to_item(p))).stored > 0
            boot = ", ".join(f"{h}:{port}" for h, port in net.bootstrap)
            conf = _config(tmp_path / "one.toml", up.addr, bootstrap=boot.split(", ")[0])
            async with pkdns(tmp_path, "--config", str(conf), "--state-dir",
                             str(tmp_path / "state")) as first:
                await first.wait_for("dht_bootstrapped", timeout=15)
                reply = await first.query(kp.public_key.z32)
                assert reply.rcode() == dns.rcode.NOERROR and _ip(reply) == "192.0.2.41"
                assert await first.stop() == 0
        finally:
            await net.close()                                   # the DHT is gone
        # A DHT lookup would now run 30 s, past the client's 5 s: an answer at all means the
        # saved packet answered at once, not a lookup (no wall-clock bound to overrun).
        conf = _config(tmp_path / "two.toml", up.addr, bootstrap=boot.split(", ")[0],
                       extra="[pkarr]\nlookup_timeout = 30.0\n")
        async with pkdns(tmp_path, "--config", str(conf), "--state-dir",
                         str(tmp_path / "state")) as second:
            loaded = await second.wait_for("state_loaded")
            assert loaded["packets"] == 1 and loaded["nodes"] >= 1
            reply = await second.query(kp.public_key.z32)
            assert reply.rcode() == dns.rcode.NOERROR and _ip(reply) == "192.0.2.41"
            reply = await second.query(f"{kp.public_key.z32}.key")
            assert _ip(reply) == "192.0.2.41"


async def test_zone_published_to_a_testnet_and_again_on_sighup(tmp_path: Path,
                                                               testnet: Testnet) -> None:
    kp = pf.keypair(42)
    (tmp_path / "seed.txt").write_text(kp.seed.hex())
    (tmp_path / "seed.txt").chmod(0o600)
    (tmp_path / "pkarr.zone").write_text("@ IN A 192.0.2.42\n")
    zones = "[[zones]]\nseed = 'seed.txt'\nzone = 'pkarr.zone'\ninterval = 3600\n"
    reader = DhtNode(mode="client", request_timeout=1.0)
    await reader.start("127.0.0.1", 0)
    await reader.bootstrap(testnet.bootstrap, timeout=5.0)

    async def published() -> SignedPacket:
        items = await reader.get_mutable(kp.public_key.raw, timeout=5.0).collect()
        best = max(items, key=lambda i: i.seq)
        return SignedPacket.from_bep44(best.k, best.seq, best.v, best.sig)

    with FakeUpstream(a_record()) as up:
        conf = _config(tmp_path / "pkdns.toml", up.addr, extra=zones,
                       bootstrap=f"{testnet.bootstrap[0][0]}:{testnet.bootstrap[0][1]}")
        try:
            async with pkdns(tmp_path, "--config", str(conf), "--state-dir",
                             str(tmp_path / "state"), "--http", "127.0.0.1:0") as d:
                event = await d.wait_for("zone_published", timeout=30)
                assert event["key"] == kp.public_key.z32 and event["stored"] >= 1
                http = (await d.wait_for("http_listening"))["addresses"][0]
                async with aiohttp.ClientSession() as s, \
                        s.get(f"http://{http}/api/dashboard") as r:
                    zone = (await r.json())["zones"][0]       # the dashboard's own-zones row
                assert zone["zone"] == str(tmp_path / "pkarr.zone") and zone["failures"] == 0
                assert zone["result"] == f"stored on {event['stored']} nodes"
                assert zone["last_ago"] <= 30 and 3500 <= zone["next_in"] <= 3600
                assert (await published()).records[0].rdata.toZone() == "192.0.2.42"
                assert _ip(await d.query(kp.public_key.z32)) == "192.0.2.42"  # own records
                (tmp_path / "pkarr.zone").write_text("@ IN A 192.0.2.43\nnew IN A 192.0.2.44\n")
                d.signal(signal.SIGHUP)
                await d.wait_for("zone_published", count=2, timeout=30)
                assert (await published()).records[0].rdata.toZone() == "192.0.2.43"
                # the packet cache has the new packet at once (answers already cached for
                # the old one keep their TTL, as in any DNS cache)
                assert _ip(await d.query(f"new.{kp.public_key.z32}")) == "192.0.2.44"
        finally:
            await reader.close()


async def test_dyndns_zone_follows_a_new_external_address(tmp_path: Path,
                                                          testnet: Testnet) -> None:
    """The daemon notices a new {external_ipv4} within ip_check_interval and republishes at
    once (the interval is an hour). Real daemon, real IP-echo server, real testnet."""
    current = {"ip": "198.51.100.21"}

    async def reply(request: web.Request) -> web.Response:
        return web.Response(text=current["ip"] + "\n")

    app = web.Application()
    app.router.add_get("/", reply)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    echo = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    kp = pf.keypair(43)
    (tmp_path / "seed.txt").write_text(kp.seed.hex())
    (tmp_path / "seed.txt").chmod(0o600)
    (tmp_path / "pkarr.zone").write_text("home 60 IN A {external_ipv4}\n")
    extra = (f"[republish]\nip_echo_v4 = ['{echo}']\nip_check_interval = 10\n"
             "[[zones]]\nseed = 'seed.txt'\nzone = 'pkarr.zone'\ninterval = 3600\n")
    reader = DhtNode(mode="client", request_timeout=1.0)
    await reader.start("127.0.0.1", 0)
    await reader.bootstrap(testnet.bootstrap, timeout=5.0)

    async def published() -> str:
        items = await reader.get_mutable(kp.public_key.raw, timeout=5.0).collect()
        best = max(items, key=lambda i: i.seq)
        packet = SignedPacket.from_bep44(best.k, best.seq, best.v, best.sig)
        return str(packet.records[0].rdata.toZone())

    with FakeUpstream(a_record()) as up:
        conf = _config(tmp_path / "pkdns.toml", up.addr, extra=extra,
                       bootstrap=f"{testnet.bootstrap[0][0]}:{testnet.bootstrap[0][1]}")
        try:
            async with pkdns(tmp_path, "--config", str(conf), "--state-dir",
                             str(tmp_path / "state")) as d:
                await d.wait_for("zone_published", timeout=30)
                assert await published() == "198.51.100.21"
                current["ip"] = "198.51.100.22"
                changed_at = time.monotonic()
                await d.wait_for("external_address_changed", timeout=25)
                await d.wait_for("zone_published", count=2, timeout=20)
                assert time.monotonic() - changed_at < 10 + 10   # one check interval + slack
                assert await published() == "198.51.100.22"
        finally:
            await reader.close()
            await runner.cleanup()


async def test_socket_activation(tmp_path: Path) -> None:
    port = free_port()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    udp.bind(("127.0.0.1", port))
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", port))
    tcp.listen()
    u, t = udp.fileno(), tcp.fileno()
    wrapper = ["bash", "-c", f'LISTEN_PID=$$ LISTEN_FDS=2 exec "$@" 3<&{u} 4<&{t} {u}<&- {t}<&-',
               "pkdns-activated"]
    try:
        with FakeUpstream(a_record("192.0.2.7")) as up:
            conf = _config(tmp_path / "pkdns.toml", up.addr)
            async with pkdns(tmp_path, "--config", str(conf), "--state-dir",
                             str(tmp_path / "state"), argv0=wrapper, pass_fds=(u, t)) as d:
                assert d.port == port        # the passed socket, not [dns] listen (port 0)
                assert _ip(await d.query("x.test")) == "192.0.2.7"
                assert _ip(await d.query("y.test", tcp=True)) == "192.0.2.7"
    finally:
        udp.close()
        tcp.close()
