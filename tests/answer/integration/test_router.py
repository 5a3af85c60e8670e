"""A home router in front of pkdns: a real dnsmasq forwards ``/key/`` to it (the recipe in
docs/operations.md), so every LAN client reaches pkdns from the router's one address.

With the default configuration, 40 LAN clients asking for 40 never-seen keys at once all get
their answer: the DHT lookup budget is the node's, not the router address's (a per-IP budget of
5/s, burst 25 REFUSED 15 of them). pkdns runs as its own process (the installed ``pkdns
serve``), the DHT testnet on a loop in a thread of this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from pkdns.dht.testnet import Testnet
from pkdns.pkarr.signed_packet import SignedPacket
from tests.support.daemon import run_daemon, stop_process
from tests.support.knot import free_port
from tests.support.pkarr_factory import keypair, packet
from tests.support.pkarr_fakes import item_of
from tests.support.require import require_tool
from tests.support.threaded_testnet import ThreadedTestnet, threaded_testnet

T = TypeVar("T")
KEYS = 40
NODES = 48
"""40 keys spread over the keyspace of 48 nodes, as on the real DHT; in an 8-node net every
node would hold every key and be asked for each, past what our per-destination pacing sends."""


@pytest.fixture
def wide_net() -> Iterator[ThreadedTestnet]:
    with threaded_testnet(NODES, request_timeout=3.0, start_timeout=60) as net:
        yield net


async def publish_all(net: Testnet, packets: list[SignedPacket]) -> None:
    room = asyncio.Semaphore(8)

    async def put(i: int, p: SignedPacket) -> None:
        async with room:
            for _ in range(5):                   # a loaded machine may time a round out
                # Published only once the put went to the closest nodes, all of which took it:
                # a put whose token lookup timed out stores on whoever answered, maybe far from
                # the key, and a lookup that hears the closest then rightly proves absence.
                r = await net.nodes[i % NODES].put_mutable(item_of(p))
                if r.converged and r.stored == r.asked > 0:
                    return
        raise AssertionError(f"could not publish {p.public_key.z32} to its closest nodes")

    await asyncio.gather(*(put(i, p) for i, p in enumerate(packets)))


@contextlib.contextmanager
def dnsmasq(tmp: Path, pkdns_port: int) -> Iterator[int]:
    """dnsmasq on 127.0.0.1 (a free port), forwarding only the ``key`` suffix to pkdns."""
    exe = require_tool("dnsmasq", shutil.which("dnsmasq") or "/usr/sbin/dnsmasq")
    for _ in range(5):                           # another test may take the free port first
        port = free_port()
        proc = subprocess.Popen(
            [exe, "-k", "--conf-file=/dev/null", f"--port={port}", "--listen-address=127.0.0.1",
             "--bind-interfaces", "--no-resolv", "--no-hosts", f"--pid-file={tmp}/dnsmasq.pid",
             f"--server=/key/127.0.0.1#{pkdns_port}", "--user=root", "--log-facility=-"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(0.2)
        except subprocess.TimeoutExpired:
            break                                # still running: it has the port
    try:
        assert proc.poll() is None, f"dnsmasq exited with {proc.returncode}"
        yield port
    finally:
        stop_process(proc, signal.SIGTERM, 5)


async def lan_clients(router: int, names: list[str]) -> list[dns.message.Message]:
    """Every client from its own LAN address, all at once."""
    return await asyncio.gather(*(
        dns.asyncquery.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=router,
                           timeout=10, source=f"127.0.1.{i + 1}")
        for i, name in enumerate(names)))


def test_40_new_keys_through_a_dnsmasq_router_all_resolve(tmp_path: Path,
                                                          wide_net: ThreadedTestnet) -> None:
    kps = [keypair(200 + i) for i in range(KEYS)]
    wide_net.run(publish_all(wide_net.net, [packet(kp, [f"@ 300 IN A 192.0.2.{i + 1}"])
                                            for i, kp in enumerate(kps)]), 120)
    args = ["--dht-port", "0"]
    for host, port in wide_net.net.bootstrap:
        args += ["--bootstrap", f"{host}:{port}"]
    with run_daemon(tmp_path, *args, upstreams=("127.0.0.1:9",)) as d:      # the defaults
        deadline = time.monotonic() + 20
        while not any(ev.get("event") == "dht_bootstrapped" for ev in d.events()):
            assert time.monotonic() < deadline, "the daemon's DHT node did not bootstrap"
            time.sleep(0.1)
        names = [f"{kp.public_key.z32}.key" for kp in kps]
        with dnsmasq(tmp_path, d.port) as router:
            replies = asyncio.run(lan_clients(router, names))
            assert dns.rcode.REFUSED not in [r.rcode() for r in replies]
            # A lookup that the loaded test machine let time out is SERVFAIL, which a stub
            # resolver asks again; once is enough.
            again = [i for i, r in enumerate(replies) if r.rcode() == dns.rcode.SERVFAIL]
            for i, r in zip(again, asyncio.run(lan_clients(router, [names[i] for i in again])),
                            strict=True):
                replies[i] = r
    assert [r.rcode() for r in replies] == [dns.rcode.NOERROR] * KEYS
    assert [r.answer[0][0].to_text() for r in replies] == [f"192.0.2.{i + 1}"
                                                          for i in range(KEYS)]
