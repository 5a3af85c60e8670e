"""DNS over TCP (RFC 7766, RFC 9210): pipelining, timeouts, connection caps.

Each connection reads 2-byte length-prefixed messages. Every message is answered as soon as it
is ready, so a slow query never holds back a fast one behind it (RFC 7766 §6.2.1.1; cache hits
are answered inline). Abuse handling (the cases
of Knot Resolver's ``tests/pytests/test_conn_mgmt.py`` and ``test_prefix.py``):

* prefix 0 -> close at once; the buffer never holds more than one 65535-byte message;
* the first message must arrive within ``tcp_initial_timeout``, later ones within
  ``tcp_idle_timeout`` of the last complete message or reply; partial bytes do not reset the
  clock (slowloris), and a lying prefix waits out the same timer;
* at most :data:`PIPELINE_MAX` queries in progress per connection, counting both the
  coroutines of the slow path and the callbacks of the miss fast path (reading and framing
  pause beyond, so one connection holds at most that many of ``dns.max_inflight``);
* what one connection may queue is bounded (RFC 7766 §6.2.3): the kernel queues by
  ``SO_SNDBUF``/``SO_RCVBUF`` (:data:`pkdns.server.sockets.SOCKET_BUFFER`); above
  :data:`WRITE_HIGH` bytes of answers waiting in user space, reading and framing pause until
  the client reads (backpressure), and a client that never reads is cut off once
  :data:`WRITE_BUFFER_MAX` bytes are queued or when the idle timer runs out with
  nothing sent;
* a connection cut off with answers still unsent ends in a reset (``SO_LINGER {1, 0}``), not
  a FIN: a graceful close would leave those bytes queued in a FIN-WAIT-1 orphan for minutes,
  outside every cap here; a connection with nothing left to send closes with a FIN;
* at most ``tcp_max_per_ip`` connections per client IP (new ones are closed) and
  ``tcp_max_connections`` in all: then the oldest idle connection (no query in progress) is
  evicted, or the new one closed when none is idle;
* a half-close (EOF) is answered like RFC 7766 §6.2.4 asks: every query received before it
  gets its answer, then the connection closes once the client has them all (or is reset by
  the idle timer if it never reads them);
* a drain (shutdown) stops accepting and reading at once, then treats every connection as
  half-closed: the queries it took are answered, and it closes with a FIN once the client
  has them; what is left when the grace runs out is closed as above.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, cast

from pkdns import log
from pkdns.config import DnsConfig
from pkdns.dns.door import Job, Port
from pkdns.dns.resolver import STREAM_MAX, Resolver
from pkdns.server import sockets

_log = log.get("tcp")
PIPELINE_MAX = 64
WRITE_HIGH = 64 << 10       # answers queued in user space: stop reading above this...
WRITE_LOW = 16 << 10        # ... and read again below this
WRITE_BUFFER_MAX = 512 << 10
_FINISH_POLL = 0.05         # after a half-close: how often to look whether the client has read


class TcpServer:
    """Connection bookkeeping shared by every connection of one listener."""

    def __init__(self, resolver: Resolver, cfg: DnsConfig) -> None:
        self.resolver = resolver
        self.cfg = cfg
        self.conns: dict[TcpConnection, None] = {}    # insertion order = age
        self.per_ip: Counter[str] = Counter()
        self.server: asyncio.Server | None = None
        self.drained: asyncio.Future[None] | None = None   # set by drain: no connection left

    def protocol(self) -> TcpConnection:
        return TcpConnection(self)

    def admit(self, conn: TcpConnection) -> bool:
        """Register ``conn`` if the caps allow (evicting the oldest idle one if needed)."""
        if self.per_ip[conn.ip] >= self.cfg.tcp_max_per_ip:
            self.resolver.metrics.dropped.labels("tcp_per_ip_cap").inc()
            return False
        if len(self.conns) >= self.cfg.tcp_max_connections:
            idle = next((c for c in self.conns if not c.busy()), None)
            if idle is None:
                self.resolver.metrics.dropped.labels("tcp_cap").inc()
                return False
            idle.close()
        self.conns[conn] = None
        self.per_ip[conn.ip] += 1
        return True

    def forget(self, conn: TcpConnection) -> None:
        if self.conns.pop(conn, 0) is None:
            self.per_ip[conn.ip] -= 1
            if self.per_ip[conn.ip] <= 0:
                del self.per_ip[conn.ip]
        if not self.conns and self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    async def drain(self, timeout: float) -> None:
        """Stop accepting and reading; answer the queries taken, each connection closing with
        a FIN once its client has every answer; at ``timeout``, close the rest.

        Only this listener's own queries are waited for (its connections' answers still to
        come); an upstream fetch they wait on is shared with the other transports and is
        never ended here (the daemon's final stop ends the ones left). No query is read
        once the drain began, so the queries waited for are the ones in progress then: the
        door answers each within ``dns.query_deadline``, the grace the daemon gives."""
        if self.server is not None:
            self.server.close()
        if self.conns:
            self.drained = asyncio.get_running_loop().create_future()
            for c in list(self.conns):
                c.drain()
            try:
                await asyncio.wait_for(self.drained, timeout)
            except TimeoutError:
                pass
        for c in list(self.conns):
            c.close()
        if self.server is not None:
            await self.server.wait_closed()


class TcpConnection(asyncio.Protocol):
    """One client connection; see the module docstring."""

    def __init__(self, server: TcpServer) -> None:
        self.server = server
        self.resolver = server.resolver
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.ip = ""
        self.buf = bytearray()
        self.handle = server.resolver.handle
        self.port = Port("tcp", STREAM_MAX, self._later, self._start)
        self.tasks: set[asyncio.Task[None]] = set()     # slow-path jobs of this connection
        self.messages = 0
        self.last_activity = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.paused = False         # the pipeline is full
        self.blocked = False        # the client does not read its answers (pause_writing)
        self.eof = False
        self.finishing = False
        self.draining = False       # the listener drains: what arrives is dropped

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)   # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self.ip = peer[0] if peer else "?"
        if not self.server.admit(self):
            self.close()
            self.transport = None
            return
        sockets.bound_queues(transport.get_extra_info("socket"))   # socket activation too
        self.transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        self.last_activity = self.loop.time()
        self._arm(self.server.cfg.tcp_initial_timeout)

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.draining:
            return
        self.buf += data
        try:
            self._frames()
        except Exception:
            _log.exception("tcp_frame_failed", client=self.ip)
            self.close()

    def busy(self) -> bool:
        """Is a query of this connection in progress (slow path or waiting for a fetch)?"""
        return self.port.held > 0

    def _frames(self) -> None:
        buf = self.buf
        while len(buf) >= 2 and self.transport is not None and not self.paused \
                and not self.blocked:
            size = (buf[0] << 8) | buf[1]
            if size == 0:
                self.close()
                return
            if len(buf) < size + 2:
                return
            msg = bytes(buf[2:size + 2])
            del buf[:size + 2]
            self.messages += 1
            self.last_activity = self.loop.time()
            self._query(msg)

    def _query(self, msg: bytes) -> None:
        reply = self.handle(msg, self.ip, self.port, None)
        if reply is not None:
            self._send(reply)
        elif self.port.held:
            self._limit()

    def _limit(self) -> None:
        """Stop reading and framing while :data:`PIPELINE_MAX` queries are in progress."""
        if self.port.held >= PIPELINE_MAX and self.transport is not None:
            if not (self.paused or self.blocked or self.eof):
                self.transport.pause_reading()
            self.paused = True

    def pause_writing(self) -> None:
        """The transport holds more than :data:`WRITE_HIGH` unsent bytes: the client is not
        reading, so stop reading its queries (they would only queue more answers)."""
        if self.transport is not None and not (self.paused or self.blocked or self.eof):
            self.transport.pause_reading()
        self.blocked = True

    def resume_writing(self) -> None:
        """The client read its answers down to :data:`WRITE_LOW`: go on with its queries."""
        self.blocked = False
        self.paused = True      # reading is paused: _resume resumes it when the pipeline allows
        self.loop.call_soon(self._resume)

    def _start(self, job: Job) -> bool:
        """Run a slow-path job as this connection's task (cancelled when it closes)."""
        task = self.loop.create_task(job)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    def _later(self, reply: bytes, _dest: object = None) -> None:
        """An answer that was not ready at once (maybe given from inside ``handle``)."""
        self._send(reply)
        self._settled()

    def _settled(self) -> None:
        """One query fewer in progress: close after EOF when none is left; resume reading."""
        t = self.transport
        if t is None:
            return
        if (self.eof or self.draining) and not self.busy() and not self.paused \
                and not self._whole_frame():
            self._finish()
        elif self.paused and self.port.held < PIPELINE_MAX // 2:
            self.loop.call_soon(self._resume)

    def _whole_frame(self) -> bool:
        """Is a complete message still buffered (being framed right now)?"""
        buf = self.buf
        return len(buf) >= 2 and len(buf) >= ((buf[0] << 8) | buf[1]) + 2

    def _resume(self) -> None:
        """Frame what was buffered while paused, then read again (a callback of its own, so
        an answer delivered from inside the door's ``handle`` never re-enters :meth:`_frames`)."""
        if (not self.paused or self.transport is None or self.blocked
                or self.port.held >= PIPELINE_MAX // 2):
            return
        self.paused = False
        if not self.eof:
            self.transport.resume_reading()
        try:
            self._frames()
        except Exception:
            _log.exception("tcp_frame_failed", client=self.ip)
            self.close()
            return
        self._settled()

    def _send(self, reply: bytes) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        t.write(len(reply).to_bytes(2, "big") + reply)
        self.last_activity = self.loop.time()
        if t.get_write_buffer_size() > WRITE_BUFFER_MAX:
            _log.debug("tcp_client_not_reading", client=self.ip)
            self.close()

    def _arm(self, delay: float) -> None:
        self.timer = self.loop.call_later(delay, self._check_idle)

    def _check_idle(self) -> None:
        if self.transport is None:
            return
        cfg = self.server.cfg
        limit = cfg.tcp_idle_timeout if self.messages else cfg.tcp_initial_timeout
        left = self.last_activity + limit - self.loop.time()
        if left <= 0 and not self.busy():
            self.close()
        else:
            self._arm(max(left, 0.05))

    def _finish(self) -> None:
        """After a half-close, every answer given: close with a FIN once the client has them
        all; until then look again every :data:`_FINISH_POLL` s (the idle timer resets a
        client that never reads them, instead of leaving them to an orphan)."""
        t = self.transport
        if t is None:
            return
        if t.get_write_buffer_size() or sockets.unsent(t.get_extra_info("socket")):
            if not self.finishing:
                self.finishing = True
                self.loop.call_later(_FINISH_POLL, self._finish_again)
            return
        t.close()

    def _finish_again(self) -> None:
        self.finishing = False
        self._finish()

    def close(self) -> None:
        """End the connection now (pending answers are cancelled): a FIN when nothing is left
        to send, else a reset, so no unsent answer outlives the connection (module docstring)."""
        t = self.transport
        if t is None:
            return
        sock = t.get_extra_info("socket")
        if sock is not None and (t.get_write_buffer_size() or sockets.unsent(sock)):
            sockets.reset_on_close(sock)
        t.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        self.transport = None
        if self.timer is not None:
            self.timer.cancel()
        for t in self.tasks:
            t.cancel()

    def drain(self) -> None:
        """The listener drains: take no more queries (what arrives is read and dropped, so
        the close is a FIN and not the reset that unread bytes would cause), answer the ones
        in progress, then close once the client has them all, as after a half-close."""
        t = self.transport
        if t is None:
            return
        self.draining = True
        self.buf.clear()
        if self.paused and not self.blocked and not self.eof:
            t.resume_reading()
        self.paused = False
        if not self.busy():
            self._finish()

    def eof_received(self) -> Any:
        """Half-close: finish answering what was asked, then close (RFC 7766 §6.2.4).

        Queries still buffered because of the pipeline limit are answered too.
        """
        self.eof = True
        if not self.busy() and not self.paused and not self.blocked and not self._whole_frame():
            self._finish()
        return True
