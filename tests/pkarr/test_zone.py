"""Zone text -> records -> signed packet -> zone text, for every common type, and errors."""

from __future__ import annotations

import dns.message
import dns.rdatatype
import pytest

from pkdns.errors import UsageError
from pkdns.pkarr.keys import Keypair
from pkdns.pkarr.signed_packet import SignedPacket
from pkdns.pkarr.zone import (
    DEFAULT_TTL,
    parse_zone,
    records_to_text,
    substitute_variables,
    variables_used,
)

KP = Keypair.from_seed(bytes(32))
KEY = KP.public_key
Z32 = KEY.z32

ZONE = """\
$TTL 60
@      IN    A      127.0.0.1
       IN    AAAA   ::1            ; same owner as the line above
www    300   CNAME  example.com.
alias        CNAME  www
text   IN    TXT    hero=satoshi2 "two words"
@            MX     10 mail
@            MX     20 mail.example.com.
sub          NS     ns1.example.net.
_sip._udp    SRV    10 60 5060 sip.example.com.
@            CAA    0 issue "letsencrypt.org"
ptr          PTR    host.example.org.
svc          SVCB   1 svc.example.net. alpn=h2,h3 port=8443
@            HTTPS  1 . alpn=h2 ipv4hint=192.0.2.1
key          SSHFP  1 1 123456789abcdef67890123456789abcdef67890
weird        TYPE999 \\# 3 010203
"""

EXPECTED = """\
@ 60 IN A 127.0.0.1
@ 60 IN AAAA ::1
www 300 IN CNAME example.com.
alias 60 IN CNAME www
text 60 IN TXT "hero=satoshi2" "two words"
@ 60 IN MX 10 mail
@ 60 IN MX 20 mail.example.com.
sub 60 IN NS ns1.example.net.
_sip._udp 60 IN SRV 10 60 5060 sip.example.com.
@ 60 IN CAA 0 issue "letsencrypt.org"
ptr 60 IN PTR host.example.org.
svc 60 IN SVCB 1 svc.example.net. alpn="h2,h3" port="8443"
@ 60 IN HTTPS 1 . alpn="h2" ipv4hint="192.0.2.1"
key 60 IN SSHFP 1 1 123456789abcdef67890123456789abcdef67890
weird 60 IN TYPE999 \\# 3 010203
"""


def test_every_type_round_trips_through_a_signed_packet() -> None:
    records = parse_zone(ZONE, KEY)
    sp = SignedPacket.sign(KP, records, 1)
    again = SignedPacket.from_bytes(sp.to_bytes())
    assert records_to_text(again.records, Z32) == EXPECTED
    assert records_to_text(records, Z32) == EXPECTED


def test_packet_is_readable_by_dnspython() -> None:
    sp = SignedPacket.sign(KP, parse_zone(ZONE, KEY), 1)
    msg = dns.message.from_wire(sp.packet)
    types = {dns.rdatatype.to_text(rrset.rdtype) for rrset in msg.answer}
    assert {"A", "AAAA", "CNAME", "TXT", "MX", "NS", "SRV", "CAA", "PTR", "SVCB",
            "HTTPS"} <= types
    names = {rrset.name.to_text() for rrset in msg.answer}
    assert f"{Z32}." in names and f"_sip._udp.{Z32}." in names


def test_names_relative_absolute_and_apex() -> None:
    records = parse_zone("a A 1.1.1.1\nb.c. A 1.1.1.1\n" .replace("b.c.", f"b.{Z32}."), KEY)
    assert [str(r.rname) for r in records] == [f"a.{Z32}.", f"b.{Z32}."]
    (apex,) = parse_zone("@ A 1.1.1.1", KEY)
    assert str(apex.rname) == f"{Z32}."


def test_uppercase_key_in_owner_is_canonicalized() -> None:
    (rr,) = parse_zone(f"FOO.{Z32.upper()}. A 1.1.1.1", KEY)
    assert str(rr.rname) == f"FOO.{Z32}."
    sp = SignedPacket.sign(KP, [rr], 1)
    assert sp.names == (f"foo.{Z32}",)


def test_default_ttl_and_override() -> None:
    (rr,) = parse_zone("a A 1.1.1.1", KEY)
    assert rr.ttl == DEFAULT_TTL == 300
    a, b, c = parse_zone("a 7 A 1.1.1.1\n$TTL 9\nb A 1.1.1.1\nc 1h A 1.1.1.1", KEY)
    assert (a.ttl, b.ttl, c.ttl) == (7, 9, 3600)


