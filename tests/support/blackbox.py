"""Helpers for black-box tests of the running daemon: the knotd zone, dig/kdig, raw sockets."""

from __future__ import annotations

import socket
import struct
import subprocess

import dns.message

ZONE = """$ORIGIN example.test.
$TTL 300
@    IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 60
@    IN NS  ns
ns   IN A   127.0.0.1
www  IN A   192.0.2.1
www  IN AAAA 2001:db8::1
alias IN CNAME www
""" + "".join(f'big IN TXT "{k:02d}{"x" * 200}"\n' for k in range(8))


def dig(port: int, *args: str, tool: str = "dig") -> str:
    """Run dig/kdig against the daemon; its stdout."""
    cmd = [tool, "@127.0.0.1", "-p", str(port), *args]
    cmd += ["+tries=1", "+time=3"] if tool == "dig" else ["+retry=0", "+timeout=3"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=15).stdout


def udp(port: int, data: bytes, timeout: float = 1.0, source: str = "127.0.0.1") -> bytes | None:
    """Send one datagram; the reply or None after ``timeout``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(timeout)
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def tcp_connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    return s


def framed(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def read_framed(s: socket.socket) -> bytes:
    head = _exact(s, 2)
    return _exact(s, struct.unpack(">H", head)[0])


def _exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def query(name: str = "www.example.test", rdtype: str = "A", **kw: object) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]


def closed_within(s: socket.socket, seconds: float) -> bool:
    """Does the server close ``s`` within ``seconds`` (reading and discarding replies)?"""
    s.settimeout(seconds)
    try:
        while s.recv(65535):
            pass
        return True
    except TimeoutError:
        return False
    except OSError:
        return True
