"""Asking the ICANN upstreams: RFC 5452 hygiene, failover, TCP when truncated.

Every upstream attempt uses a fresh connected UDP socket (so a fresh kernel-chosen random
source port) and a fresh random 16-bit ID from the system CSPRNG (RFC 5452 §9.1). Because the
socket is connected, the kernel delivers only datagrams from the address and port we asked; a
reply is further accepted only with our ID, QR=1 and our exact question.
Anything else is counted as unwanted and ignored while we keep waiting (up to a limit, see
below): forged packets never mark an upstream down (PowerDNS advisory 2023-02).

Failover: upstreams are tried in order, starting with the last one that answered; a timeout
(``upstream_timeout``) moves to the next, cycling until the deadline. ICMP port-unreachable
(ECONNREFUSED on the connected socket) takes that upstream out for this query at once. An
error rcode (SERVFAIL/REFUSED/NOTIMP/FORMERR) counts as one failed try of that upstream; when
every upstream has failed that way the query fails (the client gets SERVFAIL,
:mod:`pkdns.dns.fetch`). A FORMERR to a query with our OPT is asked once more of the same
upstream without it (Unbound ``fwd_no_edns``). A TC=1 reply is re-asked over TCP (Unbound
``fwd_tcp_tc``), within the deadline.
Coalescing of identical questions happens one level up (:mod:`pkdns.dns.fetch`).

Upstream health (:mod:`pkdns.dns.health`): an upstream is down only when it answers nothing
at all -- a name that is slow (its zone's servers never answer the upstream) does not count
against it. A down upstream gets one probe per 1, 2, 4, 8 s; with no usable upstream a query
fails at once (serve-stale still answers names that were cached).

Spoofing with the port known (an on-path observer, or a SAD DNS-style side channel): every
datagram on an attempt's socket comes from the upstream's address and port, so a wrong ID or
question there is a near miss. More than ``nearmiss_max`` near misses (PowerDNS
``spoof-nearmiss-max``, default 1 as there) drop the attempt: it is asked again on a fresh
socket (new port, ID and case), then over TCP; each such drop is counted in
``pkdns_upstream_spoofing`` and logged. The name's letters go out in random case (0x20,
draft-vixie-dnsext-dns0x20) and the reply must echo them exactly, which adds a bit of entropy
per letter; the client still sees its own case, since its answer is built from its own
question (:func:`pkdns.dns.cache.render`).

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
from pkdns.dns.health import Health, Server
from pkdns.dns.sockpoll import SocketPoller, mix_case, mix_case_with, recv
from pkdns.errors import Spoofed, UpstreamError
from pkdns.metrics import Metrics

_log = log.get("forwarder")
_SPOOF_LOG_EVERY = 1.0            # seconds between spoofing log lines per upstream


class Forwarder:
    """Sends questions to the configured upstreams; see the module docstring.

    Attempts overlap: a new one (fresh port and ID, next upstream) starts every
    ``attempt_timeout``, but earlier sockets stay open until the deadline, so a slow upstream's
    late reply is still taken (Unbound ``discard-timeout`` semantics).
    """

    def __init__(self, upstreams: tuple[HostPort, ...], attempt_timeout: float,
                 metrics: Metrics | None = None, rng: random.Random | None = None,
                 use_0x20: bool = True, nearmiss_max: int = 1) -> None:
        self.upstreams = upstreams
        self.attempt_timeout = attempt_timeout
        self.metrics = metrics
        self.rng = rng
        self.use_0x20 = use_0x20
        self.nearmiss_max = nearmiss_max    # 0: no limit
        self.preferred = 0
        self.sent = 0
        self.health = Health()
        self._servers: list[Server] = []
        self._servers_of: tuple[HostPort, ...] = ()
        self._spoof_logged: dict[HostPort, tuple[float, int]] = {}
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

    def server(self, idx: int) -> Server:
        """The health state of upstream ``idx`` (a list by index: no tuple hashing per query;
        made again when a reload replaced ``upstreams``)."""
        if self._servers_of is not self.upstreams:
            self._servers = [self.health.server(addr) for addr in self.upstreams]
            self._servers_of = self.upstreams
        return self._servers[idx]

    def mixed_case(self, question: bytes) -> bytes:
        """``question`` with its letters in random case (0x20, :func:`sockpoll.mix_case`);
        from ``rng`` when one was given (tests)."""
        if self.rng is None:
            return mix_case(question)
        return mix_case_with(question, self.rng.getrandbits(8 * len(question)))

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

    def start(self, question: bytes, do: bool, cd: bool, now: float, deadline: float,
              on_done: Callable[[bytes | None], None]) -> Exchange:
        """Begin an exchange for ``question`` (lowercased wire qname + qtype + qclass).

        ``now`` and ``deadline`` are in loop time. ``on_done(reply)`` is called exactly once,
        from the event loop: a usable reply, the last error-rcode reply when every upstream
        answered with one, or None. ``.cancel()`` on the result stops it without a call.
        """
        ex = Exchange(self, self.poller(), question, do, cd, deadline, on_done)
        ex.advance(now)
        return ex

    async def exchange(self, question: bytes, do: bool, cd: bool, deadline: float) -> bytes:
        """:meth:`start` as a coroutine; raises UpstreamError when no upstream answered."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes | None] = loop.create_future()
        ex = self.start(question, do, cd, loop.time(), deadline, partial(_settle, fut))
        try:
            reply = await fut
        finally:
            ex.cancel()
        if reply is None:
            raise UpstreamError("no upstream answered in time")
        return reply

    def pick(self, tries: int, out: AbstractSet[int], question: bytes, now: float) -> int:
        """The upstream for attempt number ``tries`` at ``question``: round the list from the
        preferred one, skipping those in ``out`` and those down (unless ``question`` may
        probe, :meth:`Health.may_use`); -1 if none is left."""
        n = len(self.upstreams)
        health = self.health
        for k in range(n):
            idx = (self.preferred + tries + k) % n
            if idx not in out and (not health.down
                                   or health.may_use(self.upstreams[idx], question, now)):
                return idx
        return -1

    def fail(self, addr: HostPort, reason: str) -> None:
        """Count one failed attempt (or an unwanted datagram) against ``addr``."""
        if self.metrics is not None:
            self.metrics.upstream_failures.labels(format_hostport(addr), reason).inc()

    def spoof_suspected(self, addr: HostPort, question: bytes, why: str, misses: int,
                        now: float) -> None:
        """An attempt to ``addr`` was dropped as spoofed (``why``: "nearmiss", "case").
        Counted always; logged at most once a second per upstream, with the count since."""
        if self.metrics is not None:
            self.metrics.upstream_spoofing.labels(format_hostport(addr), why).inc()
        last, count = self._spoof_logged.get(addr, (-_SPOOF_LOG_EVERY, 0))
        if now - last < _SPOOF_LOG_EVERY:
            self._spoof_logged[addr] = (last, count + 1)
            return
        self._spoof_logged[addr] = (now, 0)
        _log.warning("upstream_spoofing_suspected", upstream=format_hostport(addr),
                     qname=wire.name_text(question[:-4]), reason=why, near_misses=misses,
                     dropped_since_last_log=count + 1)

    async def udp(self, addr: HostPort, packet: bytes, qid: int, question: bytes,
                  timeout: float) -> bytes:
        """One UDP exchange on a fresh connected socket (fresh source port)."""
        poller = self.poller()
        fut: asyncio.Future[bytes] = poller.loop.create_future()
        fd = -1

        misses = [0]

        def readable() -> None:
            self._read_one(fd, qid, question, addr, fut, misses)

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
                  fut: asyncio.Future[bytes], misses: list[int]) -> None:
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
            misses[0] += 1
            if 0 < self.nearmiss_max < misses[0]:
                now = self.poller().loop.time()
                self.spoof_suspected(addr, question, "nearmiss", misses[0], now)
                fut.set_exception(Spoofed("near-miss replies"))
                return

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
        try:
            reply = await self.udp(addr, packet, qid, question, timeout)
            if not reply[2] & 0x02:
                return reply
        except Spoofed:                     # the port is known to a spoofer: TCP is safe
            pass
        qid = self.new_id()                 # truncated or spoofed: over TCP, a fresh ID
        return await self.tcp(addr, struct.pack(">H", qid) + packet[2:], qid, question, timeout)


def _settle(fut: asyncio.Future[bytes | None], reply: bytes | None) -> None:
    if not fut.done():
        fut.set_result(reply)
