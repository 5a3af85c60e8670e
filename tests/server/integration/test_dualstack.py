"""Dual-stack listening with the installed daemon and dig: ``0.0.0.0:P`` and ``[::]:P`` start
together in either order, and each address family is served over UDP and TCP alike
(``[::]:P`` is IPv6-only on both transports, so an IPv4 client told TC=1 never finds UDP
answered and TCP refused)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import run_daemon
from tests.support.require import require_tool
from tests.support.upstream import FakeUpstream, a_record

pytestmark = pytest.mark.slow


def _free_port() -> int:
    """A port free for UDP and TCP on IPv4 and IPv6 right now (dual-stack probes)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as u, \
                socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as t:
            u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            u.bind(("::", 0))
            port = int(u.getsockname()[1])
            try:
                t.bind(("::", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free on both transports")


def _dig(server: str, port: int, tcp: bool) -> str:
    dig = require_tool("dig")
    cmd = [dig, f"@{server}", "-p", str(port), "+tries=1", "+time=2", "+short",
           "+tcp" if tcp else "+notcp", "dual.example.test", "A"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()


def _served(port: int) -> dict[tuple[str, bool], bool]:
    """(server address, over TCP) -> did dig get the answer."""
    return {(s, tcp): _dig(s, port, tcp) == "192.0.2.7"
            for s in ("127.0.0.1", "::1") for tcp in (False, True)}


@pytest.mark.parametrize("order", [("0.0.0.0", "[::]"), ("[::]", "0.0.0.0")])
def test_both_wildcards_start_in_either_order(tmp_path: Path, order: tuple[str, str]) -> None:
    port = _free_port()
    args = [a for host in order for a in ("--listen", f"{host}:{port}")]
    with FakeUpstream(a_record("192.0.2.7")) as up, \
            run_daemon(tmp_path, *args, upstreams=(up.addr,)) as d:
        served = _served(port)
        assert d.proc.poll() is None
    assert all(served.values()), served


def test_v6_wildcard_alone_is_v6_only_on_both_transports(tmp_path: Path) -> None:
    port = _free_port()
    with FakeUpstream(a_record("192.0.2.7")) as up, \
            run_daemon(tmp_path, "--listen", f"[::]:{port}", upstreams=(up.addr,)) as d:
        served = _served(port)
        hints = [e for e in d.events() if e.get("event") == "ipv6_only"]
    assert served == {("::1", False): True, ("::1", True): True,
                      ("127.0.0.1", False): False, ("127.0.0.1", True): False}
    assert [e["port"] for e in hints] == [port]
