"""The installed daemon, black-box, with knotd as the real upstream and dig/kdig/dnspython."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.support.blackbox import ZONE, dig, query
from tests.support.daemon import Daemon, run_daemon
from tests.support.knot import Knot, knot_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Knot]:
    with knot_server(tmp_path_factory.mktemp("knot"), {"example.test.": ZONE}) as k:
        yield k


@pytest.fixture(scope="module")
def daemon(knot: Knot, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    cfg = "[dns]\nrate_limit = 0.0\n"
    with run_daemon(tmp_path_factory.mktemp("pkdns"), upstreams=(knot.addr,), config=cfg) as d:
        yield d


def test_dig_and_kdig_resolve_through_knot(daemon: Daemon) -> None:
    out = dig(daemon.port, "www.example.test", "A")
    assert "status: NOERROR" in out and "192.0.2.1" in out and "flags: qr rd ra;" in out
    out = dig(daemon.port, "www.example.test", "AAAA", tool="kdig")
    assert "NOERROR" in out and "2001:db8::1" in out
    out = dig(daemon.port, "+tcp", "alias.example.test", "A", tool="kdig")
    assert "www.example.test." in out and "192.0.2.1" in out


def test_dnspython_udp_and_tcp_with_0x20_case_echoed(daemon: Daemon) -> None:
    q = query("wWw.ExAmPlE.tEsT")
    r = dns.query.udp(q, "127.0.0.1", port=daemon.port, timeout=3)
    assert q.is_response(r) and str(r.question[0].name) == "wWw.ExAmPlE.tEsT."
    assert r.answer[0][0].address == "192.0.2.1"
    q2 = query("WWW.example.test")
    r2 = dns.query.tcp(q2, "127.0.0.1", port=daemon.port, timeout=3)
    assert q2.is_response(r2) and str(r2.question[0].name) == "WWW.example.test."


def test_ttl_counts_down_from_the_cache(daemon: Daemon) -> None:
    q = query("www.example.test", "AAAA")
    first = dns.query.udp(q, "127.0.0.1", port=daemon.port, timeout=3)
    time.sleep(1.1)
    second = dns.query.udp(query("www.example.test", "AAAA"), "127.0.0.1", port=daemon.port,
                           timeout=3)
    assert second.answer[0].ttl <= first.answer[0].ttl - 1


def test_nxdomain_negatively_cached_with_soa(daemon: Daemon) -> None:
    first = dns.query.udp(query("nope.example.test"), "127.0.0.1", port=daemon.port, timeout=3)
    assert first.rcode() == dns.rcode.NXDOMAIN and first.authority[0].ttl == 60
    time.sleep(1.1)
    second = dns.query.udp(query("nope.example.test"), "127.0.0.1", port=daemon.port, timeout=3)
    assert second.rcode() == dns.rcode.NXDOMAIN and second.authority[0].ttl < 60
    nodata = dns.query.udp(query("www.example.test", "MX"), "127.0.0.1", port=daemon.port,
                           timeout=3)
    assert nodata.rcode() == 0 and not nodata.answer and nodata.authority[0].rdtype == 6


def test_large_answer_truncates_over_udp_and_completes_over_tcp(daemon: Daemon) -> None:
    plain = dns.query.udp(query("big.example.test", "TXT", use_edns=False), "127.0.0.1",
                          port=daemon.port, timeout=3)
    assert plain.flags & dns.flags.TC and not plain.answer
    q = query("big.example.test", "TXT", use_edns=0, payload=4096)
    wire = dns.query.udp(q, "127.0.0.1", port=daemon.port, timeout=3)
    assert wire.flags & dns.flags.TC and len(wire.to_wire()) <= 1232
    full = dns.query.tcp(q, "127.0.0.1", port=daemon.port, timeout=3)
    assert len(full.answer[0]) == 8
    out = dig(daemon.port, "big.example.test", "TXT")       # dig retries over TCP by itself
    assert "(TCP)" in out and "ANSWER: 8," in out


def test_edns_compliance_probes(daemon: Daemon) -> None:
    """The ISC KB EDNS probes ("Testing EDNS Compatibility with dig"), via dig."""
    assert "status: NOERROR" in dig(daemon.port, "+noedns", "www.example.test")
    assert "status: NOERROR" in dig(daemon.port, "+edns=0", "www.example.test")
    out = dig(daemon.port, "+edns=100", "+noednsneg", "www.example.test")
    assert "status: BADVERS" in out and "EDNS: version: 0" in out
    assert "status: NOERROR" in dig(daemon.port, "+ednsopt=100", "www.example.test")
    assert "status: NOERROR" in dig(daemon.port, "+ednsflags=0x80", "www.example.test")
    assert "flags: do;" in dig(daemon.port, "+dnssec", "www.example.test")
    assert "status: NOERROR" in dig(daemon.port, "+bufsize=512", "+ignore", "www.example.test")
    out = dig(daemon.port, "+edns=0", "+opcode=15", "www.example.test")    # RFC 6891 §7
    assert "status: NOTIMP" in out and "EDNS: version: 0" in out


def test_chaos_version_bind_refused_and_any_minimal(daemon: Daemon) -> None:
    assert "status: REFUSED" in dig(daemon.port, "version.bind", "TXT", "CH")
    out = dig(daemon.port, "example.test", "ANY")      # dig 9.18 asks ANY over TCP itself
    assert "status: NOERROR" in out and 'HINFO\t"RFC8482" ""' in out
    out = dig(daemon.port, "+notcp", "+ignore", "example.test", "ANY")
    assert "flags: qr tc rd ra;" in out and "ANSWER: 0," in out


def test_sigterm_drains_and_exits_0(knot: Knot, tmp_path: Path) -> None:
    with run_daemon(tmp_path, upstreams=(knot.addr,)) as d:
        assert "NOERROR" in dig(d.port, "www.example.test")
        assert d.stop() == 0
        assert any(e.get("event") == "stopped" for e in d.events())


def test_port_in_use_is_one_line(knot: Knot, tmp_path: Path) -> None:
    import subprocess

    from tests.support.daemon import PKDNS
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [PKDNS, "--listen", f"127.0.0.1:{port}", "--upstream", knot.addr, "--no-http",
             "--state-dir", str(tmp_path), "--dht-port", "0", "--bootstrap", "127.0.0.1:9"],
            capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "address already in use" in proc.stderr
