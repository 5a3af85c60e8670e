"""The seam between the resolver and the pkarr side: what a handler provides, and one call to it.

Why a module of its own: the resolver must not depend on the pkarr implementation
(:mod:`pkdns.answer.answerer` and friends, attached after construction as
``Resolver.pkarr``), and the step that turns a handler's dnslib answer into cacheable wire
(:class:`~pkdns.dns.reply.ReplyInfo`) needs none of the resolver's state; keeping both here
leaves ``resolver.py`` with the orchestration only.

A handler's answers go into the same wire cache under the same key rules as ICANN replies (TTL
from its records or its SOA; SERVFAIL not cached), so a cached pkarr answer is served by the
same hot path. pkarr names never go upstream (so an upstream reply can never fill the pkarr
namespace).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import dnslib

from pkdns.dns import wire
from pkdns.dns.querypolicy import error
from pkdns.dns.reply import ReplyInfo, inspect_reply


class PkarrHandler(Protocol):
    """The pkarr side of the resolver, settable as ``Resolver.pkarr``."""

    def claims(self, qname: str) -> bool:
        """Is ``qname`` (lowercased, no trailing dot) a pkarr name? Pure and fast."""
        ...

    async def answer(self, query: dnslib.DNSRecord, client_ip: str) -> dnslib.DNSRecord:
        """The full response to ``query``."""
        ...


async def ask(handler: PkarrHandler, q: wire.Query, client_ip: str,
              timeout: float) -> ReplyInfo | bytes:
    """``handler``'s answer to ``q`` walked for the cache, or an error reply to send as is:
    FORMERR when dnslib cannot read a query the ladder accepted, SERVFAIL after ``timeout``."""
    try:
        record = dnslib.DNSRecord.parse(q.wire)
    except Exception:  # dnslib is stricter than the ladder in places
        return error(q, wire.FORMERR)
    try:
        answer = await asyncio.wait_for(handler.answer(record, client_ip), timeout)
    except TimeoutError:
        return error(q, wire.SERVFAIL)
    return inspect_reply(bytes(answer.pack()))
