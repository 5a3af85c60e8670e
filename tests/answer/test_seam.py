"""The resolver's one call into the pkarr side: the question handed over without a second
parse of the query, the answer walked for the cache, SERVFAIL after the deadline."""

from __future__ import annotations

import asyncio

import dns.flags
import dns.message
import dnslib
import pytest

from pkdns.answer.seam import ask, question_of
from pkdns.dns import wire
from pkdns.dns.reply import ReplyInfo


@pytest.mark.parametrize(("name", "qtype", "rd", "edns", "cd"), [
    ("WwW.ExAmple.KEY.", "A", True, False, False),       # 0x20 case kept as asked
    ("a.b.c.", "TXT", False, True, True),
    ("_443._tcp.x.key.", "TLSA", True, True, False),
    ("key.", "HTTPS", True, False, False),
])
def test_the_question_is_what_dnslib_would_have_parsed(name: str, qtype: str, rd: bool,
                                                       edns: bool, cd: bool) -> None:
    m = dns.message.make_query(name, qtype, use_edns=0 if edns else None, payload=1232)
    if not rd:
        m.flags &= ~dns.flags.RD
    if cd:
        m.flags |= dns.flags.CD
    data = m.to_wire()
    made, parsed = question_of(wire.parse_query(data)), dnslib.DNSRecord.parse(data)
    assert made.questions == parsed.questions and str(made.q.qname) == name
    assert (made.header.id, made.header.rd, made.header.cd, made.header.opcode) == \
        (parsed.header.id, parsed.header.rd, parsed.header.cd, parsed.header.opcode)


class Echo:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.seen: list[dnslib.DNSRecord] = []

    def claims(self, qname: str) -> bool:
        return True

    async def answer(self, query: dnslib.DNSRecord, client_ip: str) -> dnslib.DNSRecord:
        self.seen.append(query)
        await asyncio.sleep(self.delay)
        reply = query.reply()
        reply.add_answer(dnslib.RR(query.q.qname, dnslib.QTYPE.A, ttl=300,
                                   rdata=dnslib.A("192.0.2.1")))
        return reply


async def test_ask_walks_the_answer_for_the_cache_and_times_out_to_servfail() -> None:
    q = wire.parse_query(dns.message.make_query("Www.Example.KEY.", "A", id=77).to_wire())
    handler = Echo()
    info = await ask(handler, q, "192.0.2.9", 1.0)
    assert isinstance(info, ReplyInfo)
    assert str(handler.seen[0].q.qname) == "Www.Example.KEY."
    slow = await ask(Echo(delay=1.0), q, "192.0.2.9", 0.05)
    assert isinstance(slow, bytes) and slow[3] & 0x0F == wire.SERVFAIL
    assert slow[:2] == (77).to_bytes(2, "big")
