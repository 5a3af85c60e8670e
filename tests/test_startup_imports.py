"""Start-up stays light: the daemon's serve path imports no module it does not need before
it answers DNS. Each import costs start-up time (aiohttp alone ~0.2 s, on a loaded machine
~0.5 s), and a daemon answering from a relay while the DHT is blocked has nothing better to
do than wait for them. Run in a fresh interpreter, so what other tests imported does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pkdns.pkarr.client import to_item
from tests.support.pkarr_factory import keypair, packet
from tests.support.threaded_testnet import threaded_testnet

NEVER = ["cryptography", "pkdns.gateway", "pkdns.pkarr.zone", "dns.zonefile"]
"""Not for a daemon without the gateway or [[zones]]: TLS certificates, zone-file parsing."""
WEB = ["aiohttp", "pkdns.server.face", "pkdns.server.dashboard"]
"""Not without the HTTP face and relays."""

BUILD = """
import json, sys
from pkdns import config as c
from pkdns.cli import build_parser
from pkdns.app import Daemon
from pkdns.lifecycle import Service
build_parser()   # `pkdns serve` registers every command's flags
cfg = c.Config(state_dir=sys.argv[1])
if sys.argv[2] == "bare":
    cfg = c.replace(cfg, http=c.replace(cfg.http, enabled=False))
Daemon(cfg, service=Service(env={}))
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after_building(tmp_path: Path, kind: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", BUILD, str(tmp_path / kind), kind],
                         capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_default_daemon_imports_no_gateway_and_no_zone_parser(tmp_path: Path) -> None:
    loaded = _modules_after_building(tmp_path, "default")
    assert "pkdns.dns.resolver" in loaded and "pkdns.dht.node" in loaded  # it did build
    assert [m for m in NEVER if m in loaded] == []


def test_a_daemon_without_http_or_relays_imports_no_aiohttp(tmp_path: Path) -> None:
    loaded = _modules_after_building(tmp_path, "bare")
    assert [m for m in NEVER + WEB if m in loaded] == []


COLD = ["structlog", "tomllib", "aiohttp", "uvloop", "cryptography", "dns", "importlib.metadata",
        "pkdns.config", "pkdns.configfile", "pkdns.pkarr.zone", "pkdns.cmd.gatewaycmd",
        "concurrent.futures.thread", "encodings.idna"]
"""Not in a cold ``pkdns resolve`` that finds its key: it logs nothing when all goes well
(structlog), reads no config file (tomllib, the config dataclasses), uses no relay (aiohttp),
prints the common record types without dnspython (whose import reads every installed
package's metadata), and an address literal as bootstrap needs no getaddrinfo thread. Each
of these costs it 5-100 ms of start-up, where libtorrent's whole client takes ~0.1 s."""

RESOLVE = """
import json, sys
from pkdns.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_a_cold_resolve_loads_only_what_it_uses() -> None:
    """The whole command, as ``python -m pkdns resolve KEY --bootstrap HOST:PORT`` runs it,
    against a loopback testnet that holds the key."""
    kp = keypair(41)
    item = to_item(packet(kp, ["@ 300 IN A 192.0.2.41", '_t 60 IN TXT "cold"']))
    with threaded_testnet(nodes=6) as net:
        stored = net.run(net.net.nodes[1].put_mutable(item, timeout=5.0))
        assert stored.stored >= 1
        host, port = net.net.bootstrap[0]
        out = subprocess.run([sys.executable, "-c", RESOLVE, "resolve", kp.public_key.z32,
                              "--bootstrap", f"{host}:{port}", "--json"],
                             capture_output=True, text=True, timeout=60)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0, out.stderr
    answer, loaded = json.loads(lines[0]), json.loads(lines[-1])
    assert loaded["code"] == 0
    assert answer["records"] == ["@ 300 IN A 192.0.2.41", '_t 60 IN TXT "cold"']
    modules = set(loaded["modules"])
    assert "pkdns.cmd.dhtcmd" in modules and "pkdns.dht.node" in modules
    assert [m for m in COLD if m in modules] == []
