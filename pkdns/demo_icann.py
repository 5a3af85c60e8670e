"""The ICANN side of ``pkdns --testnet``: a stand-in resolver on loopback, so nothing leaves.

The demo promises that nothing leaves the machine, and a new user's first ICANN query would
otherwise go to 1.1.1.1 / 8.8.8.8 (and fail offline with SERVFAIL). When the upstreams are left
at their defaults, the demo points the daemon at this server instead: it answers the three
names IANA reserves for examples (RFC 2606 §3: ``example.com``, ``example.net``,
``example.org``, and ``www.`` under each) with documentation addresses (RFC 5737, RFC 3849)
and a TXT saying who answered, and every other name with NXDOMAIN and a root SOA (RFC 2308 §3),
so the daemon's forwarder, cache and negative caching run exactly as they do against a real
resolver. UDP only: its answers are small, and the daemon asks upstreams over UDP first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dnslib import AAAA, QTYPE, RCODE, RR, SOA, TXT, A, DNSRecord

from pkdns import log
from pkdns.config import HostPort

NAMES = ("example.com", "example.net", "example.org")
"""The names the stand-in knows (and ``www.`` under each)."""
ADDRESS_V4, ADDRESS_V6 = "192.0.2.1", "2001:db8::1"
NOTE = "answered by the pkdns testnet's stand-in ICANN resolver on this machine"
TTL = 300
NEGATIVE_TTL = 60

_log = log.get("demo")


def answer(query: bytes) -> bytes | None:
    """The reply to one query (None: not a query we can parse; dropped, as a server does)."""
    try:
        request = DNSRecord.parse(query)
    except Exception:  # dnslib raises assorted types on bad bytes
        return None
    if request.header.qr or not request.questions:
        return None
    reply = request.reply()
    reply.header.ra = 1
    name = str(request.q.qname).rstrip(".").lower()
    if name.removeprefix("www.") not in NAMES:
        reply.header.rcode = RCODE.NXDOMAIN
        soa = SOA(mname="a.root-servers.net.", rname="nstld.verisign-grs.com.",
                  times=(1, 1800, 900, 604800, NEGATIVE_TTL))
        reply.add_auth(RR(".", QTYPE.SOA, ttl=NEGATIVE_TTL, rdata=soa))
        return bytes(reply.pack())
    for qtype, rdata in ((QTYPE.A, A(ADDRESS_V4)), (QTYPE.AAAA, AAAA(ADDRESS_V6)),
                         (QTYPE.TXT, TXT(NOTE))):
        if request.q.qtype in (qtype, QTYPE.ANY):
            reply.add_answer(RR(request.q.qname, qtype, ttl=TTL, rdata=rdata))
    return bytes(reply.pack())


class _Protocol(asyncio.DatagramProtocol):
    transport: asyncio.DatagramTransport

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = answer(data)
        if reply is not None:
            self.transport.sendto(reply, addr)


class StandInIcann:
    """The stand-in resolver as a daemon component (started first, stopped last)."""

    name = "icann-stand-in"

    def __init__(self, transport: asyncio.DatagramTransport) -> None:
        self._transport = transport
        host, port = transport.get_extra_info("sockname")[:2]
        self.address: HostPort = (host, port)

    @classmethod
    async def start_on(cls, host: str) -> StandInIcann:
        """Listen on ``host``, any free port."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(_Protocol, local_addr=(host, 0))
        server = cls(transport)
        _log.info("icann_stand_in_listening", address=f"{host}:{server.address[1]}")
        return server

    def close(self) -> None:
        """Stop answering."""
        self._transport.close()


__all__ = ["ADDRESS_V4", "ADDRESS_V6", "NAMES", "NOTE", "StandInIcann", "answer"]
