"""The gateway inside the real daemon (``pkdns --testnet`` with a ``[gateway]`` section and a
zone published to the loopback testnet): DNS routes the name to the gateway (real ``dig``),
``curl`` trusting only the exported CA gets the origin's page through it; ``--check`` refuses
a gateway on a public address without an ACL."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkdns.gateway import tlsa
from tests.e2e.demoproc import Demo, run_demo
from tests.gateway.certs import self_signed
from tests.support import pkarr_factory as pf
from tests.support.daemon import PKDNS
from tests.support.require import require_tool

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    cert, key = self_signed(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "tests.gateway.origin", "--cert", str(cert),
                             "--key", str(key), "--token", "t1"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line[:1] == ["port"], line
    try:
        yield proc, int(line[1]), cert
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def _config(tmp: Path, origin_port: int, cert: Path, match: bool) -> Path:
    kp = pf.keypair(31)
    digest = tlsa.record_for(tlsa.cert_der_from_pem(cert.read_bytes(), "c")).text()
    if not match:
        digest = digest[:-2] + ("00" if not digest.endswith("00") else "11")
    (tmp / "seed").write_text(kp.seed.hex())
    (tmp / "seed").chmod(0o600)
    (tmp / "zone").write_text(f"@ IN A 127.0.0.1\n_443._tcp IN TLSA {digest}\n"
                              "plain IN A 127.0.0.1\n")
    path = tmp / "pkdns.toml"
    path.write_text(f'state_dir = "{tmp / "state"}"\n[[zones]]\nseed = "seed"\nzone = "zone"\n'
                    f'[gateway]\nenabled = true\nlisten = ["127.0.0.1:0"]\n'
                    f'http_listen = ["127.0.0.1:0"]\norigin_port = {origin_port}\n')
    return path


def _gateway_port(demo: Demo) -> int:
    ev = next(e for e in demo.events() if e.get("event") == "gateway_listening")
    return int(ev["https"][0].rsplit(":", 1)[1])


def _dig(port: int, *args: str) -> list[str]:
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+short", "+tries=1",
                          "+time=3", *args], capture_output=True, text=True, timeout=15)
    return out.stdout.split()


def _wait_published(demo: Demo, dns_port: int, name: str) -> None:
    """The republisher put the zone (asking before would cache the key's NXDOMAIN)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any(e.get("event") == "zone_published" for e in demo.events()):
            assert _dig(dns_port, "TLSA", f"_443._tcp.{name}")
            return
        time.sleep(0.1)
    raise AssertionError(f"the zone of {name} was not published to the testnet")


def _curl(name: str, port: int, ca: Path,
          scheme: str = "https") -> subprocess.CompletedProcess[str]:
    curl = require_tool("curl")
    default = 443 if scheme == "https" else 80
    return subprocess.run([curl, "-sS", "-i", "--max-time", "15", "--cacert", str(ca),
                           "--connect-to", f"{name}:{default}:127.0.0.1:{port}",
                           f"{scheme}://{name}/"], capture_output=True, text=True, timeout=30)


def test_daemon_routes_and_relays_a_verified_origin(tmp_path: Path, origin: tuple[
        subprocess.Popen[str], int, Path]) -> None:
    proc, origin_port, cert = origin
    name = f"{pf.keypair(31).public_key.z32}.key"
    cfg = _config(tmp_path, origin_port, cert, match=True)
    with run_demo(tmp_path, "--config", str(cfg), "--no-http", "--listen", "127.0.0.1:0",
                  "-v") as demo:
        dns_port = int(next(t for t in demo.tries if t.startswith("dig")).split()[3])
        _wait_published(demo, dns_port, name)
        assert _dig(dns_port, "A", name) == ["127.0.0.1"]
        assert _dig(dns_port, "AAAA", name) == []                  # no IPv6 gateway address
        assert _dig(dns_port, "A", name.removesuffix(".key")) == ["127.0.0.1"]  # bare key
        key_file = tmp_path / "state" / "gateway-ca.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert key_file.stat().st_uid == os.geteuid()
        ca = tmp_path / "ca.pem"
        ca.write_text(subprocess.run([PKDNS, "ca", "export", "--state-dir",
                                      str(tmp_path / "state")], capture_output=True,
                                     text=True, timeout=30, check=True).stdout)
        port = _gateway_port(demo)
        page = _curl(name, port, ca)
        assert page.returncode == 0 and "served by the origin t1" in page.stdout, \
            (page, [e for e in demo.events() if "gateway" in str(e)])
        ev = next(e for e in demo.events() if e.get("event") == "gateway_listening")
        http_port = int(ev["http"][0].rsplit(":", 1)[1])
        moved = _curl(name, http_port, ca, "http")
        assert "308 Permanent Redirect" in moved.stdout and \
            f"location: https://{name}/" in moved.stdout.lower(), moved


def test_daemon_refuses_a_mismatching_origin(tmp_path: Path, origin: tuple[
        subprocess.Popen[str], int, Path]) -> None:
    proc, origin_port, cert = origin
    name = f"{pf.keypair(31).public_key.z32}.key"
    cfg = _config(tmp_path, origin_port, cert, match=False)
    with run_demo(tmp_path, "--config", str(cfg), "--no-http", "--listen", "127.0.0.1:0",
                  "-v") as demo:
        dns_port = int(next(t for t in demo.tries if t.startswith("dig")).split()[3])
        _wait_published(demo, dns_port, name)
        ca = tmp_path / "state" / "gateway-ca.crt"
        page = _curl(name, _gateway_port(demo), ca)
        assert page.returncode == 0 and page.stdout.startswith("HTTP/1.1 502"), page
        assert "matches no TLSA record" in page.stdout
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    assert "request" not in out


def test_check_refuses_a_public_gateway_without_acl(tmp_path: Path) -> None:
    def check(section: str) -> subprocess.CompletedProcess[str]:
        cfg = tmp_path / "g.toml"
        cfg.write_text(f"[gateway]\nenabled = true\n{section}")
        return subprocess.run([PKDNS, "serve", "--check", "--config", str(cfg)],
                              capture_output=True, text=True, timeout=30)

    for section in ('listen = ["0.0.0.0:443"]\nanswer = ["192.0.2.1"]\nallow = ["0.0.0.0/0"]\n',
                    'listen = ["203.0.113.5:443"]\nallow = ["::/0", "10.0.0.0/8"]\n',
                    'http_listen = ["[::]:80"]\nallow = ["0.0.0.0/1", "128.0.0.0/1"]\n'):
        bad = check(section)
        assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1, (section, bad)
        assert "gateway.allow: the gateway listens on public address" in bad.stderr, bad
    unspecified = check('listen = ["0.0.0.0:443"]\n')     # DNS would hand out 0.0.0.0
    assert unspecified.returncode == 2 and "gateway.answer: must name" in unspecified.stderr
    for section in ('listen = ["0.0.0.0:443"]\nanswer = ["192.168.1.2"]\n',   # ACL: private
                    'listen = ["203.0.113.5:443"]\nallow = ["198.51.100.0/24"]\n',
                    'listen = ["192.168.1.1:443"]\nallow = ["0.0.0.0/0"]\n'):   # LAN only
        ok = check(section)
        assert ok.returncode == 0, (section, ok)
    cfg = tmp_path / "s.toml"
    cfg.write_text('[pkarr]\ntld_suffix = "pk"\n[gateway]\nenabled = true\n')
    res = subprocess.run([PKDNS, "serve", "--check", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "pkarr.tld_suffix" in res.stderr, res