def test_origin_directive_relative_to_key() -> None:
    (rr,) = parse_zone("$ORIGIN sub\nx A 1.1.1.1", KEY)
    assert str(rr.rname) == f"x.sub.{Z32}."


def test_empty_zone_and_comments() -> None:
    assert parse_zone("", KEY) == []
    assert parse_zone("; nothing\n\n", KEY) == []


def test_dnslib_types_stay_typed_for_the_resolver() -> None:
    cname, mx = parse_zone("w CNAME example.com.\n@ MX 5 mx.example.com.", KEY)
    assert str(cname.rdata.label) == "example.com."
    assert str(mx.rdata.label) == "mx.example.com." and mx.rdata.preference == 5


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a A 1.2.3", "z.zone:3: A record: '1.2.3' is not an IPv4 address: 'a A 1.2.3'"),
        ("a A {external_ipv5}", "z.zone:3: unknown variable {external_ipv5} (known: "
         "{external_ipv4}, {external_ipv6})"),
        ("mx 60 IN AAAA {external-ipv6}", "z.zone:3: unknown variable {external-ipv6}"),
        ("a FOO 1.2.3.4", "z.zone:3: unknown rdatatype 'FOO'"),
        ("a AAAA 1.1.1.1", "z.zone:3: AAAA record: '1.1.1.1' is not an IPv6 address"),
        ("a MX mail", "z.zone:3: expecting an integer (MX record fields: preference exchange)"),
        ("a TXT", "z.zone:3: Text input ended unexpectedly (TXT record fields: strings)"),
        ('a TXT "open', "z.zone:3: newline in quoted string (TXT record fields: strings)"),
        ("example.com. A 1.2.3.4", "z.zone:3: owner name example.com. is outside the key's zone"),
        ("@ SOA a. b. 1 2 3 4 5", "z.zone:3: SOA records cannot be published"),
        ("a OPT \\# 0", "z.zone:3: OPT records cannot be published"),
        ("a TYPE4321 \\# 0", "z.zone:3: a." + Z32 + ". has an empty TYPE4321 record"),
        ("$INCLUDE /etc/passwd", "z.zone:3: zone file directive '$INCLUDE' is not allowed"),
        ("$GENERATE 1-2 a$ A 1.1.1.1", "zone file directive '$GENERATE' is not allowed"),
        ("a CH A 1.1.1.1", "z.zone:3: RR class is not zone's class"),
        ("$TTL x", "z.zone:3: DNS TTL value is not well-formed"),
        ("ok CNAME example.com.", "z.zone:3: CNAME rdataset is not compatible with a regular data"),
    ],
)
def test_errors_name_file_and_line(line: str, message: str) -> None:
    text = f"; header\nok A 1.1.1.1\n{line}\nlast A 1.1.1.1\n"
    with pytest.raises(UsageError) as info:
        parse_zone(text, KEY, filename="z.zone")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_variables() -> None:
    text = "a A {external_ipv4}\nb AAAA {external_ipv6}\nc A {external_ipv4}\n"
    assert variables_used(text) == (True, True)
    assert variables_used("a A 1.1.1.1") == (False, False)
    done = substitute_variables(text, "192.0.2.7", "2001:db8::7")
    assert done == "a A 192.0.2.7\nb AAAA 2001:db8::7\nc A 192.0.2.7\n"
    a, b, c = parse_zone(done, KEY)
    assert (str(a.rdata), str(b.rdata)) == ("192.0.2.7", "2001:db8::7")
    assert substitute_variables("a A 1.1.1.1", None, None) == "a A 1.1.1.1"
    with pytest.raises(UsageError, match=r"\{external_ipv6\}"):
        substitute_variables(text, "192.0.2.7", None)


@pytest.mark.parametrize("ending", ["", "\n", "\r\n", " ; comment\n"])
def test_error_line_with_any_line_ending(ending: str) -> None:
    with pytest.raises(UsageError, match=r"^z:2: A record: '1.2.3' is not an IPv4 address"):
        parse_zone(f"ok A 1.1.1.1\nbad A 1.2.3{ending}", KEY, filename="z")
