"""End to end: the in-process daemon on loopback, a real DHT testnet, real clients.

Clients are dig, kdig (subprocesses, so the daemon keeps running on this event loop) and
dnspython's asyncio API. ICANN side and the delegated zone: a real knotd on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from pkdns.app import Daemon
from pkdns.config import Config, DhtConfig, DnsConfig, HttpConfig, PkarrConfig
from pkdns.dht.testnet import Testnet
from pkdns.pkarr.signed_packet import SignedPacket
from tests.support.knot import knot_server
from tests.support.pkarr_factory import TS, keypair, packet
from tests.support.pkarr_fakes import item_of
from tests.support.upstream import FakeUpstream, a_record

DIG, KDIG = shutil.which("dig") or "dig", shutil.which("kdig") or "kdig"
KP = keypair(101)
Z = KP.public_key.z32
ICANN_ZONE = """$ORIGIN example.test.
$TTL 300
@ SOA ns.example.test. host.example.test. 1 3600 600 86400 60
@ NS ns.example.test.
ns A 127.0.0.1
web A 192.0.2.10
"""


def sub_zone(z: str) -> str:
    return (f"$ORIGIN sub.{z}.\n$TTL 300\n@ SOA ns host 1 3600 600 86400 60\n@ NS ns\n"
            "ns A 127.0.0.1\nwww A 192.0.2.99\n")


def config(tmp: Path, bootstrap: list[tuple[str, int]], upstream: tuple[str, int],
           **pkarr: Any) -> Config:
    return Config(
        state_dir=str(tmp / "state"),
        dns=DnsConfig(listen=(("127.0.0.1", 0),), upstream=(upstream,), rate_limit=0),
        dht=DhtConfig(port=0, bind="127.0.0.1", bootstrap=tuple(bootstrap), request_timeout=0.5),
        http=HttpConfig(enabled=False),
        pkarr=dataclasses.replace(PkarrConfig(), **pkarr),
    )


@contextlib.asynccontextmanager
async def daemon(cfg: Config, ns_port: int = 53) -> AsyncIterator[Daemon]:
    d = Daemon(cfg)
    d.pkarr.handler.ns_port = ns_port
    await d.start()
    try:
        await asyncio.wait_for(d.pkarr.bootstrapped.wait(), 10)
        yield d
    finally:
        await d.stop()


@pytest.fixture
def knot(tmp_path: Path) -> Any:
    with knot_server(tmp_path, {"example.test.": ICANN_ZONE, f"sub.{Z}.": sub_zone(Z)}) as k:
        yield k


async def publish(net: Testnet, p: SignedPacket) -> None:
    result = await net.nodes[-1].put_mutable(item_of(p))
    assert result.stored > 0


async def run(*cmd: str) -> str:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    return out.decode()


def port_of(d: Daemon) -> int:
    return d.dns.bound[0][1]


async def query(d: Daemon, name: str, qtype: str = "A") -> dns.message.Message:
    return await dns.asyncquery.udp(dns.message.make_query(name, qtype), "127.0.0.1",
                                    port=port_of(d), timeout=5)


async def test_key_found_with_dig_kdig_and_dnspython(tmp_path: Path, testnet: Testnet,
                                                     knot: Any) -> None:
    await publish(testnet, packet(KP, ["@ 300 IN A 192.0.2.1", f"www 300 IN CNAME {Z}.",
                                       f"sub 300 IN NS ns.sub.{Z}.", "ns.sub 300 IN A 127.0.0.1",
                                       "web 300 IN CNAME web.example.test.",
                                       '_t 300 IN TXT "hello pkarr"']))
    # the delegated server is on loopback: allowed for this key (rebinding filter)
    cfg = config(tmp_path, testnet.bootstrap, (knot.host, knot.port), rebind_allow=(Z,))
    async with daemon(cfg, ns_port=knot.port) as d:
        p = str(port_of(d))
        dig = await run(DIG, "@127.0.0.1", "-p", p, f"www.{Z}.key", "A", "+tries=1", "+time=3")
        # the handler sets AA, but the front end's wire cache clears AA on every answer it
        # stores (cache.py); RD echoed and RA set survive
        assert "status: NOERROR" in dig and "flags: qr rd ra;" in dig, dig
        assert f"www.{Z}.key. 300 IN CNAME {Z}.key." in " ".join(dig.split())
        assert f"{Z}.key. 300 IN A 192.0.2.1" in " ".join(dig.split())
        kdig = await run(KDIG, f"@127.0.0.1:{p}", f"_t.{Z.upper()}", "TXT", "+retry=0")
        assert "NOERROR" in kdig and "hello pkarr" in kdig
        resp = await query(d, f"WeB.{Z}.KeY")  # 0x20 + CNAME to ICANN (knot)
        assert [r.to_text().split()[-1] for r in resp.answer] == ["web.example.test.",
                                                                  "192.0.2.10"]
        deleg = await query(d, f"www.sub.{Z}.key")  # NS delegation to knot
        assert deleg.rcode() == dns.rcode.NOERROR
        assert deleg.answer[0].to_text() == f"www.sub.{Z}.key. 300 IN A 192.0.2.99"
        tcp = await run(DIG, "@127.0.0.1", "-p", p, Z, "A", "+tcp", "+short")
        assert tcp.strip() == "192.0.2.1"


async def test_key_absent_is_nxdomain_with_soa(tmp_path: Path, testnet: Testnet) -> None:
    missing = keypair(102).public_key.z32
    cfg = config(tmp_path, testnet.bootstrap, ("127.0.0.1", 9))
    async with daemon(cfg) as d:
        out = await run(DIG, "@127.0.0.1", "-p", str(port_of(d)), f"www.{missing}.key", "A",
                        "+tries=1", "+time=3")
        assert "status: NXDOMAIN" in out
        assert f"{missing}.key. 60 IN SOA {missing}.key." in " ".join(out.split()), out
        bad = await query(d, "c1bkg8tfsyy8wcedtmw4fwhdmm7bbzhgg3z58tf43m5ow8w9mbus")
        assert bad.rcode() == dns.rcode.NXDOMAIN


async def test_names_under_the_suffix_that_are_not_keys_never_go_upstream(
        tmp_path: Path, testnet: Testnet) -> None:
    """``garbage.key`` and a 51-character label + ``.key`` are NXDOMAIN from pkdns itself:
    forwarding them would tell the ICANN resolver what the user typed, for nothing."""
    with FakeUpstream(a_record("192.0.2.55")) as up:
        cfg = config(tmp_path, testnet.bootstrap, ("127.0.0.1", up.port))
        async with daemon(cfg) as d:
            for name in ("garbage.key", f"{Z[:-1]}.key", "www.garbage.KEY.", "a.b.c.key"):
                for qtype in ("A", "AAAA"):
                    reply = await query(d, name, qtype)
                    assert reply.rcode() == dns.rcode.NXDOMAIN, (name, reply)
            ok = await query(d, "web.example.test")
            assert ok.rcode() == dns.rcode.NOERROR and ok.answer
        asked = [str(s.message.question[0].name).lower() for s in up.queries()]
        assert asked == ["web.example.test."], asked


async def test_dht_unreachable_is_servfail_within_3s(tmp_path: Path) -> None:
    net = await Testnet.start(4)
    cfg = config(tmp_path, net.bootstrap, ("127.0.0.1", 9), lookup_timeout=2.5)
    async with daemon(cfg) as d:
        await net.close()  # every known node is now dead
        loop = asyncio.get_running_loop()
        start = loop.time()
        out = await run(KDIG, f"@127.0.0.1:{port_of(d)}", Z, "A", "+retry=0", "+timeout=5")
        assert "SERVFAIL" in out
        assert loop.time() - start < 3.0


async def test_1000_concurrent_queries_for_a_cold_key_make_one_lookup(
        tmp_path: Path, testnet: Testnet) -> None:
    await publish(testnet, packet(KP, ["@ 300 IN A 192.0.2.7"]))
    cfg = config(tmp_path, testnet.bootstrap, ("127.0.0.1", 9))
    async with daemon(cfg) as d:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.connect(("127.0.0.1", port_of(d)))
        loop = asyncio.get_running_loop()
        try:
            for i in range(1000):
                q = dns.message.make_query(f"x{i % 10}.{Z}" if i % 2 else Z, "A")
                q.id = i
                await loop.sock_sendall(sock, q.to_wire())
            rcodes: dict[int, dns.rcode.Rcode] = {}
            while len(rcodes) < 1000:
                data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
                msg = dns.message.from_wire(data)
                rcodes[msg.id] = msg.rcode()
        finally:
            sock.close()
        # the apex has an A record; x0..x9 do not exist in the packet
        assert {rcodes[i] for i in range(0, 1000, 2)} == {dns.rcode.NOERROR}
        assert {rcodes[i] for i in range(1, 1000, 2)} == {dns.rcode.NXDOMAIN}
        assert d.pkarr.source.lookups_started == 1


@pytest.mark.slow
async def test_newer_packet_is_picked_up_after_the_ttl(tmp_path: Path, testnet: Testnet) -> None:
    await publish(testnet, packet(KP, ["@ 2 IN A 192.0.2.1"], ts=TS))
    cfg = config(tmp_path, testnet.bootstrap, ("127.0.0.1", 9), min_ttl=1, negative_ttl=1)
    async with daemon(cfg) as d:
        first = await query(d, Z)
        assert first.answer[0].to_text().endswith("A 192.0.2.1")
        await publish(testnet, packet(KP, ["@ 2 IN A 192.0.2.2"], ts=TS + 1_000_000))
        assert (await query(d, Z)).answer[0].to_text().endswith("A 192.0.2.1")  # still fresh
        seen = []
        for _ in range(40):
            await asyncio.sleep(0.25)
            seen.append((await query(d, Z)).answer[0].to_text().split()[-1])
            if seen[-1] == "192.0.2.2":
                break
        assert seen[-1] == "192.0.2.2"
        assert len(seen) >= 6  # not before the 2 s TTL ran out (0.25 s per poll)
