"""A home router in front of pkdns: a real dnsmasq forwards ``/key/`` to it (the recipe in
docs/operations.md), so every LAN client reaches pkdns from the router's one address.

With the default limits, 40 LAN clients asking for 40 never-seen keys at once all get their
answer: the DHT lookup budget is the node's, not the router address's (a per-IP budget of 5/s,
burst 25 REFUSED 15 of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from pkdns.config import DnsConfig, PkarrConfig
from pkdns.dht.node import DhtNode
from pkdns.dht.testnet import Testnet
from pkdns.pkarr.signed_packet import SignedPacket
from tests.resolve.fakes import item_of
from tests.resolve.test_e2e import config, daemon, port_of
from tests.support.pkarr_factory import keypair, packet
from tests.support.require import require_tool

KEYS = 40


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def put(node: DhtNode, p: SignedPacket, room: asyncio.Semaphore) -> None:
    async with room:
        for _ in range(3):                   # a loaded machine may time a round out
            if (await node.put_mutable(item_of(p))).stored > 0:
                return
    raise AssertionError(f"could not publish {p.public_key.z32}")


@contextlib.contextmanager
def dnsmasq(tmp: Path, pkdns_port: int) -> Iterator[int]:
    """dnsmasq on 127.0.0.1 (a free port), forwarding only the ``key`` suffix to pkdns."""
    exe = require_tool("dnsmasq", shutil.which("dnsmasq") or "/usr/sbin/dnsmasq")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "-k", "--conf-file=/dev/null", f"--port={port}", "--listen-address=127.0.0.1",
         "--bind-interfaces", "--no-resolv", "--no-hosts", f"--pid-file={tmp}/dnsmasq.pid",
         f"--server=/key/127.0.0.1#{pkdns_port}", "--user=root", "--log-facility=-"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):                     # until it answers (REFUSED: no upstream)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(0.05)
                s.sendto(dns.message.make_query("probe.test", "A").to_wire(), ("127.0.0.1", port))
                with contextlib.suppress(OSError):
                    s.recv(512)
                    break
        assert proc.poll() is None, f"dnsmasq exited with {proc.returncode}"
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
async def wide_testnet() -> AsyncIterator[Testnet]:
    """32 nodes: 40 keys spread over the keyspace, as on the real DHT, so no single node gets
    more than our per-destination send pacing allows (an 8-node net would be asked for every
    key)."""
    net = await Testnet.start(32)
    try:
        yield net
    finally:
        await net.close()


async def test_40_new_keys_through_a_dnsmasq_router_all_resolve(tmp_path: Path,
                                                                 wide_testnet: Testnet) -> None:
    testnet = wide_testnet
    kps = [keypair(200 + i) for i in range(KEYS)]
    room = asyncio.Semaphore(8)
    await asyncio.gather(*(put(testnet.nodes[i % len(testnet.nodes)],
                               packet(kp, [f"@ 300 IN A 192.0.2.{i + 1}"]), room)
                           for i, kp in enumerate(kps)))
    cfg = config(tmp_path, testnet.bootstrap, ("127.0.0.1", 9))
    # The default limits; only the deadlines are longer, since the whole testnet shares this
    # process (and a busy CI machine) with the daemon.
    cfg = dataclasses.replace(cfg, dns=DnsConfig(listen=cfg.dns.listen, upstream=cfg.dns.upstream),
                              dht=dataclasses.replace(cfg.dht, request_timeout=2.0),
                              pkarr=PkarrConfig(lookup_timeout=6.0))
    async with daemon(cfg) as d:
        with dnsmasq(tmp_path, port_of(d)) as router:
            async def lan_client(i: int) -> dns.message.Message:
                q = dns.message.make_query(f"{kps[i].public_key.z32}.key", "A")
                return await dns.asyncquery.udp(q, "127.0.0.1", port=router, timeout=10,
                                                source=f"127.0.1.{i + 1}")
            replies = await asyncio.gather(*(lan_client(i) for i in range(KEYS)))
    assert [r.rcode() for r in replies] == [dns.rcode.NOERROR] * KEYS
    assert [r.answer[0][0].to_text() for r in replies] == [f"192.0.2.{i + 1}"
                                                          for i in range(KEYS)]
