"""Fakes for the answer tests: a packet source over the scripted DHT and relays
(:mod:`tests.support.pkarr_fakes`), and an ICANN side."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dnslib import RR, DNSRecord

from pkdns.answer.source import PkarrSource
from pkdns.clock import Clock
from pkdns.config import PkarrConfig
from pkdns.pkarr.client import Dht, PkarrClient, Relay


def source_over(dht: Dht | None, cfg: PkarrConfig, clock: Clock, relays: Sequence[Relay] = (),
                **kwargs: Any) -> PkarrSource:
    """A packet source over a pkarr client over ``dht`` and ``relays``."""
    return PkarrSource(PkarrClient(dht, relays, clock=clock), cfg, clock, **kwargs)


class FakeIcann:
    """The resolver's ICANN side: canned answers by (name, qtype) and by server address."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, int], list[RR]] = {}
        self.servers: dict[tuple[str, int], Callable[[DNSRecord], DNSRecord | None]] = {}
        self.asked: list[tuple[str, int]] = []
        self.server_queries: list[tuple[tuple[str, int], str]] = []

    async def resolve(self, qname: str, qtype: int) -> DNSRecord:
        self.asked.append((qname, qtype))
        reply = DNSRecord.question(qname, "A")
        reply.q.qtype = qtype
        reply = reply.reply()
        rrs = self.records.get((qname.rstrip(".").lower(), qtype))
        if rrs is None:
            reply.header.rcode = 3
        for rr in rrs or []:
            reply.add_answer(rr)
        return reply

    async def query_server(self, addr: tuple[str, int], query: DNSRecord) -> DNSRecord:
        self.server_queries.append((addr, str(query.q.qname)))
        handler = self.servers.get(addr)
        reply = handler(query) if handler else None
        if reply is None:
            raise TimeoutError(f"no answer from {addr}")
        return reply
