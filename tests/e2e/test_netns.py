"""Unmodified programs open public-key names: glibc's resolver (``getent``) and Chromium.

Everything runs inside a network namespace made for this module (:mod:`tests.e2e.netns`):
only ``lo``, and ``/etc/netns/<name>/resolv.conf`` = ``nameserver 127.0.0.1``, so the
programs use their normal system configuration and reach pkdns without being told about it.
Inside it run ``pkdns --testnet --listen 127.0.0.1:53`` (the offline demo: an in-process
loopback DHT testnet holding the demo key's packet, A 127.0.0.1, AAAA ::1, ``www`` CNAME to
the apex, ``HTTPS 1 . alpn=h2``) and a page server on the published addresses, port 80 (http)
and 443 (https, self-signed). The page title names the scheme it was served over.

What Chromium does (Chromium 156, Debian, observed and asserted here):

* with its built-in DNS client (the default on Linux; it reads the namespace's resolv.conf
  and talks to pkdns directly) it asks ``A`` and ``HTTPS`` for ``www.<key>.key``; the answer
  chases the CNAME to ``<key>.key`` and carries its HTTPS record, so Chromium upgrades
  ``http://`` to ``https://`` (RFC 9460 §9.5) and the page comes from port 443. That proves
  the HTTPS record reached the browser. The dotless ``<key>`` loads too (Chromium asks only
  A/AAAA for it, so it stays on http; either scheme is accepted for it);
* with ``--disable-features=AsyncDns`` every lookup goes through getaddrinfo, i.e. glibc,
  which never asks for HTTPS records: both names load over plain http.

``--ignore-certificate-errors`` lets the self-signed certificate through; QUIC, background
networking, component updates and sync are off so that the browser makes no other traffic.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pkdns.pkarr.keys import Keypair
from tests.e2e.demoproc import Demo, run_demo
from tests.e2e.netns import Netns, netns, run_group, unavailable
from tests.support.daemon import stop_process
from tests.support.require import require, require_tool

pytestmark = [pytest.mark.netns, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--ignore-certificate-errors",
)
RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:2 attempts:2\n"


@dataclass
class World:
    ns: Netns
    demo: Demo
    token: str
    tmp: Path

    @property
    def key(self) -> str:
        return self.demo.key


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=pkdns-e2e"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def _page_server(ns: Netns, token: str, tmp: Path) -> subprocess.Popen[str]:
    cert, key = _self_signed(tmp)
    proc = subprocess.Popen([*ns.prefix(), sys.executable, "-m", "tests.e2e.pagesrv",
                             "--token", token, "--cert", str(cert), "--key", str(key)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()   # "ready", or the error if it could not start
    if line.strip() != "ready":
        proc.kill()
        proc.wait()
        raise RuntimeError(f"page server did not start: {line}{proc.stdout.read()}")
    return proc


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require(unavailable())
    tmp = tmp_path_factory.mktemp("netns")
    token = Keypair.random().public_key.z32[:12]
    with netns(RESOLV_CONF) as ns:
        pages = _page_server(ns, token, tmp)
        try:
            with run_demo(tmp, "--listen", "127.0.0.1:53", "--no-http", "-v",
                          prefix=ns.prefix()) as demo:
                yield World(ns, demo, token, tmp)
        finally:
            stop_process(pages, signal.SIGTERM, 10)
            if pages.stdout is not None:
                pages.stdout.close()


def _getent(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return world.ns.run(["getent", *args])


def _open(world: World, url: str, *extra: str) -> str:
    """The page title Chromium shows for ``url`` (run inside the namespace)."""
    profile = world.tmp / f"chromium-{len(list(world.tmp.iterdir()))}"
    profile.mkdir()
    chromium = require_tool("chromium", "/usr/bin/chromium")
    done = run_group([*world.ns.prefix(), chromium, *CHROMIUM_FLAGS, *extra,
                      f"--user-data-dir={profile}", "--dump-dom", url], timeout=90)
    m = re.search(r"<title>(.*?)</title>", done.stdout)
    assert m, f"{url}: no page (exit {done.returncode}): {done.stderr[-2000:]}"
    return m.group(1)


def test_getent_resolves_public_key_names(world: World) -> None:
    k = world.key
    hosts = _getent(world, "hosts", k)
    assert hosts.returncode == 0, hosts
    assert hosts.stdout.split()[0] in ("::1", "127.0.0.1") and k in hosts.stdout.split()
    # (not ahostsv4: with AI_ADDRCONFIG and only lo, glibc drops IPv4 even for localhost)
    apex = _getent(world, "ahosts", k)
    assert {line.split()[0] for line in apex.stdout.splitlines()} == {"127.0.0.1", "::1"}, apex
    www = _getent(world, "ahosts", f"www.{k}.key")
    assert {line.split()[0] for line in www.stdout.splitlines()} == {"127.0.0.1", "::1"}, www
    assert f"{k}.key" in www.stdout.split()     # the canonical name: CNAME chased, suffix kept


def test_getent_reports_an_unpublished_key_as_unknown(world: World) -> None:
    absent = Keypair.random().public_key.z32
    result = _getent(world, "hosts", absent)
    assert (result.returncode, result.stdout) == (2, "")    # getent: key not found


def test_chromium_builtin_dns_gets_the_https_record(world: World) -> None:
    k = world.key
    # Chromium upgrades to https when the HTTPS answer arrives before its connection starts;
    # on a loaded machine it may not wait for it, so either scheme proves the name resolved,
    # and the query log below proves Chromium asked pkdns for the HTTPS record and got it.
    assert _open(world, f"http://www.{k}.key/") in (f"pkdns e2e {world.token} https",
                                                    f"pkdns e2e {world.token} http")
    assert _open(world, f"http://{k}/") in (f"pkdns e2e {world.token} http",
                                            f"pkdns e2e {world.token} https")
    https_queries = [e for e in world.demo.events() if e.get("event") == "query"
                     and e.get("qname") == f"www.{k}.key" and e.get("qtype") == 65]
    assert https_queries and https_queries[0]["kind"] == "pkarr"
    assert https_queries[0]["rcode"] == 0


def test_chromium_through_getaddrinfo(world: World) -> None:
    k = world.key
    for url in (f"http://{k}/", f"http://www.{k}.key/"):
        title = _open(world, url, "--disable-features=AsyncDns")
        assert title == f"pkdns e2e {world.token} http", url
