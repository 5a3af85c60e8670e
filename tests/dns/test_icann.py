"""The ICANN path on its own (the resolver's slow path for ICANN names and the pkarr side's
way to them), and the seam: the pkarr handler holds it, not the resolver."""

from __future__ import annotations

import dns.rcode
import dnslib

from pkdns.app import Daemon
from pkdns.config import Config, DnsConfig, HttpConfig
from pkdns.dns.icann import IcannPath
from pkdns.dns.resolver import Resolver
from tests.dns.test_resolver import make
from tests.support.upstream import FakeUpstream, a_record, silent


async def test_resolve_and_query_server_for_the_pkarr_side() -> None:
    with FakeUpstream(a_record("192.0.2.44")) as up:
        r = make(up)
        rec = await r.icann.resolve("Target.Example.test", 1)
        assert rec.header.rcode == 0 and str(rec.rr[0].rdata) == "192.0.2.44"
        question = dnslib.DNSRecord.question("ns.sub.test")
        rec2 = await r.icann.query_server((up.host, up.port), question)
        assert str(rec2.rr[0].rdata) == "192.0.2.44"
        assert r.tally.hits[0] == 0 and r.tally.misses[0] == 1
        await r.icann.resolve("target.example.TEST", 1)      # the same key: a cache hit
        assert r.tally.hits[0] == 1
    with FakeUpstream(silent) as down:
        r = make(down)
        failed = await r.icann.resolve("x.test", 1)
        assert failed.header.rcode == dns.rcode.SERVFAIL


def test_the_pkarr_handler_holds_the_icann_path_not_the_resolver() -> None:
    daemon = Daemon(Config(dns=DnsConfig(upstream=(("127.0.0.1", 9),)),
                           http=HttpConfig(enabled=False)))
    handler = daemon.pkarr.handler
    assert isinstance(handler.icann, IcannPath) and handler.icann is daemon.resolver.icann
    assert daemon.pkarr.icann is daemon.resolver.icann
    assert not any(isinstance(v, Resolver) for v in vars(handler.icann).values())
