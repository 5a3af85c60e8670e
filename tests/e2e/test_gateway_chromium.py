"""``https://<key>.key/`` in an unmodified headless Chromium, through the verifying gateway.

Inside a network namespace of its own (only ``lo``; ``/etc/netns/<name>/resolv.conf`` makes
glibc and Chromium's built-in DNS client ask the pkdns started on 127.0.0.1:53 inside it):

* ``pkdns --testnet`` with two ``[[zones]]``: key A (origin at 127.0.0.2 with a self-signed
  certificate, its TLSA record published) and key B (origin at 127.0.0.3 whose certificate
  does not match its TLSA record), and ``[gateway]`` on 127.0.0.1:443 and :80;
* the gateway's CA (``pkdns ca init``/``export``) imported with ``certutil`` into the NSS
  database of a fresh ``$HOME`` (``$HOME/.pki/nssdb``, where Chromium on Linux looks);
* Chromium with no certificate flags at all.

Asserted: A's page loads with no certificate error (DOM and screenshot); B gives the gateway's
502 page and origin B never receives a request; ``http://`` is redirected to ``https://``; a
leaf for ``example.com`` signed by the same CA is refused by Chromium (name constraints).
"""

from __future__ import annotations

import datetime
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pkdns.gateway import ca, tlsa
from tests.e2e.demoproc import Demo, run_demo
from tests.e2e.netns import Netns, netns, run_group, unavailable
from tests.gateway.certs import self_signed
from tests.support import pkarr_factory as pf
from tests.support.daemon import PKDNS
from tests.support.require import require, require_tool

