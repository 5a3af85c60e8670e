"""DNS routing to the gateway (pure): which names, which types, which TTL; and the pages."""

from __future__ import annotations

from typing import Any

from dnslib import QTYPE, RCODE, DNSRecord

from pkdns.answer.names import PkarrName, classify
from pkdns.answer.synth import SynthOptions
from pkdns.gateway import pages
from pkdns.gateway.route import GatewayRoute, origin_name, tlsa_at
from pkdns.pkarr.signed_packet import SignedPacket
from pkdns.pkarr.zone import parse_zone
from tests.support import pkarr_factory as pf

KP = pf.keypair(9)
Z = KP.public_key.z32
DIGEST = "ab" * 32
ZONE = f"""\
@          600 IN A     192.0.2.10
@          600 IN AAAA  2001:db8::10
@          600 IN HTTPS 1 . alpn=h2 ipv4hint=192.0.2.10
_443._tcp  120 IN TLSA  3 1 1 {DIGEST}
www        600 IN A     192.0.2.11
plain      600 IN A     192.0.2.12
_443._tcp.www 900 IN TLSA 3 1 1 {DIGEST}
"""
PACKET = SignedPacket.sign(KP, parse_zone(ZONE, KP.public_key), pf.TS)
ROUTE = GatewayRoute(("127.0.0.1",), SynthOptions())


def _name(qname: str) -> PkarrName:
    name = classify(qname, "key")
    assert isinstance(name, PkarrName)
    return name


def _ask(qname: str, qtype: str, route: GatewayRoute = ROUTE, age: float = 0,
         stale: bool = False) -> Any:
    return route(DNSRecord.question(qname, qtype), _name(qname), PACKET, age, stale)


def test_a_for_a_name_with_tlsa_under_key_points_at_the_gateway() -> None:
    reply = _ask(f"{Z}.key", "A")
    assert reply is not None and reply.header.rcode == RCODE.NOERROR and reply.header.aa
    assert [(str(rr.rname), str(rr.rdata), rr.ttl) for rr in reply.rr] == [
        (f"{Z}.key.", "127.0.0.1", 120)]        # the TLSA record's TTL
    www = _ask(f"WWW.{Z}.key", "A", age=100)
    assert [(str(rr.rname), str(rr.rdata), rr.ttl) for rr in www.rr] == [
        (f"WWW.{Z}.key.", "127.0.0.1", 800)]    # as asked; aged like synthesis ages it
    assert _ask(f"{Z}.key", "A", stale=True).rr[0].ttl == 30


def test_other_families_types_and_forms_are_not_rerouted() -> None:
    aaaa = _ask(f"{Z}.key", "AAAA")          # the gateway has no IPv6 answer address
    assert aaaa.header.rcode == RCODE.NOERROR and not aaaa.rr and aaaa.auth[0].rtype == QTYPE.SOA
    https = _ask(f"{Z}.key", "HTTPS")        # hints would lead around the gateway
    assert https.header.rcode == RCODE.NOERROR and not https.rr
    assert _ask(f"{Z}.key", "TXT") is None and _ask(f"{Z}.key", "TLSA") is None
    assert _ask(Z, "A") is None                      # the bare-key form keeps real addresses
    assert _ask(f"plain.{Z}.key", "A") is None       # no TLSA there
    both = GatewayRoute(("127.0.0.1", "::1", "10.0.0.1"), SynthOptions())
    assert [str(rr.rdata) for rr in _ask(f"{Z}.key", "AAAA", both).rr] == ["::1"]
    assert [str(rr.rdata) for rr in _ask(f"{Z}.key", "A", both).rr] == ["127.0.0.1", "10.0.0.1"]


def test_tlsa_lookup_and_origin_name() -> None:
    assert [r.text() for r in tlsa_at(PACKET, _name(f"www.{Z}.key"))] == [f"3 1 1 {DIGEST}"]
    assert tlsa_at(PACKET, _name(f"plain.{Z}.key")) == []
    assert origin_name(_name(f"www.{Z}.key")) == f"www.{Z}"
    assert origin_name(_name(f"{Z}.key")) == Z


def test_pages() -> None:
    assert pages.key_name(f"www.{Z}.KEY:443") == _name(f"www.{Z}.key")
    for host in (Z, "example.com", f"{Z}.key.example.com", "", f"x{Z}.key"):
        assert pages.key_name(host) is None, host
    head = f"GET /a?b=1 HTTP/1.1\r\nHost: {Z}.key\r\nAccept: */*\r\n\r\n".encode()
    assert pages.request_target(head) == (f"{Z}.key", "/a?b=1")
    assert pages.request_target(b"GET / HTTP/1.1\r\n\r\n") is None
    redirect = pages.redirect(f"{Z}.key:80", "/a?b=1")
    assert redirect.startswith(b"HTTP/1.1 308 ")
    assert f"\r\nLocation: https://{Z}.key/a?b=1\r\n".encode() in redirect
    page = pages.bad_gateway(f"{Z}.key", "a <reason>")
    assert page.startswith(b"HTTP/1.1 502 Bad Gateway\r\n") and b"a &lt;reason&gt;" in page
    length = int(page.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    assert len(page.split(b"\r\n\r\n", 1)[1]) == length


class _OneKey:
    async def get(self, key: object, client_ip: str) -> Any:
        from pkdns.answer.packets import SourceResult, Status

        return SourceResult(Status.FOUND, PACKET)


async def test_the_rebinding_filter_leaves_the_gateway_address_alone() -> None:
    from pkdns.answer.answerer import PkarrAnswerer
    from pkdns.config import PkarrConfig

    handler = PkarrAnswerer(_OneKey(), None, PkarrConfig())     # filter on, key not exempt
    handler.route = ROUTE
    routed = await handler.answer(DNSRecord.question(f"{Z}.key", "A"), "127.0.0.1")
    assert [str(rr.rdata) for rr in routed.rr] == ["127.0.0.1"]
    handler.route = GatewayRoute(("127.0.0.1",), SynthOptions())
    plain = await handler.answer(DNSRecord.question(f"plain.{Z}.key", "A"), "127.0.0.1")
    assert [str(rr.rdata) for rr in plain.rr] == ["192.0.2.12"]   # not routed: as published
