"""Asking the ICANN upstreams: RFC 5452 hygiene, failover, TCP when truncated.

Every upstream attempt uses a fresh connected UDP socket (so a fresh kernel-chosen random
source port) and a fresh random 16-bit ID from the system CSPRNG (RFC 5452 §9.1). Because the
socket is connected, the kernel delivers only datagrams from the address and port we asked; a
reply is further accepted only with our ID, QR=1 and our exact question.
Anything else is counted as unwanted and ignored while we keep waiting: forged packets never
mark an upstream down (PowerDNS advisory 2023-02).

Failover: upstreams are tried in order, starting with the last one that answered; a timeout
(``upstream_timeout``) moves to the next, cycling until the deadline. ICMP port-unreachable
(ECONNREFUSED on the connected socket) takes that upstream out for this query at once. An
error rcode (SERVFAIL/REFUSED/NOTIMP/FORMERR) counts as one failed try of that upstream; when
every upstream has failed that way the query fails (the client gets SERVFAIL,
:mod:`pkdns.dns.fetch`). A FORMERR to a query with our OPT is asked once more of the same
upstream without it (Unbound ``fwd_no_edns``). A TC=1 reply is re-asked over TCP (Unbound
``fwd_tcp_tc``), within the deadline.
Coalescing of identical questions happens one level up (:mod:`pkdns.dns.fetch`).

Upstream health: after :data:`DOWN_AFTER` attempts in a row got no reply at
all (timeout, ICMP refused, network error), an upstream is down: it gets one query as a probe
after 1 s, then after 2, 4, 8 s (:class:`Health`), and in between no query at all, so a dead
upstream sees at most one query per second from us; with no usable upstream a query fails at
once (serve-stale still answers names that were cached). Any reply, even an error rcode, brings
it back. Forged datagrams count neither way.

The exchange itself is a callback state machine (:mod:`pkdns.dns.exchange`): no task or
future per query; :meth:`Forwarder.exchange` wraps it for coroutines.
"""

from __future__ import annotations

import asyncio
import os
import random
import struct
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from functools import partial

from pkdns import log
from pkdns.config import HostPort, format_hostport
from pkdns.dns import wire
from pkdns.dns.exchange import Exchange, matches
from pkdns.dns.sockpoll import SocketPoller, recv
from pkdns.errors import UpstreamError
from pkdns.metrics import Metrics

_log = log.get("forwarder")
DOWN_AFTER = 8          # attempts in a row without a reply before an upstream counts as down
PROBE_FIRST = 1.0       # seconds from "down" to the first probe; doubled after each failed one
PROBE_MAX = 8.0


class Health:
    """Which upstreams answer at all; pure (callers pass ``now``). See the module docstring.

    ``silent`` counts attempts in a row without a reply, per upstream; ``down`` maps a down
    upstream to the time of its next probe. Both are usually empty, so the exchange's checks
    (``if health.silent``, ``if health.down``) cost one truth test.
    """

    def __init__(self) -> None:
        self.silent: dict[HostPort, int] = {}
        self.down: dict[HostPort, float] = {}
        self._backoff: dict[HostPort, float] = {}

    def no_reply(self, addr: HostPort, now: float) -> None:
        """An attempt to ``addr`` timed out, was refused or could not be sent."""
        n = self.silent[addr] = self.silent.get(addr, 0) + 1
        if n >= DOWN_AFTER and addr not in self.down:
            self._backoff[addr] = PROBE_FIRST
            self.down[addr] = now + PROBE_FIRST
            _log.warning("upstream_down", upstream=format_hostport(addr), attempts=n)

    def replied(self, addr: HostPort) -> None:
        """``addr`` answered (any rcode): it is up."""
        self.silent.pop(addr, None)
        if self.down.pop(addr, None) is not None:
            self._backoff.pop(addr, None)
            _log.info("upstream_up", upstream=format_hostport(addr))

    def may_use(self, addr: HostPort, now: float) -> bool:
        """May a query go to ``addr`` now? For a down upstream, True once per probe time
        (and the next probe is then set, the wait doubled up to :data:`PROBE_MAX`)."""
        until = self.down.get(addr)
        if until is None:
            return True
        if now < until:
            return False
        wait = self._backoff[addr] = min(self._backoff[addr] * 2, PROBE_MAX)
        self.down[addr] = now + wait
        return True