pytestmark = [pytest.mark.netns, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:2 attempts:2\n"
GOOD, BAD = pf.keypair(41), pf.keypair(42)


@dataclass
class World:
    ns: Netns
    demo: Demo
    tmp: Path
    home: Path
    origins: dict[str, subprocess.Popen[str]]
    local: ca.LocalCa

    def chromium(self, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
        profile = self.tmp / f"profile-{len(list(self.tmp.glob('profile-*')))}"
        profile.mkdir()
        chromium = require_tool("chromium", "/usr/bin/chromium")
        return run_group([*self.ns.prefix(), "env", f"HOME={self.home}", chromium,
                          *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
                         timeout=90)


def _origin(ns: Netns, host: str, cert: Path, key: Path, token: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*ns.prefix(), sys.executable, "-m", "tests.gateway.origin",
                             "--host", host, "--port", "443", "--cert", str(cert), "--key",
                             str(key), "--token", token], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("port "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"origin did not start: {line}{proc.stdout.read()}")
    return proc


def _stop(proc: subprocess.Popen[str]) -> str:
    """Stop an origin; everything it printed after ``port N``."""
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def _zones(tmp: Path, good_cert: Path, other_cert: Path) -> str:
    def record(cert: Path) -> str:
        return tlsa.record_for(tlsa.cert_der_from_pem(cert.read_bytes(), str(cert))).text()

    text = ""
    for n, (kp, addr, cert) in enumerate(((GOOD, "127.0.0.2", good_cert),
                                          (BAD, "127.0.0.3", good_cert))):
        (tmp / f"seed{n}").write_text(kp.seed.hex())
        (tmp / f"seed{n}").chmod(0o600)
        (tmp / f"zone{n}").write_text(f"@ IN A {addr}\n_443._tcp IN TLSA {record(cert)}\n")
        text += f'[[zones]]\nseed = "seed{n}"\nzone = "zone{n}"\n'
    del other_cert
    return text


def _nssdb(home: Path, ca_pem: Path) -> None:
    certutil = require_tool("certutil", "/usr/bin/certutil")
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    for cmd in (["-N", "--empty-password"], ["-A", "-t", "C,,", "-n", "pkdns .key CA",
                                             "-i", str(ca_pem)]):
        subprocess.run([certutil, "-d", f"sql:{db}", *cmd], check=True, capture_output=True,
                       timeout=30)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require(unavailable())
    tmp = tmp_path_factory.mktemp("gwchrome")
    state = tmp / "state"
    subprocess.run([PKDNS, "ca", "init", "--state-dir", str(state)], check=True,
                   capture_output=True, timeout=30)
    ca_pem = tmp / "ca.pem"
    ca_pem.write_text(subprocess.run([PKDNS, "ca", "export", "--state-dir", str(state)],
                                     check=True, capture_output=True, text=True,
                                     timeout=30).stdout)
    home = tmp / "home"
    _nssdb(home, ca_pem)
    good_cert, good_key = self_signed(tmp, "good")
    other_cert, other_key = self_signed(tmp, "other")
    config = tmp / "pkdns.toml"
    config.write_text(f'state_dir = "{state}"\n' + _zones(tmp, good_cert, other_cert)
                      + '[gateway]\nenabled = true\nlisten = ["127.0.0.1:443"]\n'
                      'http_listen = ["127.0.0.1:80"]\n')
    local = ca.load(state)
    assert local is not None
    with netns(RESOLV_CONF) as ns:
        origins = {"good": _origin(ns, "127.0.0.2", good_cert, good_key, "good"),
                   "bad": _origin(ns, "127.0.0.3", other_cert, other_key, "bad")}
        try:
            with run_demo(tmp, "--config", str(config), "--listen", "127.0.0.1:53",
                          "--no-http", "-v", prefix=ns.prefix()) as demo:
                _wait_published(ns, demo)
                yield World(ns, demo, tmp, home, origins, local)
        finally:
            for proc in origins.values():
                if proc.poll() is None:
                    _stop(proc)


def _wait_published(ns: Netns, demo: Demo) -> None:
    """Both zones are on the testnet. Waits for the republisher's log line first: asking
    before would cache the key's NXDOMAIN for pkarr.negative_ttl."""
    want = {GOOD.public_key.z32, BAD.public_key.z32}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not want <= {
            e.get("key") for e in demo.events() if e.get("event") == "zone_published"}:
        time.sleep(0.1)
    for z in want:
        out = ns.run(["dig", "@127.0.0.1", "+short", "+tries=1", "+time=2", "TLSA",
                      f"_443._tcp.{z}.key"])
        assert out.stdout.strip(), f"{z} not published: {demo.text()[-3000:]}"


def _title(dom: str) -> str:
    m = re.search(r"<title>(.*?)</title>", dom, re.S)
    return m.group(1).strip() if m else ""


def _png_pixels(path: Path) -> tuple[int, int, bytes]:
    """Width, height and the decompressed scanlines of a PNG (enough to see it is not blank)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, zlib.decompress(idat)


def test_https_key_name_loads_the_verified_origin(world: World) -> None:
    url = f"https://{GOOD.public_key.z32}.key/"
    dom = world.chromium(url, "--dump-dom")
    assert _title(dom.stdout) == "origin good", (dom.stdout[-2000:], dom.stderr[-2000:])
    assert "served by the origin good" in dom.stdout
    shot = world.tmp / "good.png"
    done = world.chromium(url, f"--screenshot={shot}", "--window-size=800,600")
    assert shot.exists(), done.stderr[-2000:]
    width, height, pixels = _png_pixels(shot)
    assert (width, height) == (800, 600)
    assert len(set(pixels)) > 2, "the screenshot is blank"   # black heading on white


def test_http_is_redirected_to_https(world: World) -> None:
    dom = world.chromium(f"http://{GOOD.public_key.z32}.key/", "--dump-dom")
    assert _title(dom.stdout) == "origin good", dom.stderr[-2000:]


def test_mismatching_origin_gets_the_502_page_and_no_request(world: World) -> None:
    dom = world.chromium(f"https://{BAD.public_key.z32}.key/", "--dump-dom")
    assert _title(dom.stdout) == "502 Bad Gateway: origin not verified", dom.stderr[-2000:]
    assert "127.0.0.3: its certificate matches no TLSA record of the key" in dom.stdout
    out = _stop(world.origins["bad"])
    assert "request" not in out, out


def _direct(world: World, name: str) -> tuple[str, str]:
    """Chromium opening ``https://NAME/`` on a server at 127.0.0.4 presenting a leaf for
    ``name`` signed with the CA key directly (not by the gateway, not by mint_leaf's checks):
    DOM + stderr, and what the server printed."""
    key = ca.new_key()
    now = datetime.datetime.now(datetime.UTC)
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(world.local.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .sign(world.local.key, hashes.SHA256()))
    cert, keyfile = world.tmp / f"{name}.crt", world.tmp / f"{name}.key"
    cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    server = _origin(world.ns, "127.0.0.4", cert, keyfile, "direct")
    try:
        dom = world.chromium(f"https://{name}/", "--dump-dom",
                             f"--host-resolver-rules=MAP {name} 127.0.0.4")
    finally:
        out = _stop(server)
    return dom.stdout + dom.stderr, out


def test_a_leaf_for_example_com_from_the_same_ca_is_refused(world: World) -> None:
    # Control: the same kind of leaf for a .key name is accepted (the CA is trusted) ...
    text, out = _direct(world, f"{pf.keypair(43).public_key.z32}.key")
    assert "served by the origin direct" in text and "request GET /" in out, text[-2000:]
    # ... and for example.com Chromium refuses it: the name constraint, not the trust.
    text, out = _direct(world, "example.com")
    assert "origin direct" not in text and "request" not in out, text[-2000:]
    assert "ERR_CERT_INVALID" in text and "ERR_CERT_AUTHORITY_INVALID" not in text, text[-2000:]
