"""Protocol details checked against the RFCs with dig/kdig and raw datagrams, on the installed
daemon: TC=1 only when required data is lost (RFC 2181 §9), CD copied into every response
(RFC 4035 §3.2.2), DO echoed on BADVERS (RFC 3225 §3), an OPT in the FORMERR to a query
without a question but with a valid OPT (RFC 6891 §7)."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.rcode
import pytest

from tests.support.blackbox import dig, udp
from tests.support.daemon import Daemon, run_daemon
from tests.support.upstream import FakeUpstream, Reply, answer, rrset

pytestmark = pytest.mark.slow


def handler(data: bytes, _t: str) -> Reply:
    """MX questions: 12 MX records (40 under ``many.``) with A and AAAA glue for each (12 MX
    fit in 512 bytes, the glue does not); A: one record. No reply echoes CD, so the daemon
    must set it itself."""
    q = dns.message.from_wire(data)
    name = q.question[0].name
    if q.question[0].rdtype == 15:
        n = 40 if str(name).lower().startswith("many.") else 12
        r = dns.message.from_wire(answer(data, *(f"{name} 300 IN MX {k} m{k}.{name}"
                                                 for k in range(n))))
        for k in range(n):
            r.additional.append(rrset(f"m{k}.{name} 300 IN A 192.0.2.{k + 1}"))
            r.additional.append(rrset(f"m{k}.{name} 300 IN AAAA 2001:db8::{k + 1}"))
    else:
        r = dns.message.from_wire(answer(data, f"{name} 300 IN A 192.0.2.9"))
    r.flags &= ~dns.flags.CD
    return r.to_wire(max_size=65535)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with FakeUpstream(handler) as up, \
            run_daemon(tmp_path_factory.mktemp("proto"), upstreams=(up.addr,),
                       config="[dns]\nrate_limit = 0.0\n") as d:
        yield d


def _flags(out: str) -> set[str]:
    m = re.search(r"flags: ([a-z ]+);", out)
    assert m, out
    return set(m.group(1).split())


def test_glue_that_does_not_fit_is_dropped_without_tc(daemon: Daemon) -> None:
    assert "ANSWER: 12" in dig(daemon.port, "mx.example.test", "MX", "+bufsize=1232")
    out = dig(daemon.port, "mx.example.test", "MX", "+noedns", "+ignore")   # 512 bytes
    assert "status: NOERROR" in out and "tc" not in _flags(out), out
    assert "ANSWER: 12" in out and "ADDITIONAL: 0" in out, out
    out = dig(daemon.port, "mx.example.test", "MX", "+edns=0", "+bufsize=512", "+ignore")
    assert "tc" not in _flags(out) and "ANSWER: 12" in out and "ADDITIONAL: 1" in out, out


def test_tc_when_the_answer_itself_does_not_fit(daemon: Daemon) -> None:
    out = dig(daemon.port, "many.example.test", "MX", "+noedns", "+ignore")
    assert "tc" in _flags(out) and "ANSWER: 0" in out, out
    out = dig(daemon.port, "many.example.test", "MX", "+noedns", tool="kdig")   # retries TCP
    assert "ANSWER: 40" in out, out


@pytest.mark.parametrize("args", [("cd.example.test", "A"), ("version.bind", "TXT", "-c", "CH"),
                                  ("mx.example.test", "MX", "+noedns", "+ignore")])
def test_cd_is_copied_into_the_response(daemon: Daemon, args: tuple[str, ...]) -> None:
    dig(daemon.port, *args)                                   # cached without CD
    out = dig(daemon.port, "+cdflag", *args)
    assert "cd" in _flags(out), out
    assert "cd" not in _flags(dig(daemon.port, *args))


def test_badvers_echoes_do(daemon: Daemon) -> None:
    out = dig(daemon.port, "www.example.test", "A", "+edns=1", "+dnssec", "+noednsnegotiation")
    assert "status: BADVERS" in out and re.search(r"EDNS: version: 0, flags: do;", out), out
    out = dig(daemon.port, "www.example.test", "A", "+edns=1", "+dnssec", tool="kdig")
    assert "BADVERS" in out and re.search(r"Version: 0; flags: do;", out), out
    out = dig(daemon.port, "www.example.test", "A", "+edns=1", "+nodnssec",
              "+noednsnegotiation")
    assert "status: BADVERS" in out and re.search(r"EDNS: version: 0, flags:;", out), out


def test_formerr_for_no_question_carries_opt(daemon: Daemon) -> None:
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00"        # 1232, version 0, DO
    wire = udp(daemon.port, struct.pack(">HHHHHH", 4242, 0x0100, 0, 0, 0, 1) + opt)
    assert wire is not None
    r = dns.message.from_wire(wire)
    assert r.id == 4242 and r.rcode() == dns.rcode.FORMERR and not r.question
    assert r.edns == 0 and r.ednsflags & dns.flags.DO, r
