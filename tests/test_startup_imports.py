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


RESOLVE = """
import json, sys
from pkdns.cli import build_parser
build_parser()   # every command's module, as `pkdns resolve` loads them
print(json.dumps(sorted(sys.modules)))
"""
COLD = ["structlog", "tomllib", "dns.message", "aiohttp", "pkdns.pkarr.zone"]
"""Not before a cold ``pkdns resolve`` starts its lookup: it logs nothing when all goes well,
reads no config file, prints its zone text at the end (loaded in a thread meanwhile)."""


def test_a_cold_command_starts_its_lookup_without_heavy_imports() -> None:
    out = subprocess.run([sys.executable, "-c", RESOLVE], capture_output=True, text=True,
                         timeout=60, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "pkdns.cmd.dhtcmd" in loaded and "pkdns.dht.node" in loaded
    assert [m for m in COLD if m in loaded] == []
