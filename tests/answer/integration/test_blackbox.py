"""Black box: the installed ``pkdns serve`` process, a loopback DHT testnet, dig.

The testnet runs on its own event loop in a thread, so this test can block in ``dig`` and in
the daemon helper while the DHT nodes keep answering.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support.daemon import run_daemon
from tests.support.pkarr_factory import keypair, packet
from tests.support.pkarr_fakes import item_of
from tests.support.threaded_testnet import ThreadedTestnet
from tests.support.threaded_testnet import threaded_testnet as start_testnet

T = TypeVar("T")
DIG = shutil.which("dig") or "dig"


@pytest.fixture
def threaded_testnet() -> Iterator[ThreadedTestnet]:
    with start_testnet() as net:
        yield net


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
