"""Fakes for the HTTP face's seams (resolver entry point), used with a real HTTP server."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rrset

from pkdns.dns.resolver import ClientInfo
from pkdns.pkarr.client import Published
from pkdns.pkarr.keys import PublicKey
from pkdns.pkarr.signed_packet import SignedPacket
from pkdns.server.relay_api import Cached, Fetched


class FakeDns:
    """A resolver entry point: ``a.example.`` has A 192.0.2.1 (TTL 123), the rest NXDOMAIN.

    Records every call so tests can check the client address and transport it was given;
    ``drop`` makes it drop the query (returns ``None``) as the resolver does with garbage.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, str, str, int]] = []
        self.drop = False

    async def resolve(self, query: bytes, client: ClientInfo, max_size: int) -> bytes | None:
        self.calls.append((query, client.ip, client.transport, max_size))
        if self.drop:
            return None
        msg = dns.message.from_wire(query)
        response = dns.message.make_response(msg)
        if msg.question[0].name == dns.name.from_text("a.example."):
            response.answer.append(dns.rrset.from_text(
                msg.question[0].name, 123, "IN", "A", "192.0.2.1"))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(dns.rrset.from_text(
                "example.", 3600, "IN", "SOA", "ns.example. host.example. 1 2 3 4 60"))
        return response.to_wire()


class FakeStore:
    """The packet store seam: a dict cache plus scripted network answers per key."""

    def __init__(self, now_us: int = 1_700_000_100_000_000) -> None:
        self.packets: dict[bytes, Cached] = {}
        self.network: dict[bytes, Fetched] = {}
        self.fetches: list[tuple[PublicKey, SignedPacket | None]] = []
        self.now_us = now_us

    def cached(self, key: PublicKey) -> Cached | None:
        return self.packets.get(key.raw)

    async def fetch(self, key: PublicKey, floor: SignedPacket | None) -> Fetched:
        self.fetches.append((key, floor))
        return self.network.get(key.raw, Fetched(None))

    def store(self, packet: SignedPacket) -> None:
        self.packets[packet.public_key.raw] = Cached(packet, self.now_us, True)

    def hold(self, packet: SignedPacket, fresh: bool = True, last_seen_us: int = 0) -> None:
        self.packets[packet.public_key.raw] = Cached(packet, last_seen_us or self.now_us, fresh)


class FakePublisher:
    """A DHT put that 'stores' on ``result.stored`` nodes and records what it was given."""

    def __init__(self) -> None:
        self.result = Published(7)
        self.published: list[SignedPacket] = []

    async def publish(self, packet: SignedPacket) -> Published:
        self.published.append(packet)
        return self.result


class SwitchLimiter:
    """A rate limiter tests open and close by hand; counts who was charged."""

    def __init__(self) -> None:
        self.open = True
        self.charged: list[str] = []

    def allow(self, client: str) -> bool:
        self.charged.append(client)
        return self.open
