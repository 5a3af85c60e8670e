"""DNS over UDP: the datagram listener in front of the resolver's door.

Every datagram goes to :meth:`Resolver.handle <pkdns.dns.door.Door.handle>` with this
listener's :class:`~pkdns.dns.door.Port`: the door answers cache hits at once (the port's
:class:`~pkdns.dns.cache.ReplyMemo` makes a repeated query one dict lookup), joins misses to
their upstream fetch with a callback that replies through :meth:`UdpServer._reply`, and hands
the rest to the slow path as a job this listener runs as a task (at most ``max_pending`` at
once; beyond, dropped). asyncio hands us whole datagrams, so a large EDNS query is never cut
(unlike pkdns 0.7's fixed 1024-byte buffer). Replies are sized by the door to the client's EDNS
payload, capped at ``dns.udp_payload_max``.

Reading: when the C module ``pkdns.server._udprecv`` is built (setup.py; Linux), the socket is
not an event-loop transport but a plain descriptor the loop watches: one wake-up reads up to
8 x 32 datagrams with ``recvmmsg`` and hands each batch to :meth:`Door.serve
<pkdns.dns.door.Door.serve>` (compiled), which replies through the C module's ``send``. When an
address goes over the rate limit, the door has the C reader drop its datagrams until the
limiter has a token for it again (the port's ``shed`` hook), before any Python object is made
for them: a flood from one address is shed at a fraction of the cost of answering it, so the
socket queue does not overflow and other clients keep being answered. One datagram in 32 still
reaches the limiter, which keeps answering some with an empty TC=1 (so a client whose address a
spoofer floods can still retry over TCP). Without the module, asyncio's transport does it all.
"""

from __future__ import annotations

import asyncio
import socket
from functools import partial
from typing import Any, Protocol, cast

from pkdns import log
from pkdns.dns.cache import ReplyMemo
from pkdns.dns.door import Job, Port
from pkdns.dns.resolver import Resolver

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
        self.handle = resolver.handle
        self.max_pending = max_pending
        self.transport: Sender | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self.batched = False            # reading through the C module (attach)
        self._fd = -1
        self._filtered = resolver.metrics.rate_limited.labels("dns_udp")
        self._pending_cap = resolver.metrics.dropped.labels("pending_cap")
        self.memo = ReplyMemo()
        self.port = Port("udp", payload_max, self._reply, self._start, self.memo)

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
        self.port.shed = _udprecv.block
        serve, port, send = self.resolver.door.serve, self.port, partial(_udprecv.send, self._fd)
        recv, fd = _udprecv.recv_batch, self._fd

        def readable() -> None:
            """The socket has datagrams: read batches until it is empty (or _BATCHES, so
            other work gets its turn; the loop calls again while data waits)."""
            for _ in range(_BATCHES):
                batch = recv(fd)
                if batch is None:
                    break
                if not self.closing:
                    serve(batch, port, send)
            shed = _udprecv.take_filtered()
            if shed:
                self._filtered.inc(shed)

        loop.add_reader(self._fd, readable)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)   # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            _grow_rcvbuf(sock)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """One datagram from the event loop's transport (or a test): the door's reply now."""
        if self.closing or self.transport is None:
            return
        reply = self.handle(data, addr[0], self.port, addr)
        if reply is not None:
            self.transport.sendto(reply, addr)

    def _start(self, job: Job) -> bool:
        """Run a slow-path job as this listener's task (False beyond ``max_pending``)."""
        if len(self.tasks) >= self.max_pending:
            self._pending_cap.inc()
            job.close()
            return False
        task = asyncio.get_running_loop().create_task(job)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    def _reply(self, reply: bytes, addr: Any) -> None:
        """A later answer (miss or slow path): sent unless the listener is closed."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors for earlier sends (client went away): nothing to do but note it."""
        _log.debug("udp_error", error=str(exc))

    async def drain(self, timeout: float) -> None:
        """Stop taking queries; give the ones taken up to ``timeout`` to be answered, then
        close.

        Only this listener's own work is waited for and ended: ``port.held`` counts its
        answers still to come (its slow-path tasks and its waiters on upstream fetches). A
        fetch is shared with the other transports (a TCP or DoH query for the same name
        waits on it too), so it is never cancelled here: when the deadline passes, this
        listener cancels its own tasks and stops listening, and what a fetch still delivers
        to it is dropped (the socket is closed). The fetches left are ended by the daemon's
        final stop (:meth:`Resolver.close <pkdns.dns.resolver.Resolver.close>`)."""
        self.closing = True
        self.memo.clear()
        if self.port.held:
            idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.port.send = partial(self._reply_draining, idle)   # the hot path stays as is
            try:
                await asyncio.wait_for(idle, timeout)
            except TimeoutError:
                pass
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.transport is not None:
            self.transport.close()

    def _reply_draining(self, idle: asyncio.Future[None], reply: bytes, addr: Any) -> None:
        """:meth:`_reply` while draining: also tell :meth:`drain` when the last is out."""
        self._reply(reply, addr)
        if not self.port.held and not idle.done():
            idle.set_result(None)


def _grow_rcvbuf(sock: Any) -> None:
    """A deeper receive queue rides out bursts (the kernel caps it at net.core.rmem_max)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
    except OSError:
        pass
