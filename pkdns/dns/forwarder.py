"""Asking the ICANN upstreams: RFC 5452 hygiene, failover, TCP when truncated.

Every upstream attempt uses a fresh connected UDP socket (so a fresh kernel-chosen random
source port) and a fresh random 16-bit ID from the system CSPRNG (RFC 5452 §9.1). Because the
socket is connected, the kernel delivers only datagrams from the address and port we asked; a
reply is further accepted only with our ID, QR=1 and our exact question (reliability P2-P4).
Anything else is counted as unwanted and ignored while we keep waiting: forged packets never
mark an upstream down (PowerDNS advisory 2023-02).

Failover: upstreams are tried in order, starting with the last one that answered; a timeout
(``upstream_timeout``) moves to the next, cycling until the deadline. ICMP port-unreachable
(ECONNREFUSED on the connected socket) takes that upstream out for this query at once (U1). An
error rcode (SERVFAIL/REFUSED/NOTIMP/FORMERR) counts as one failed try of that upstream; when
every upstream has failed that way the query fails. A TC=1 reply is re-asked over TCP (U5).
Coalescing of identical questions happens one level up, in the resolver, around fetch+store.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct

from pkdns.config import HostPort, format_hostport
from pkdns.dns import wire
from pkdns.errors import UpstreamError
from pkdns.metrics import Metrics

_RCODE_FAILURES = (wire.FORMERR, wire.SERVFAIL, wire.NOTIMP, wire.REFUSED)


class _Refused(UpstreamError):
    """ICMP port unreachable: nobody listens there."""


def matches(reply: bytes, qid: int, question: bytes) -> bool:
    """Is ``reply`` a response to our query ``qid`` for ``question`` (case-insensitive)?"""
    return (len(reply) >= 12 + len(question) and reply[0] == qid >> 8 and reply[1] == qid & 255
            and reply[2] & 0xF8 == 0x80 and reply[4:6] == b"\x00\x01"
            and reply[12:12 + len(question)].lower() == question)


class _Attempt:
    """One UDP query in flight on its own connected socket."""

    __slots__ = ("sock", "fd", "idx", "addr", "qid", "packet")

    def __init__(self, idx: int, addr: HostPort, qid: int, packet: bytes) -> None:
        self.sock = socket.socket(_family(addr), socket.SOCK_DGRAM)
        self.fd, self.idx, self.addr, self.qid, self.packet = -1, idx, addr, qid, packet


class _Exchange:
    """Events from every attempt of one exchange, and the future that wakes the driver."""

    __slots__ = ("events", "wake", "question")

    def __init__(self, question: bytes) -> None:
        self.events: list[tuple[_Attempt, bytes | UpstreamError]] = []
        self.wake: asyncio.Future[None] | None = None
        self.question = question

    def push(self, attempt: _Attempt, event: bytes | UpstreamError) -> None:
        self.events.append((attempt, event))
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)


class Forwarder:
    """Sends questions to the configured upstreams; see the module docstring.

    Attempts overlap: a new one (fresh port and ID, next upstream) starts every
    ``attempt_timeout``, but earlier sockets stay open until the deadline, so a slow upstream's
    late reply is still taken (Unbound ``discard-timeout`` semantics, reliability U3).
    """

    def __init__(self, upstreams: tuple[HostPort, ...], attempt_timeout: float,
                 metrics: Metrics | None = None, rng: random.Random | None = None) -> None:
        self.upstreams = upstreams
        self.attempt_timeout = attempt_timeout
        self.metrics = metrics
        self.rng = rng or random.SystemRandom()
        self._preferred = 0
        self.sent = 0

    async def exchange(self, question: bytes, do: bool, cd: bool, deadline: float) -> bytes:
        """The upstream reply to ``question`` (lowercased wire qname + qtype + qclass).

        ``deadline`` is in loop time. Raises UpstreamError when no upstream answered usably;
        when every upstream answered with an error rcode, that reply is returned.
        """
        loop = asyncio.get_running_loop()
        ex = _Exchange(question)
        attempts: list[_Attempt] = []
        out: set[int] = set()                # upstreams refused or failed with an rcode
        error_reply: bytes | None = None
        tries = 0
        try:
            while len(out) < len(self.upstreams) and loop.time() < deadline:
                idx = self._next(tries, out)
                tries += 1
                attempt = self._launch(ex, idx, do, cd)
                if attempt is None:
                    out.add(idx)
                    continue
                attempts.append(attempt)
                next_try = min(loop.time() + self.attempt_timeout, deadline)
                while not ex.events and loop.time() < next_try:
                    await self._sleep(ex, next_try - loop.time())
                for att, event in ex.events:
                    reply = await self._settle_event(att, event, out)
                    if reply is None:
                        continue
                    if reply[3] & 0x0F in _RCODE_FAILURES:
                        out.add(att.idx)
                        error_reply = reply
                        self._fail(self.upstreams[att.idx], f"rcode{reply[3] & 0x0F}")
                        continue
                    self._preferred = att.idx
                    return reply
                ex.events.clear()
        finally:
            for att in attempts:
                self._close(att)
        if error_reply is not None and len(out) >= len(self.upstreams):
            return error_reply
        raise UpstreamError("no upstream answered in time")

    def _next(self, tries: int, out: set[int]) -> int:
        n = len(self.upstreams)
        for k in range(n):
            idx = (self._preferred + tries + k) % n
            if idx not in out:
                return idx
        return self._preferred

    async def _sleep(self, ex: _Exchange, delay: float) -> None:
        loop = asyncio.get_running_loop()
        ex.wake = loop.create_future()
        timer = loop.call_later(max(delay, 0.0), _settle, ex.wake)
        try:
            await ex.wake
        finally:
            timer.cancel()

    async def _settle_event(self, att: _Attempt, event: bytes | UpstreamError,
                            out: set[int]) -> bytes | None:
        """A usable reply from one attempt's event (TC retried over TCP), else None."""
        addr = att.addr
        if isinstance(event, _Refused):
            out.add(att.idx)
            self._fail(addr, "refused")
            return None
        if isinstance(event, UpstreamError):
            self._fail(addr, str(event))
            return None
        if not event[2] & 0x02:
            return event
        qid = self.rng.getrandbits(16)
        try:
            return await self.tcp(addr, struct.pack(">H", qid) + att.packet[2:], qid,
                                  _question_of(att.packet), 2.0)
        except UpstreamError as exc:
            self._fail(addr, str(exc))
            return None

    def _launch(self, ex: _Exchange, idx: int, do: bool, cd: bool) -> _Attempt | None:
        """Send a fresh query to upstream ``idx``; None if it cannot even be sent."""
        addr = self.upstreams[idx]
        qid = self.rng.getrandbits(16)
        qtype, qclass = struct.unpack(">HH", ex.question[-4:])
        packet = wire.build_query(qid, ex.question[:-4], qtype, qclass, do, cd)
        att = _Attempt(idx, addr, qid, packet)
        loop = asyncio.get_running_loop()
        try:
            att.sock.setblocking(False)
            att.sock.connect(addr)
            att.fd = att.sock.fileno()
            loop.add_reader(att.fd, self._readable, att, ex)
            att.sock.send(packet)
            self.sent += 1
        except OSError as exc:
            self._close(att)
            self._fail(addr, f"network: {exc.strerror}")
            return None
        return att

    def _close(self, att: _Attempt) -> None:
        if att.fd >= 0:
            asyncio.get_running_loop().remove_reader(att.fd)
            att.fd = -1
        att.sock.close()

    def _readable(self, att: _Attempt, ex: _Exchange) -> None:
        for _ in range(16):
            try:
                data = att.sock.recv(65535)
            except BlockingIOError:
                return
            except ConnectionRefusedError:
                ex.push(att, _Refused("port unreachable"))
                return
            except OSError as exc:
                ex.push(att, UpstreamError(f"network: {exc.strerror}"))
                return
            if matches(data, att.qid, ex.question):
                ex.push(att, data)
                return
            self._unwanted(att.addr)

    def _fail(self, addr: HostPort, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.upstream_failures.labels(format_hostport(addr), reason).inc()

    def _unwanted(self, addr: HostPort) -> None:
        self._fail(addr, "unwanted_reply")

    async def udp(self, addr: HostPort, packet: bytes, qid: int, question: bytes,
                  timeout: float) -> bytes:
        """One UDP exchange on a fresh connected socket (fresh source port)."""
        loop = asyncio.get_running_loop()
        ex = _Exchange(question)
        att = _Attempt(-1, addr, qid, packet)
        deadline = loop.time() + timeout
        try:
            att.sock.setblocking(False)
            att.sock.connect(addr)
            att.fd = att.sock.fileno()
            loop.add_reader(att.fd, self._readable, att, ex)
            att.sock.send(packet)
            while not ex.events and loop.time() < deadline:
                await self._sleep(ex, deadline - loop.time())
        except ConnectionRefusedError:
            raise _Refused("port unreachable") from None
        except OSError as exc:
            raise UpstreamError(f"network: {exc.strerror}") from None
        finally:
            self._close(att)
        if not ex.events:
            raise UpstreamError("timeout")
        event = ex.events[0][1]
        if isinstance(event, UpstreamError):
            raise event
        return event

    async def tcp(self, addr: HostPort, packet: bytes, qid: int, question: bytes,
                  timeout: float) -> bytes:
        """One exchange over a new TCP connection (RFC 7766 §5), length-prefixed."""
        try:
            return await asyncio.wait_for(self._tcp(addr, packet, qid, question), timeout)
        except TimeoutError:
            raise UpstreamError("tcp timeout") from None
        except ConnectionRefusedError:
            raise _Refused("tcp refused") from None
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
                self._unwanted(addr)
        finally:
            writer.close()

    async def query_server(self, addr: HostPort, packet: bytes, timeout: float) -> bytes:
        """Send a complete query to one server (UDP, TCP if truncated); its validated reply."""
        qid = (packet[0] << 8) | packet[1]
        question = packet[12:wire.skip_name(packet, 12) + 4].lower()
        reply = await self.udp(addr, packet, qid, question, timeout)
        if reply[2] & 0x02:
            reply = await self.tcp(addr, packet, qid, question, timeout)
        return reply


def _family(addr: HostPort) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr[0] else socket.AF_INET


def _question_of(packet: bytes) -> bytes:
    return packet[12:wire.skip_name(packet, 12) + 4].lower()


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
