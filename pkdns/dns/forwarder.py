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
from typing import Any

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


class Forwarder:
    """Sends questions to the configured upstreams; see the module docstring."""

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

        ``deadline`` is in loop time. Raises UpstreamError when no upstream answered usably.
        """
        loop = asyncio.get_running_loop()
        n = len(self.upstreams)
        dead: set[int] = set()
        rcode_failed: set[int] = set()
        tries = 0
        while len(dead) < n and len(rcode_failed | dead) < n:
            idx = (self._preferred + tries) % n
            tries += 1
            if idx in dead:
                continue
            remaining = deadline - loop.time()
            if remaining <= 0.001:
                raise UpstreamError("upstream deadline passed")
            addr = self.upstreams[idx]
            try:
                reply = await self._ask(addr, question, do, cd, min(self.attempt_timeout,
                                                                     remaining))
            except _Refused:
                dead.add(idx)
                self._fail(addr, "refused")
                continue
            except UpstreamError as exc:
                self._fail(addr, str(exc))
                continue
            if reply[3] & 0x0F in _RCODE_FAILURES:
                rcode_failed.add(idx)
                self._fail(addr, f"rcode{reply[3] & 0x0F}")
                if len(rcode_failed | dead) < n:
                    continue
                return reply
            self._preferred = idx
            return reply
        raise UpstreamError("no upstream reachable")

    async def _ask(self, addr: HostPort, question: bytes, do: bool, cd: bool,
                   timeout: float) -> bytes:
        qid = self.rng.getrandbits(16)
        qtype, qclass = struct.unpack(">HH", question[-4:])
        packet = wire.build_query(qid, question[:-4], qtype, qclass, do, cd)
        reply = await self.udp(addr, packet, qid, question, timeout)
        if reply[2] & 0x02:
            qid = self.rng.getrandbits(16)
            packet = struct.pack(">H", qid) + packet[2:]
            reply = await self.tcp(addr, packet, qid, question, max(timeout, 1.0))
        return reply

    def _fail(self, addr: HostPort, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.upstream_failures.labels(format_hostport(addr), reason).inc()

    def _unwanted(self, addr: HostPort) -> None:
        self._fail(addr, "unwanted_reply")

    async def udp(self, addr: HostPort, packet: bytes, qid: int, question: bytes,
                  timeout: float) -> bytes:
        """One UDP exchange on a fresh connected socket (fresh source port)."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        fut: asyncio.Future[bytes] = loop.create_future()
        timer = loop.call_later(timeout, _expire, fut)
        fd = -1
        try:
            sock.setblocking(False)
            sock.connect(addr)
            fd = sock.fileno()
            loop.add_reader(fd, self._readable, sock, fut, qid, question, addr)
            sock.send(packet)
            self.sent += 1
            return await fut
        except ConnectionRefusedError:
            raise _Refused("port unreachable") from None
        except OSError as exc:
            raise UpstreamError(f"network: {exc.strerror}") from None
        finally:
            timer.cancel()
            if fd >= 0:
                loop.remove_reader(fd)
            sock.close()

    def _readable(self, sock: socket.socket, fut: asyncio.Future[bytes], qid: int,
                  question: bytes, addr: HostPort) -> None:
        for _ in range(16):
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                return
            except ConnectionRefusedError:
                _settle(fut, exc=_Refused("port unreachable"))
                return
            except OSError as exc:
                _settle(fut, exc=UpstreamError(f"network: {exc.strerror}"))
                return
            if matches(data, qid, question):
                _settle(fut, result=data)
                return
            self._unwanted(addr)

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


def _expire(fut: asyncio.Future[Any]) -> None:
    _settle(fut, exc=UpstreamError("timeout"))


def _settle(fut: asyncio.Future[Any], result: Any = None, exc: BaseException | None = None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
