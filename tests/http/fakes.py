"""Fakes for the HTTP face's seams (resolver entry point), used with a real HTTP server."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rrset


class FakeDns:
    """A resolver entry point: ``a.example.`` has A 192.0.2.1 (TTL 123), the rest NXDOMAIN.

    Records every call so tests can check the client address and transport it was given;
    ``drop`` makes it behave like a rate-limited resolver (returns ``None``).
    """

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, str, str]] = []
        self.drop = False

    async def resolve(self, query: bytes, client: str, transport: str) -> bytes | None:
        self.calls.append((query, client, transport))
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
