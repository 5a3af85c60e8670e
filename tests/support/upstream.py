"""Scripted fake upstream DNS server (UDP + TCP on loopback) for fault tests.

It runs in its own thread with blocking sockets, so it answers both in-process async tests and
a daemon subprocess while the test itself blocks in ``dig``. ``handler(query_wire, transport)``
returns the reply bytes, ``None`` (stay silent), a :class:`Spoof` (send from another socket),
a :class:`Delayed` reply (UDP: sent later from a timer, without blocking the server thread),
or a list of those (several datagrams, in order).
Every query is recorded with its source address.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.rcode
import dns.rrset


@dataclass
class Spoof:
    """Send ``reply`` from a different socket bound to ``host`` (port 0)."""

    reply: bytes
    host: str = "127.0.0.1"


@dataclass
class Delayed:
    """Send ``reply`` over UDP after ``seconds``; the server goes on with other queries."""

    reply: bytes
    seconds: float


Reply = bytes | Spoof | Delayed | list[bytes | Spoof] | None
Handler = Callable[[bytes, str], Reply]


@dataclass
class Seen:
    wire: bytes
    addr: tuple[str, int]
    transport: str

    @property
    def message(self) -> dns.message.Message:
        return dns.message.from_wire(self.wire)


@dataclass
class FakeUpstream:
    handler: Handler
    host: str = "127.0.0.1"
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        # UDP and TCP on one port number, as a real server: the kernel picks the UDP port,
        # and when that number is taken for TCP (another test's connection), pick again.
        for _ in range(50):
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind((self.host, 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind((self.host, self.port))
                self.tcp.listen(64)
                break
            except OSError:
                self.tcp.close()
                self.udp.close()
        else:
            raise RuntimeError("no port free for both UDP and TCP on loopback")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._timers: list[threading.Timer] = []

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> FakeUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for timer in self._timers:
            timer.cancel()
            timer.join(5)
        self.udp.close()
        if self.tcp is not None:
            self.tcp.close()

    def queries(self, transport: str | None = None) -> list[Seen]:
        return [s for s in list(self.seen) if transport is None or s.transport == transport]

    def _run(self) -> None:
        socks = [self.udp] + ([self.tcp] if self.tcp is not None else [])
        while not self._stop.is_set():
            ready, _, _ = select.select(socks, [], [], 0.05)
            for s in ready:
                if s is self.udp:
                    self._udp_one()
                else:
                    self._tcp_one()

    def _udp_one(self) -> None:
        try:
            data, addr = self.udp.recvfrom(65535)
        except OSError:
            return
        self.seen.append(Seen(data, addr, "udp"))
        self._send_udp(self._handle(data, "udp"), addr)

    def _send_udp(self, reply: Reply, addr: tuple[str, int]) -> None:
        if reply is None:
            return
        if isinstance(reply, list):
            for one in reply:
                self._send_udp(one, addr)
            return
        if isinstance(reply, Delayed):
            timer = threading.Timer(reply.seconds, self._send_late, (reply.reply, addr))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()
            return
        if isinstance(reply, Spoof):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
                other.bind((reply.host, 0))
                other.sendto(reply.reply, addr)
            return
        self.udp.sendto(reply, addr)

    def _send_late(self, reply: bytes, addr: tuple[str, int]) -> None:
        try:
            self.udp.sendto(reply, addr)
        except OSError:         # closed meanwhile
            pass

    def _tcp_one(self) -> None:
        conn, addr = self.tcp.accept()
        conn.settimeout(2.0)
        try:
            while True:
                head = _read(conn, 2)
                if head is None:
                    return
                data = _read(conn, struct.unpack(">H", head)[0])
                if data is None:
                    return
                self.seen.append(Seen(data, addr, "tcp"))
                reply = self._handle(data, "tcp")
                if isinstance(reply, bytes):
                    conn.sendall(struct.pack(">H", len(reply)) + reply)
        except OSError:
            return
        finally:
            conn.close()

    def _handle(self, data: bytes, transport: str) -> Reply:
        try:
            return self.handler(data, transport)
        except Exception:       # a broken script must not kill the thread; stay silent
            return None


def _read(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


# ------------------------------------------------------------------ handler helpers


def answer(data: bytes, *rrs: str, rcode: int = 0, tc: bool = False,
           authority: tuple[str, ...] = ()) -> bytes:
    """A response to ``data`` with records in zone-file text ("name ttl IN type rdata")."""
    q = dns.message.from_wire(data)
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.Rcode.make(rcode))
    if tc:
        r.flags |= dns.flags.TC
    for text in rrs:
        r.answer.append(rrset(text))
    for text in authority:
        r.authority.append(rrset(text))
    return r.to_wire(max_size=65535)        # not the query's EDNS size: TCP may need more


def rrset(text: str) -> dns.rrset.RRset:
    """One record from zone-file text: "name ttl class type rdata"."""
    name, ttl, rdclass, rdtype, rdata = text.split(None, 4)
    return dns.rrset.from_text(name, int(ttl), rdclass, rdtype, rdata)


def a_record(ip: str = "192.0.2.1", ttl: int = 300) -> Handler:
    """Every question answered with one A record for the asked name."""

    def handle(data: bytes, _transport: str) -> Reply:
        name = dns.message.from_wire(data).question[0].name
        return answer(data, f"{name} {ttl} IN A {ip}")

    return handle


def rcode_only(rcode: int) -> Handler:
    return lambda data, _t: answer(data, rcode=rcode)


def silent(_data: bytes, _transport: str) -> Reply:
    return None