class Forwarder:
    """Sends questions to the configured upstreams; see the module docstring.

    Attempts overlap: a new one (fresh port and ID, next upstream) starts every
    ``attempt_timeout``, but earlier sockets stay open until the deadline, so a slow upstream's
    late reply is still taken (Unbound ``discard-timeout`` semantics).
    """

    def __init__(self, upstreams: tuple[HostPort, ...], attempt_timeout: float,
                 metrics: Metrics | None = None, rng: random.Random | None = None) -> None:
        self.upstreams = upstreams
        self.attempt_timeout = attempt_timeout
        self.metrics = metrics
        self.rng = rng
        self.preferred = 0
        self.sent = 0
        self.health = Health()
        self._ids = b""
        self._id_at = 0                 # IDs left in _ids: its first _id_at bytes
        self._poller: SocketPoller | None = None

    def new_id(self) -> int:
        """A query ID from the system CSPRNG (RFC 5452 §9.1), read 2 KiB at a time."""
        if self.rng is not None:
            return self.rng.getrandbits(16)
        i = self._id_at
        if i <= 0:
            self._ids, i = os.urandom(2048), 2048
        self._id_at = i - 2
        return (self._ids[i - 2] << 8) | self._ids[i - 1]

    def poller(self) -> SocketPoller:
        """The socket poller of the running loop (made again when the loop changes).

        Cached because ``asyncio.get_running_loop()`` makes a getpid() system call each time
        on Python 3.11; a running cached loop is necessarily the current one (one per thread).
        """
        poller = self._poller
        if poller is None or not poller.loop.is_running():
            if poller is not None:
                poller.close()
            poller = self._poller = SocketPoller(asyncio.get_running_loop())
        return poller

    def start(self, question: bytes, do: bool, cd: bool, deadline: float,
              on_done: Callable[[bytes | None], None]) -> Exchange:
        """Begin an exchange for ``question`` (lowercased wire qname + qtype + qclass).

        ``deadline`` is in loop time. ``on_done(reply)`` is called exactly once, from the event
        loop: a usable reply, the last error-rcode reply when every upstream answered with
        one, or None. ``.cancel()`` on the result stops it without a call.
        """
        ex = Exchange(self, self.poller(), question, do, cd, deadline, on_done)
        ex.advance()
        return ex

    async def exchange(self, question: bytes, do: bool, cd: bool, deadline: float) -> bytes:
        """:meth:`start` as a coroutine; raises UpstreamError when no upstream answered."""
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        ex = self.start(question, do, cd, deadline, partial(_settle, fut))
        try:
            reply = await fut
        finally:
            ex.cancel()
        if reply is None:
            raise UpstreamError("no upstream answered in time")
        return reply

    def pick(self, tries: int, out: AbstractSet[int], now: float) -> int:
        """The upstream for attempt number ``tries``: round the list from the preferred one,
        skipping those in ``out`` and those down (unless due a probe); -1 if none is left."""
        n = len(self.upstreams)
        health = self.health
        for k in range(n):
            idx = (self.preferred + tries + k) % n
            if idx not in out and (not health.down or health.may_use(self.upstreams[idx], now)):
                return idx
        return -1

    def fail(self, addr: HostPort, reason: str) -> None:
        """Count one failed attempt (or an unwanted datagram) against ``addr``."""
        if self.metrics is not None:
            self.metrics.upstream_failures.labels(format_hostport(addr), reason).inc()

    async def udp(self, addr: HostPort, packet: bytes, qid: int, question: bytes,
                  timeout: float) -> bytes:
        """One UDP exchange on a fresh connected socket (fresh source port)."""
        poller = self.poller()
        fut: asyncio.Future[bytes] = poller.loop.create_future()
        fd = -1

        def readable() -> None:
            self._read_one(fd, qid, question, addr, fut)

        try:
            fd = poller.open(addr, packet, readable)
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise UpstreamError("timeout") from None
        except ConnectionRefusedError:
            raise UpstreamError("port unreachable") from None
        except OSError as exc:
            raise UpstreamError(f"network: {exc.strerror}") from None
        finally:
            poller.release(fd)

    def _read_one(self, fd: int, qid: int, question: bytes, addr: HostPort,
                  fut: asyncio.Future[bytes]) -> None:
        while not fut.done():
            try:
                data = recv(fd)
            except OSError as exc:
                fut.set_exception(exc)
                return
            if data is None:
                return
            if matches(data, qid, question):
                fut.set_result(data)
                return
            self.fail(addr, "unwanted_reply")

    async def tcp(self, addr: HostPort, packet: bytes, qid: int, question: bytes,
                  timeout: float) -> bytes:
        """One exchange over a new TCP connection (RFC 7766 §5), length-prefixed."""
        try:
            return await asyncio.wait_for(self._tcp(addr, packet, qid, question), timeout)
        except TimeoutError:
            raise UpstreamError("tcp timeout") from None
        except ConnectionRefusedError:
            raise UpstreamError("tcp refused") from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise UpstreamError(f"tcp: {type(exc).__name__}") from None

    async def _tcp(self, addr: HostPort, packet: bytes, qid: int, question: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(addr[0], addr[1])
        try:
            writer.write(struct.pack(">H", len(packet)) + packet)
            while True:
                (size,) = struct.unpack(">H", await reader.readexactly(2))
                data = await reader.readexactly(size)
                if matches(data, qid, question):
                    return data
                self.fail(addr, "unwanted_reply")
        finally:
            writer.close()

    async def query_server(self, addr: HostPort, packet: bytes, timeout: float) -> bytes:
        """Send a complete query to one server (UDP, TCP if truncated); its validated reply."""
        qid = (packet[0] << 8) | packet[1]
        name_end = wire.skip_name(packet, 12)
        question = packet[12:name_end].lower() + packet[name_end:name_end + 4]
        reply = await self.udp(addr, packet, qid, question, timeout)
        if reply[2] & 0x02:
            reply = await self.tcp(addr, packet, qid, question, timeout)
        return reply


def _settle(fut: asyncio.Future[bytes | None], reply: bytes | None) -> None:
    if not fut.done():
        fut.set_result(reply)
