"""Listening limits of the installed daemon: a privileged port as an unprivileged user gives one
clear line, and the TCP connection cap evicts the oldest idle connection."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dns.query
import dns.rcode
import pytest

from tests.support.blackbox import closed_within, query, tcp_connect
from tests.support.daemon import PKDNS, Daemon, run_daemon
from tests.support.require import require_tool, stop
from tests.support.upstream import FakeUpstream, a_record

pytestmark = pytest.mark.slow

AS_NOBODY = ("setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups")


def _unprivileged_start() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A state dir the user ``nobody`` can write (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="pkdns-nobody-"))
    d.chmod(0o777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_privileged_port_as_unprivileged_user_is_one_line(open_dir: Path) -> None:
    if _unprivileged_start() <= 53:
        stop("net.ipv4.ip_unprivileged_port_start <= 53: port 53 is not privileged here")
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        require_tool("setpriv")
        prefix = AS_NOBODY
    proc = subprocess.run(
        [*prefix, PKDNS, "--listen", "127.0.0.1:53", "--upstream", "127.0.0.1:9", "--no-http",
         "--state-dir", str(open_dir / "state"), "--dht-port", "0",
         "--bootstrap", "127.0.0.1:9"],
        capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("pkdns: error: cannot listen on 127.0.0.1:53: permission denied")
    assert "CAP_NET_BIND_SERVICE" in err and "--listen 127.0.0.1:5335" in err   # not mDNS
    assert "Traceback" not in proc.stdout + proc.stderr


CAP = 16


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    cfg = (f"[dns]\nrate_limit = 0.0\ntcp_max_connections = {CAP}\n"
           "tcp_initial_timeout = 30.0\ntcp_idle_timeout = 30.0\n")
    with FakeUpstream(a_record("192.0.2.1")) as up, \
            run_daemon(tmp_path_factory.mktemp("cap"), upstreams=(up.addr,), config=cfg) as d:
        yield d


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_tcp_total_cap_evicts_oldest_idle(daemon: Daemon) -> None:
    dns.query.tcp(query("warm.example.test"), "127.0.0.1", port=daemon.port, timeout=3)
    base = _fds(daemon.proc.pid)
    conns = [tcp_connect(daemon.port, f"127.0.0.{10 + i}") for i in range(40)]
    try:
        time.sleep(0.3)
        assert daemon.proc.poll() is None
        assert _fds(daemon.proc.pid) <= base + CAP
        closed = [closed_within(c, 0.05) for c in conns]
        assert sum(closed) >= 40 - CAP and not any(closed[-CAP + 1:])   # the oldest went
        r = dns.query.tcp(query("new-client.example.test"), "127.0.0.1", port=daemon.port,
                          timeout=3, source="127.0.0.200")     # served, not stuck behind them
        assert r.rcode() == dns.rcode.NOERROR and r.answer
    finally:
        for c in conns:
            c.close()
    assert not [e for e in daemon.events() if e.get("level") == "error"]
