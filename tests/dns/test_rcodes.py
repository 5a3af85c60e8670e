"""Error rcodes both ways: an upstream's FORMERR/NOTIMP never reaches the client (it would
blame the client's query: SERVFAIL instead, after the other upstreams and a retry without
EDNS), and the FORMERR/NOTIMP we send carry an OPT when the query had one
(RFC 6891 §7)."""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.rcode
import pytest

from pkdns.dns import wire
from pkdns.dns.resolver import ClientInfo
from tests.dns.test_resolver import ask, make
from tests.dns.test_wire import QNAME, TAIL, header
from tests.support.upstream import FakeUpstream, Reply, a_record, answer, rcode_only, rrset

OPT = b"\x00\x00\x29\x10\x00\x00\x00\x80\x00\x00\x00"      # payload 4096, version 0, DO


@pytest.mark.parametrize("rcode", [dns.rcode.FORMERR, dns.rcode.NOTIMP, dns.rcode.YXRRSET])
async def test_upstream_error_rcode_becomes_servfail(rcode: dns.rcode.Rcode) -> None:
    with FakeUpstream(rcode_only(rcode)) as up:
        reply = await ask(make(up), "err.example.test")
    assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL


@pytest.mark.parametrize("rcode", [dns.rcode.FORMERR, dns.rcode.NOTIMP])
async def test_next_upstream_is_tried_first(rcode: dns.rcode.Rcode) -> None:
    with FakeUpstream(rcode_only(rcode)) as bad, FakeUpstream(a_record("192.0.2.7")) as good:
        reply = await ask(make(bad, good), "next.example.test")
    assert reply is not None and reply.answer[0][0].address == "192.0.2.7"


def _edns_intolerant(data: bytes, _t: str) -> Reply:
    msg = dns.message.from_wire(data)
    if msg.edns >= 0:
        return answer(data, rcode=dns.rcode.FORMERR)
    return answer(data, f"{msg.question[0].name} 300 IN A 192.0.2.8")


async def test_formerr_to_edns_is_retried_without_edns() -> None:
    with FakeUpstream(_edns_intolerant) as up:
        reply = await ask(make(up), "old.example.test")
        seen = [s.message.edns for s in up.queries()]
    assert reply is not None and reply.answer[0][0].address == "192.0.2.8"
    assert seen == [0, -1]


async def test_formerr_after_tcp_retry_is_retried_without_edns_in_time() -> None:
    def handler(data: bytes, transport: str) -> Reply:
        if transport == "udp" and dns.message.from_wire(data).edns >= 0:
            return answer(data, tc=True)
        return _edns_intolerant(data, transport)

    with FakeUpstream(handler) as up:      # the retry's timer: test_exchange.py
        reply = await ask(make(up), "tcp-old.example.test")
        seen = [(s.transport, s.message.edns) for s in up.queries()]
    assert reply is not None and reply.answer[0][0].address == "192.0.2.8"
    assert seen == [("udp", 0), ("tcp", 0), ("udp", -1)]


def _opt_of(reply: bytes) -> tuple[int, int]:
    """(EDNS version or -1, DO flag) of a reply, with dnspython."""
    msg = dns.message.from_wire(reply)
    return msg.edns, int(bool(msg.ednsflags & dns.flags.DO))


@pytest.mark.parametrize(("data", "rcode", "opt"), [
    (header(flags=0x0300, ar=1) + TAIL + OPT, wire.FORMERR, (0, 1)),          # TC=1
    (header(flags=0x1100, ar=1) + TAIL + OPT, wire.NOTIMP, (0, 1)),           # opcode 2
    (header(flags=0x1100, ar=1) + TAIL + OPT[:7] + b"\x00" + OPT[8:], wire.NOTIMP, (0, 0)),
    (header(flags=0x0300) + TAIL, wire.FORMERR, (-1, 0)),                     # no OPT
    (header(flags=0x0300, ar=1) + TAIL + OPT[:-1], wire.FORMERR, (-1, 0)),    # cut short
    (header(flags=0x0300, ar=2) + TAIL + OPT + OPT, wire.FORMERR, (-1, 0)),   # two OPTs
    (header(flags=0x0300, ar=1) + QNAME[:-2] + OPT, wire.FORMERR, (-1, 0)),   # bad question
], ids=["tc", "opcode", "opcode-no-do", "no-opt", "short-opt", "two-opts", "bad-qname"])
async def test_our_error_replies_carry_an_opt_when_the_query_had_one(
        data: bytes, rcode: int, opt: tuple[int, int]) -> None:
    r = make()
    reply = await r.resolve(data, ClientInfo("127.0.0.1", "udp"), 1232)
    assert reply is not None and reply[:2] == data[:2] and reply[3] & 0x0F == rcode
    if opt[0] < 0:
        assert struct.unpack(">H", reply[10:12])[0] == 0
    else:
        assert _opt_of(reply) == opt


async def test_badvers_is_counted_as_badvers() -> None:
    r = make()
    badvers = OPT[:6] + b"\x01" + OPT[7:]                       # EDNS version 1, DO set
    reply = await r.resolve(header(ar=1) + TAIL + badvers, ClientInfo("127.0.0.1", "udp"), 1232)
    assert reply is not None and _opt_of(reply) == (0, 1)
    text = r.metrics.render().decode()
    assert 'pkdns_queries_total{kind="malformed",rcode="BADVERS",transport="udp"} 1.0' in text
    assert 'rcode="NOERROR"' not in text


def test_fitted_drops_additional_then_authority_before_tc() -> None:
    q = dns.message.make_query("mx.example.test", "MX")
    r = dns.message.make_response(q)
    r.answer.append(rrset("mx.example.test. 300 IN MX 10 m.example.test."))
    r.authority.append(rrset("example.test. 300 IN NS " + "n" * 60 + ".example.test."))
    r.additional.append(rrset("m.example.test. 300 IN AAAA 2001:db8::1"))
    full = r.to_wire()
    qend = 12 + len(b"\x02mx\x07example\x04test\x00") + 4
    no_glue = dns.message.from_wire(wire.fitted(full, qend, len(full) - 1, True, False))
    assert not no_glue.flags & dns.flags.TC and no_glue.authority and not no_glue.additional
    assert no_glue.edns == 0 and no_glue.answer
    short = len(full) - 40
    answers_only = dns.message.from_wire(wire.fitted(full, qend, short, True, False))
    assert not answers_only.flags & dns.flags.TC and answers_only.answer
    assert not answers_only.authority
    with_do = dns.message.from_wire(wire.fitted(full, qend, short, True, True))
    assert with_do.flags & dns.flags.TC and not with_do.answer      # DO: NSEC may be there
    tiny = dns.message.from_wire(wire.fitted(full, qend, 40, False, False))
    assert tiny.flags & dns.flags.TC and not tiny.answer
