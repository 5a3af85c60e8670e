"""Listening sockets made by hand, so both transports of one address behave alike.

Why not let the event loop bind: asyncio (and uvloop) set ``IPV6_V6ONLY`` on a TCP server
socket but leave a UDP socket to the system default (``net.ipv6.bindv6only``, 0 on Linux), so
``[::]:53`` used to take IPv4 over UDP and not over TCP: an IPv4 client told TC=1 could not
retry, and ``0.0.0.0:53`` next to ``[::]:53`` failed with "address already in use" in either
order (the dual-stack UDP socket already held the IPv4 port).

Every IPv6 socket here, UDP and TCP, is **IPv6-only** (``IPV6_V6ONLY=1``), as BIND, unbound and
nginx do: ``[::]:P`` serves IPv6 only, on both transports, and ``0.0.0.0:P`` next to it serves
IPv4, in any order. The HTTP listener's sockets (``socket.create_server``) are IPv6-only too.
Sockets systemd passes (socket activation) were bound by systemd: ``BindIPv6Only=`` in the
unit decides for them, and it applies to UDP and TCP alike.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
import termios
from typing import Any

BACKLOG = 1024


def family_of(host: str) -> socket.AddressFamily:
    """IPv6 for an address with a colon (the listen addresses are IP literals)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bound_socket(host: str, port: int, kind: socket.SocketKind) -> socket.socket:
    """A non-blocking UDP or TCP socket bound to ``(host, port)``; TCP is also listening.

    IPv6 sockets are IPv6-only (module docstring). TCP gets ``SO_REUSEADDR`` so a restart
    does not wait out TIME_WAIT connections of the previous process (UDP does not: two daemons
    on one UDP port would split the queries between them) and bounded kernel queues.
    """
    family = family_of(host)
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            bound_queues(sock)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def ipv4_missing(listen: tuple[tuple[str, int], ...]) -> list[int]:
    """Ports listed only on the IPv6 wildcard ``::`` (no IPv4 address on that port), which
    therefore serve no IPv4 client: worth a line in the log, since ``[::]`` took IPv4 over
    UDP before."""
    v4_ports = {p for h, p in listen if family_of(h) == socket.AF_INET}
    return sorted({p for h, p in listen if _v6_wildcard(h) and p not in v4_ports})


def _v6_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]) == ipaddress.IPv6Address(0)
    except ValueError:
        return False


# ---------------------------------------------------------------- accepted TCP connections

SOCKET_BUFFER = 64 << 10
"""``SO_SNDBUF`` and ``SO_RCVBUF`` of every DNS TCP connection (Linux doubles them for its
bookkeeping). Left to autotuning, the kernel grows a connection's send queue up to
``tcp_wmem`` max (4 MB here) for a client that does not read its answers, and its receive
queue up to ``tcp_rmem`` max for a client that keeps sending queries we no longer read: every
such connection pinned megabytes. 64 KiB holds a full-size DNS message and keeps pipelined
answers flowing on a LAN or an intercontinental path."""


def bound_queues(sock: Any) -> None:
    """Cap the kernel send and receive queues of a TCP socket (:data:`SOCKET_BUFFER`); on a
    listening socket, before ``listen``, connections inherit it from the SYN on."""
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        except OSError:
            pass


def unsent(sock: Any) -> int:
    """Bytes the kernel still holds for the peer (not sent, or sent and not acknowledged)."""
    try:
        out = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("i", out)[0])


def reset_on_close(sock: Any) -> None:
    """``SO_LINGER {1, 0}``: the next close sends RST and frees the send queue at once.

    A plain close of a connection whose peer does not read leaves the unsent bytes in a
    FIN-WAIT-1 orphan for minutes (the kernel keeps probing a zero window), outside every
    per-connection cap of ours.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
