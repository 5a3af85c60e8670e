"""The DNS listeners: UDP and TCP on every ``dns.listen`` address, or on the sockets systemd
passed (socket activation); their drain on shutdown; a clear message when a port cannot be had.

One :class:`~pkdns.server.udp.UdpServer` and one :class:`~pkdns.server.tcp.TcpServer` per
address, on the same port (RFC 7766 §5: a DNS server answers over TCP where it does over UDP;
port 0 picks one port free on both).
"""

from __future__ import annotations

import asyncio
import errno
import socket

from pkdns import log
from pkdns.config import Config, DnsConfig, HostPort, format_hostport
from pkdns.dns.resolver import Resolver
from pkdns.errors import PkdnsError
from pkdns.sdnotify import ActivatedSockets
from pkdns.server import sockets
from pkdns.server.tcp import TcpServer
from pkdns.server.udp import UdpServer

_log = log.get("app")
_BIND_TRIES = 20
"""Free UDP ports tried for port 0 before giving up (each one's TCP twin may be taken)."""


class DnsListeners:
    """UDP + TCP on every ``dns.listen`` address; port 0 picks one free port for both."""

    name = "dns"

    def __init__(self, resolver: Resolver, cfg: DnsConfig,
                 activated: ActivatedSockets | None = None) -> None:
        self.resolver = resolver
        self.cfg = cfg
        self.udp: list[UdpServer] = []
        self.tcp: list[TcpServer] = []
        self.bound: list[HostPort] = []
        self.activated = activated      # sockets systemd passed (socket activation)

    live = ("dns.query_deadline",)
    """Options applied on reload (:class:`pkdns.reload.Live`): the drain's grace period."""

    def reconfigure(self, old: Config, cfg: Config) -> None:
        self.cfg = cfg.dns
        for tcp in self.tcp:
            tcp.cfg = cfg.dns

    async def start(self) -> None:
        if self.activated:
            await self._adopt(self.activated)
        else:
            for host, port in self.cfg.listen:
                await self._bind(host, port)
            for port in sockets.ipv4_missing(self.cfg.listen):
                _log.warning("ipv6_only", port=port,
                             hint=f"[::]:{port} serves IPv6 only; add --listen 0.0.0.0:{port} "
                                  f"for IPv4 clients")
        _log.info("listening", udp=[format_hostport(a) for a in self.bound],
                  tcp=[format_hostport(a) for a in self.bound])

    async def _adopt(self, passed: ActivatedSockets) -> None:
        """Serve on sockets systemd bound for us (pkdns.socket) instead of ``dns.listen``."""
        loop = asyncio.get_running_loop()
        for sock in passed.udp:
            proto = UdpServer(self.resolver, self.cfg.udp_payload_max)
            await proto.attach(sock)
            self.udp.append(proto)
            self.bound.append(sock.getsockname()[:2])
        for sock in passed.tcp:
            tcp = TcpServer(self.resolver, self.cfg)
            tcp.server = await loop.create_server(tcp.protocol, sock=sock,
                                                  backlog=sockets.BACKLOG)
            self.tcp.append(tcp)

    async def _bind(self, host: str, port: int) -> None:
        """UDP + TCP on ``(host, port)``, both made by :func:`sockets.bound_socket` (IPv6
        sockets IPv6-only on both transports); port 0: the same free port for both."""
        loop = asyncio.get_running_loop()
        for _ in range(_BIND_TRIES):
            try:
                usock = sockets.bound_socket(host, port, socket.SOCK_DGRAM)
            except OSError as exc:
                raise _bind_error(host, port, exc) from None
            actual = usock.getsockname()[1]
            try:
                tsock = sockets.bound_socket(host, actual, socket.SOCK_STREAM)
            except OSError as exc:
                usock.close()
                if port == 0 and exc.errno == errno.EADDRINUSE:
                    continue            # the UDP port's TCP twin is taken; pick another
                raise _bind_error(host, actual, exc) from None
            proto = UdpServer(self.resolver, self.cfg.udp_payload_max)
            await proto.attach(usock)
            tcp = TcpServer(self.resolver, self.cfg)
            tcp.server = await loop.create_server(tcp.protocol, sock=tsock,
                                                  backlog=sockets.BACKLOG)
            self.udp.append(proto)
            self.tcp.append(tcp)
            self.bound.append((host, actual))
            return
        raise PkdnsError(f"cannot find a free port pair on {host} for UDP+TCP")

    async def stop(self) -> None:
        grace = self.cfg.query_deadline
        await asyncio.gather(*(u.drain(grace) for u in self.udp),
                             *(t.drain(grace) for t in self.tcp))


def _bind_error(host: str, port: int, exc: OSError) -> PkdnsError:
    where = format_hostport((host, port))
    code = exc.errno or getattr(exc.__cause__, "errno", None)     # uvloop wraps the OSError
    if code == errno.EACCES:
        return PkdnsError(
            f"cannot listen on {where}: permission denied; ports below 1024 need root or "
            f"CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep), or use a high port, "
            f"e.g. --listen 127.0.0.1:5335")
    if code == errno.EADDRINUSE:
        return PkdnsError(f"cannot listen on {where}: address already in use "
                          f"(another DNS server running?); choose another --listen")
    return PkdnsError(f"cannot listen on {where}: {exc.strerror or exc}")


__all__ = ["DnsListeners"]
