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

The handler gets the client's question as a dnslib record made from what the ladder already
read (:func:`question_of`), not by parsing the query a second time; its answer is packed once
and walked once for the cache (:func:`~pkdns.dns.reply.inspect_reply`).
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


def question_of(q: wire.Query) -> dnslib.DNSRecord:
    """The query as the handler reads it: id, RD, CD and the question with the name's case as
    asked (DNS 0x20), from the fields :func:`wire.parse_query` found (its EDNS record is the
    cache's business: :func:`~pkdns.dns.cache.render` adds ours to the reply)."""
    data = q.wire
    labels, i, end = [], 12, q.qend - 4
    while i < end and data[i]:
        n = data[i]
        labels.append(data[i + 1:i + 1 + n])
        i += n + 1
    header = dnslib.DNSHeader(id=(data[0] << 8) | data[1], rd=data[2] & 1, cd=int(q.cd))
    return dnslib.DNSRecord(header, q=dnslib.DNSQuestion(dnslib.DNSLabel(labels), q.qtype,
                                                        q.qclass))


async def ask(handler: PkarrHandler, q: wire.Query, client_ip: str,
              timeout: float) -> ReplyInfo | bytes:
    """``handler``'s answer to ``q`` walked for the cache, or SERVFAIL after ``timeout`` (an
    error reply to send as is)."""
    try:
        answer = await asyncio.wait_for(handler.answer(question_of(q), client_ip), timeout)
    except TimeoutError:
        return error(q, wire.SERVFAIL)
    return inspect_reply(bytes(answer.pack()))
