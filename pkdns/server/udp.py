"""DNS over UDP: the datagram protocol, with the cache-hit path inline.

``datagram_received`` first looks the query bytes (minus the ID) up in this listener's
:class:`~pkdns.dns.cache.ReplyMemo`: a query seen before in the same TTL second is answered by
one dict lookup, the ACL (a memoised dict lookup), the rate limit when on, an ID patch and
``sendto``, counted in a plain int (:mod:`pkdns.dns.tally`). Otherwise: drop obvious junk
(< 12 bytes, QR=1), ACL + rate limit, :func:`wire.scan` + :meth:`Resolver.cached` (key, patch; fills
the memo), then :meth:`Resolver.forward` (join the key's upstream fetch with a callback; only
unusual queries become a task). asyncio hands us whole datagrams, so a large EDNS query is never
cut (unlike pkdns 0.7's fixed 1024-byte buffer). Replies are sized by the resolver to the
client's EDNS payload, capped at ``dns.udp_payload_max``.

With debug logging on (``Resolver.debug``) nothing new is memoised, so every hit reaches the
path that logs its ``query`` line; with it off, the memo path has no logging test at all.

Reading: when the C module ``pkdns.server._udprecv`` is built (setup.py; Linux), the socket is
not an event-loop transport but a plain descriptor the loop watches: one wake-up reads up to
8 x 32 datagrams with ``recvmmsg`` and feeds them to ``datagram_received`` as the loop would.
When an address goes over the rate limit, the C reader drops its datagrams until the limiter
has a token for it again (:meth:`RateLimiter.refill_in`), before any Python object is made for
them: a flood from one address is shed at a fraction of the cost of answering it, so the socket
queue does not overflow and other clients keep being answered. One datagram in 32 still
reaches the limiter, which keeps answering some with an empty TC=1 (so a client whose address
a spoofer floods can still retry over TCP). Without the module, asyncio's transport does it all.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Protocol, cast

from pkdns import log
from pkdns.dns import wire
from pkdns.dns.cache import ReplyMemo
from pkdns.dns.resolver import ClientInfo, Resolver

try:
    from pkdns.server import _udprecv
    BATCHED = True
except ImportError:         # not built (no compiler, PKDNS_PURE, not Linux): the loop's transport
    BATCHED = False

_log = log.get("udp")
MAX_PENDING = 4096          # slow-path queries in progress per socket; beyond: dropped
_RCVBUF = 4 << 20
_BATCHES = 8                # recvmmsg calls per wake-up (32 datagrams each), then other work


class Sender(Protocol):
    """What the listener needs of its transport (asyncio's, or :class:`SocketSender`)."""

    def sendto(self, data: bytes, addr: Any) -> None: ...

    def is_closing(self) -> bool: ...

    def close(self) -> None: ...


class SocketSender:
    """Replies on a plain non-blocking socket (the C module's ``send``); ``close`` also stops
    the loop watching it."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.sock, self.loop, self.fd = sock, loop, sock.fileno()
        self.closed = False

    def sendto(self, data: bytes, addr: Any) -> None:
        _udprecv.send(self.fd, data, addr)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.fd)
            self.sock.close()


class UdpServer(asyncio.DatagramProtocol):
    """One UDP listening socket."""

    def __init__(self, resolver: Resolver, payload_max: int, max_pending: int = MAX_PENDING):
        self.resolver = resolver
        self.cap = payload_max
        self.max_pending = max_pending
        self.transport: Sender | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self.batched = False            # reading through the C module (attach)
        self._fd = -1
        self._drops = resolver.metrics.dropped.labels("malformed")
        self._filtered = resolver.metrics.rate_limited.labels("dns_udp")
        self.memo = ReplyMemo()
        self._send = self._reply        # one bound method for every miss's way back

    def itself(self) -> UdpServer:
        """Protocol factory for ``create_datagram_endpoint``."""
        return self

    async def attach(self, sock: socket.socket) -> None:
        """Serve on the bound UDP socket ``sock``: read in batches through the C module when
        it is built, else through the event loop's datagram transport."""
        loop = asyncio.get_running_loop()
        if not BATCHED:
            await loop.create_datagram_endpoint(self.itself, sock=sock)
            return
        sock.setblocking(False)
        _grow_rcvbuf(sock)
        self.transport = SocketSender(sock, loop)
        self.batched, self._fd = True, sock.fileno()
        loop.add_reader(self._fd, self._readable)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)   # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            _grow_rcvbuf(sock)

    def _readable(self) -> None:
        """The socket has datagrams: read batches until it is empty (or _BATCHES, so other
        work gets its turn; the loop calls again while data waits)."""
        for _ in range(_BATCHES):
            batch = _udprecv.recv_batch(self._fd)
            if batch is None:
                break
            for data, addr in batch:
                self.datagram_received(data, addr)
        shed = _udprecv.take_filtered()
        if shed:
            self._filtered.inc(shed)

    def _shed(self, ip: str, now: float) -> None:
        """``ip`` went over the rate limit: have the C reader drop its datagrams until the
        limiter has a token for it again."""
        if self.batched:
            wait = self.resolver.limiter.refill_in(ip, now)
            if wait > 0.0:
                _udprecv.block(ip, wait)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Hot path; see the module docstring. Never raises."""
        r = self.resolver
        memo = self.memo.get(data[2:])
        if memo is not None:
            now = r.now()
            if now < memo[0] and r.acl.allowed(addr[0]) and self.transport is not None:
                if r.limiter.rate:
                    early = r.over_limit(data, addr[0], "udp", now)
                    if early is not None:
                        self._shed(addr[0], now)
                        if early:
                            self.transport.sendto(early, addr)
                        return
                memo[2][0] += 1
                self.transport.sendto(data[:2] + memo[1], addr)
                return
        self._received(data, addr)

    def _received(self, data: bytes, addr: Any) -> None:
        """Everything but a memoised reply."""
        if self.closing or self.transport is None:
            return
        if len(data) < 12 or data[2] & 0x80:
            self._drops.inc()
            return
        r = self.resolver
        try:
            early = r.admit(data, addr[0], "udp")
            if early is not None:
                self._shed(addr[0], r.now())
                if early:
                    self.transport.sendto(early, addr)
                return
            scanned = wire.scan(data)
            if scanned is not None:
                reply = r.cached(data, scanned, "udp", self.cap, None if r.debug else self.memo)
                if reply is not None:
                    self.transport.sendto(reply, addr)
                    if r.debug:
                        r.log_hit(addr[0], "udp", data, scanned, reply)
                    return
                if r.forward(data, scanned, "udp", self.cap, self._send, addr[0], addr):
                    return
        except Exception:
            _log.exception("udp_fast_path_failed", client=addr[0])
            return
        if len(self.tasks) >= self.max_pending:
            r.metrics.dropped.labels("pending_cap").inc()
            return
        task = asyncio.get_running_loop().create_task(self._slow(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _slow(self, data: bytes, addr: Any) -> None:
        reply = await self.resolver.resolve_admitted(data, ClientInfo(addr[0], "udp"), self.cap)
        if reply is not None:
            self._reply(reply, addr)

    def _reply(self, reply: bytes, addr: Any) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors for earlier sends (client went away): nothing to do but note it."""
        _log.debug("udp_error", error=str(exc))

    async def drain(self, timeout: float) -> None:
        """Stop taking queries; let the ones in progress answer (bounded), then close."""
        self.closing = True
        self.memo.clear()
        waiting = set(self.tasks) | set(self.resolver.inflight())
        if waiting:
            _, pending = await asyncio.wait(waiting, timeout=timeout)
            for t in pending:
                t.cancel()
        if self.transport is not None:
            self.transport.close()


def _grow_rcvbuf(sock: Any) -> None:
    """A deeper receive queue rides out bursts (the kernel caps it at net.core.rmem_max)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
    except OSError:
        pass
