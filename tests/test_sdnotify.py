"""sd_notify over a real unix datagram socket, and socket activation in a real child process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkdns import sdnotify


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2)
    try:
        yield sock, path
    finally:
        sock.close()


def test_messages_reach_the_socket(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    n = sdnotify.Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("serving on 127.0.0.1:53")
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving on 127.0.0.1:53"
    assert n.ready()
    assert sock.recv(4096) == b"READY=1"
    assert n.status("42 queries")
    assert sock.recv(4096) == b"STATUS=42 queries"
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=draining"
    assert n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert n.reloading()
    lines = sock.recv(4096).decode().split("\n")
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=")
    assert int(lines[1].split("=")[1]) > 0


def test_abstract_namespace_socket() -> None:
    name = f"pkdns-test-{os.getpid()}-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)
        assert sdnotify.Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(4096) == b"READY=1"


def test_no_socket_is_a_silent_no_op(tmp_path: Path) -> None:
    n = sdnotify.Notifier({})
    assert not n.enabled and not n.ready() and not n.stopping()
    gone = sdnotify.Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert gone.enabled and not gone.ready()


def test_watchdog_interval() -> None:
    assert sdnotify.Notifier({}).watchdog_interval is None
    n = sdnotify.Notifier({"WATCHDOG_USEC": "10000000"})
    assert n.watchdog_interval == 5.0
    mine = sdnotify.Notifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval == 2.0
    other = sdnotify.Notifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None
    assert sdnotify.Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval is None


def test_listen_fds_ignores_other_pids_and_unsets_env() -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}
    assert not sdnotify.listen_fds(env)
    assert env == {}
    assert not sdnotify.listen_fds({})
    kept = {"LISTEN_PID": "1", "LISTEN_FDS": "2"}
    sdnotify.listen_fds(kept, unset=False)
    assert kept == {"LISTEN_PID": "1", "LISTEN_FDS": "2"}


_CHILD = """
import json, os, socket
from pkdns import sdnotify
env = dict(os.environ)
got = sdnotify.listen_fds(env)
udp, tcp = got.udp[0], got.tcp[0]
udp.setblocking(True)
data, peer = udp.recvfrom(100)
udp.sendto(b"pong:" + data, peer)
tcp.setblocking(True)
conn, _ = tcp.accept()
conn.sendall(b"hello")
conn.close()
print(json.dumps({"udp": len(got.udp), "tcp": len(got.tcp), "names": got.names,
                  "left": sorted(k for k in env if k.startswith("LISTEN_"))}))
"""


def test_socket_activation_in_a_real_child() -> None:
    """Bound sockets handed over as fds 3 and 4 (as systemd does) are classified and usable."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        udp.bind(("127.0.0.1", 0))
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        u, t = udp.fileno(), tcp.fileno()
        # bash (dash rejects fds > 9); `exec` keeps the shell's pid, so LISTEN_PID=$$ names
        # the Python process.
        script = (f'LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=dns-udp:dns-tcp '
                  f'exec "$0" -c "$1" 3<&{u} 4<&{t} {u}<&- {t}<&-')
        child = subprocess.Popen(["bash", "-c", script, sys.executable, _CHILD],
                                 pass_fds=(u, t), stdout=subprocess.PIPE, text=True)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.settimeout(5)
        client.sendto(b"ping", udp.getsockname())
        assert client.recvfrom(100)[0] == b"pong:ping"
        client.close()
        with socket.create_connection(tcp.getsockname(), timeout=5) as conn:
            assert conn.recv(100) == b"hello"
        out, _ = child.communicate(timeout=10)
        assert child.returncode == 0
        assert json.loads(out) == {"udp": 1, "tcp": 1, "names": ["dns-udp", "dns-tcp"],
                                   "left": []}
    finally:
        udp.close()
        tcp.close()
