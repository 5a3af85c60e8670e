"""A TCP client that pipelines queries and never reads its answers, against the installed
daemon (RFC 7766 §6.2.3): what the server queues for it stays bounded, and the connection ends
in a reset, not in a FIN-WAIT-1 orphan that keeps megabytes of unsent answers for minutes;
also when the client half-closed its side after its queries."""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from pathlib import Path

import dns.message
import pytest

from tests.support.blackbox import dig
from tests.support.daemon import run_daemon
from tests.support.require import require_tool
from tests.support.upstream import FakeUpstream, Handler, Reply, answer

pytestmark = pytest.mark.slow

TXT = " ".join(f'"{k:02d}{"x" * 170}"' for k in range(5))       # ~900-byte answers
QUEUE_BOUND = 400 << 10     # kernel send queue (SO_SNDBUF) + user-space high-water mark, with room


def big_txt() -> Handler:
    def handle(data: bytes, _t: str) -> Reply:
        name = dns.message.from_wire(data).question[0].name
        return answer(data, f"{name} 300 IN TXT {TXT}")
    return handle


def server_sockets(port: int) -> list[tuple[str, int]]:
    """(state, Send-Q) of every connection whose local port is ``port`` (the server side)."""
    ss = require_tool("ss")
    out = subprocess.run([ss, "-tnH", "state", "all", "exclude", "listening",
                          f"( sport = :{port} )"], capture_output=True, text=True, timeout=5)
    rows = [line.split() for line in out.stdout.splitlines() if line.strip()]
    return [(r[0], int(r[2])) for r in rows]


BATCH = 7000       # ~6.3 MB of answers; the old code read them all, then closed with a FIN


@pytest.mark.parametrize("half_close", [False, True], ids=["open", "half-closed"])
def test_client_that_never_reads_is_bounded_and_reset(tmp_path: Path, half_close: bool) -> None:
    cfg = "[dns]\nrate_limit = 0.0\ntcp_idle_timeout = 1.0\ntcp_initial_timeout = 2.0\n"
    with FakeUpstream(big_txt()) as up, \
            run_daemon(tmp_path, upstreams=(up.addr,), config=cfg) as d:
        assert "status: NOERROR" in dig(d.port, "big.example.test", "TXT")   # now cached
        q = dns.message.make_query("big.example.test", "TXT").to_wire()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)
        s.connect(("127.0.0.1", d.port))
        try:
            s.sendall((struct.pack(">H", len(q)) + q) * BATCH)
            if half_close:          # RFC 7766 §6.2.4: answered, then closed, yet never read
                s.shutdown(socket.SHUT_WR)
            peak, states, reset = 0, set(), False
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                rows = server_sockets(d.port)
                peak = max([peak] + [q for _, q in rows])
                states |= {st.lower() for st, _ in rows}
                if not rows:
                    break
                time.sleep(0.05)
            leftover = server_sockets(d.port)
            s.setblocking(True)
            s.settimeout(2.0)
            try:
                while s.recv(1 << 20):
                    pass
            except ConnectionResetError:
                reset = True
        finally:
            s.close()
        assert d.proc.poll() is None
    assert peak <= QUEUE_BOUND, (peak, states)
    assert leftover == [] and "fin-wait-1" not in states, (leftover, states)
    assert reset                             # cut off with RST: nothing left queued
