"""Black box: the installed ``pkdns serve`` process, a loopback DHT testnet, dig.

The testnet runs on its own event loop in a thread, so this test can block in ``dig`` and in
the daemon helper while the DHT nodes keep answering.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pkdns.dht.testnet import Testnet
from tests.answer.fakes import item_of
from tests.support.daemon import run_daemon
from tests.support.pkarr_factory import keypair, packet

T = TypeVar("T")
DIG = shutil.which("dig") or "dig"


class ThreadedTestnet:
    """A :class:`Testnet` on a private loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.net: Testnet = self.run(Testnet.start(6))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(15)

    def close(self) -> None:
        try:
            self.run(self.net.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


@pytest.fixture
def threaded_testnet() -> Iterator[ThreadedTestnet]:
    net = ThreadedTestnet()
    try:
        yield net
    finally:
        net.close()


def dig(port: int, *args: str) -> str:
    out = subprocess.run([DIG, "@127.0.0.1", "-p", str(port), "+tries=1", "+time=3", *args],
                         capture_output=True, text=True, timeout=20, check=False)
    return out.stdout


def test_pkdns_serve_resolves_a_published_key(tmp_path: Path,
                                              threaded_testnet: ThreadedTestnet) -> None:
    kp = keypair(111)
    z = kp.public_key.z32
    p = packet(kp, ["@ 300 IN A 192.0.2.42", 'www 300 IN TXT "served by pkdns"'])
    result = threaded_testnet.run(threaded_testnet.net.nodes[0].put_mutable(item_of(p)))
    assert result.stored > 0
    boot = [f"{h}:{port}" for h, port in threaded_testnet.net.bootstrap]
    args = ["--dht-port", "0", "--tld-suffix", "pk"]
    for b in boot:
        args += ["--bootstrap", b]
    with run_daemon(tmp_path, *args, upstreams=("127.0.0.1:9",)) as d:
        answer = ""
        for _ in range(20):  # bootstrap runs in the background; the first try may SERVFAIL
            answer = dig(d.port, z, "A", "+short").strip()
            if answer:
                break
            time.sleep(0.25)
        assert answer == "192.0.2.42"
        txt = dig(d.port, f"WWW.{z}.PK", "TXT")
        assert "status: NOERROR" in txt and '"served by pkdns"' in txt
        missing = dig(d.port, f"{keypair(112).public_key.z32}.pk", "A")
        assert "status: NXDOMAIN" in missing and " IN SOA " in " ".join(missing.split())
        assert any(ev.get("event") == "dht_bootstrapped" for ev in d.events())
