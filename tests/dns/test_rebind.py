"""The DNS rebinding filter, pure: which addresses are blocked, what is removed from a message,
and the ICANN guard that runs when an upstream reply enters the cache."""

from __future__ import annotations

import ipaddress

import dnslib
import pytest
from dnslib import QTYPE, RR, DNSRecord
from dnslib.dns import HTTPS, RD

from pkdns.dns import rebind, wire
from pkdns.dns.rebind_icann import IcannGuard, suspicious
from pkdns.dns.reply import ReplyInfo, inspect_reply
from pkdns.metrics import Metrics

# Every address the attack trial served through a key (issue 13 item 3), and their kin.
ATTACK = ["0.0.0.0", "10.0.0.1", "100.64.0.1", "127.0.0.1", "169.254.1.1", "172.16.0.1",
          "192.168.1.1", "::", "::1", "::ffff:127.0.0.1", "fc00::1", "fe80::1"]
ALSO_BLOCKED = ["0.1.2.3", "10.255.255.255", "100.127.255.254", "127.8.9.10", "172.31.0.1",
                "fd12:3456::1", "febf::1", "fec0::1", "::ffff:10.0.0.1", "::ffff:192.168.0.1",
                "64:ff9b::a00:1", "64:ff9b::7f00:1", "::ffff:0.0.0.0"]
PUBLIC = ["1.1.1.1", "8.8.8.8", "192.0.2.1", "198.51.100.7", "100.63.255.255", "100.128.0.1",
          "172.15.255.255", "172.32.0.1", "192.169.0.1", "11.0.0.1", "224.0.0.1",
          "2606:4700::1111", "2001:db8::1", "::ffff:8.8.8.8", "64:ff9b::808:808", "fe00::1",
          "ff02::1", "2002:a00:1::1"]


@pytest.mark.parametrize("addr", ATTACK + ALSO_BLOCKED)
def test_blocked(addr: str) -> None:
    assert rebind.blocked(addr)
    assert rebind.blocked_packed(ipaddress.ip_address(addr).packed)


@pytest.mark.parametrize("addr", PUBLIC)
def test_public_is_not_blocked(addr: str) -> None:
    assert not rebind.blocked(addr)


def test_not_an_address_is_left_alone() -> None:
    assert not rebind.blocked("example.com")
    assert not rebind.blocked_packed(b"\x7f\x00\x00")


def test_networks_agree_with_ipaddress() -> None:
    """The integer fast path agrees with ``ipaddress`` membership at every network's edges
    (first, last, and the neighbours just outside), plain and IPv4-mapped."""
    for net in rebind.BLOCKED_V4:
        for addr in (net.network_address, net.broadcast_address):
            assert rebind.blocked(str(addr))
            mapped = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + addr.packed)
            assert rebind.blocked(str(mapped))
        assert not rebind.blocked(str(net.broadcast_address + 1))
        if int(net.network_address):
            assert not rebind.blocked(str(net.network_address - 1))
    for net6 in rebind.BLOCKED_V6:
        assert rebind.blocked(str(net6.network_address))
        assert rebind.blocked(str(net6.broadcast_address))
        after = net6.broadcast_address + 1
        assert rebind.blocked(str(after)) == any(after in n for n in rebind.BLOCKED_V6)


def _reply(qname: str, qtype: str, *zone_lines: str, section: str = "rr") -> DNSRecord:
    msg = DNSRecord.question(qname, qtype).reply()
    for line in zone_lines:
        for rr in RR.fromZone(line):
            {"rr": msg.add_answer, "ar": msg.add_ar, "auth": msg.add_auth}[section](rr)
    return msg


def test_filter_message_removes_only_blocked_records() -> None:
    msg = _reply("a.example", "A", "a.example. 60 CNAME b.example.", "b.example. 60 A 10.0.0.1",
                 "b.example. 60 A 192.0.2.1", "b.example. 60 A 127.0.0.1")
    assert rebind.filter_message(msg) == 2
    assert [str(rr.rdata) for rr in msg.rr] == ["b.example.", "192.0.2.1"]
    assert rebind.answers_type(msg, QTYPE.A)


def test_filter_message_additional_and_authority() -> None:
    msg = _reply("x.example", "NS", "x.example. 60 NS ns.x.example.")
    msg.add_ar(*RR.fromZone("ns.x.example. 60 A 192.168.1.1"))
    msg.add_ar(*RR.fromZone("ns.x.example. 60 AAAA fe80::1"))
    msg.add_ar(*RR.fromZone("ns.x.example. 60 AAAA 2001:db8::53"))
    assert rebind.filter_message(msg) == 2
    assert [str(rr.rdata) for rr in msg.ar] == ["2001:db8::53"]


def test_everything_filtered_leaves_no_answer_of_the_type() -> None:
    msg = _reply("a.example", "AAAA", "a.example. 60 AAAA ::1", "a.example. 60 AAAA fc00::1")
    assert rebind.filter_message(msg) == 2 and msg.rr == []
    assert not rebind.answers_type(msg, QTYPE.AAAA)


def test_https_hints_are_cleaned() -> None:
    rdata = HTTPS.fromZone(["1", ".", "alpn=h2", "ipv4hint=192.168.1.38,192.0.2.5",
                            "ipv6hint=::1"])
    msg = DNSRecord.question("a.example", "HTTPS").reply()
    msg.add_answer(RR("a.example", QTYPE.HTTPS, rdata=rdata, ttl=60))
    assert rebind.filter_message(msg) == 2
    again = DNSRecord.parse(msg.pack())             # still valid wire after the edit
    assert str(again.rr[0].rdata) == "1 . alpn=h2 ipv4hint=192.0.2.5"


def test_svcb_hints_are_cleaned_in_raw_rdata() -> None:
    # SVCB (64) is not in dnslib's type map: its RDATA stays raw bytes
    params = (b"\x00\x04\x00\x08" + bytes([127, 0, 0, 1, 192, 0, 2, 9])
              + b"\x00\x06\x00\x10" + ipaddress.IPv6Address("fe80::1").packed)
    raw = b"\x00\x01" + b"\x03svc\x07example\x00" + params
    msg = DNSRecord.question("a.example", "A").reply()
    msg.add_answer(RR("a.example", 64, rdata=RD(raw), ttl=60))
    assert rebind.filter_message(msg) == 2
    assert msg.rr[0].rdata.data == (b"\x00\x01\x03svc\x07example\x00"
                                    + b"\x00\x04\x00\x04" + bytes([192, 0, 2, 9]))


def test_svcb_params_rejects_truncated_rdata() -> None:
    assert rebind.svcb_params(b"\x00\x01\x03svc") is None
    assert rebind.svcb_params(b"\x00\x01\x00\x00\x04\x00\x08\x7f") is None
    assert rebind.svcb_params(b"\x00\x01\x00") == (b"\x00\x01\x00", [])


def test_clean_hints_drops_an_emptied_hint_and_keeps_odd_lengths() -> None:
    params = [(4, bytes([10, 0, 0, 1])), (6, b"\x01\x02\x03"), (1, b"\x02h2")]
    kept, removed = rebind.clean_hints(params)
    assert removed == 1 and kept == [(6, b"\x01\x02\x03"), (1, b"\x02h2")]


# --- the ICANN guard (filter on cache insert) ---------------------------------------------

def _info(msg: DNSRecord) -> ReplyInfo:
    msg.header.id = 0
    return inspect_reply(bytes(msg.pack()))


def _key(qname: str, qtype: int) -> bytes:
    return wire.name_wire(qname) + qtype.to_bytes(2, "big") + b"\x00\x01\x00"


def test_guard_returns_a_clean_reply_unchanged() -> None:
    info = _info(_reply("a.example", "A", "a.example. 60 A 192.0.2.1"))
    metrics = Metrics()
    assert IcannGuard((), metrics)(_key("a.example", QTYPE.A), info) is info
    assert not suspicious(info)
    assert "pkdns_rebind_filtered_total{" not in metrics.render().decode()


@pytest.mark.parametrize("addr", ATTACK)
def test_guard_removes_each_attack_address(addr: str) -> None:
    qtype = "AAAA" if ":" in addr else "A"
    text = str(ipaddress.ip_address(addr)).replace("::ffff:127.0.0.1", "::ffff:7f00:1")  # dnslib
    info = _info(_reply("evil.example", qtype, f"evil.example. 60 {qtype} {text}",
                        "evil.example. 60 TXT other-data"))
    metrics = Metrics()
    out = IcannGuard((), metrics)(_key("evil.example", getattr(QTYPE, qtype)), info)
    msg = DNSRecord.parse(out.wire)
    assert [QTYPE[rr.rtype] for rr in msg.rr] == ["TXT"]
    text = metrics.render().decode()
    assert 'pkdns_rebind_filtered_total{source="icann"} 1.0' in text
    assert 'pkdns_rebind_emptied_total{source="icann"} 1.0' in text


def test_guard_keeps_public_addresses_and_the_cname_chain() -> None:
    info = _info(_reply("w.example", "A", "w.example. 60 CNAME x.example.",
                        "x.example. 60 A 10.1.1.1", "x.example. 60 A 192.0.2.44"))
    out = IcannGuard(())(_key("w.example", QTYPE.A), info)
    msg = DNSRecord.parse(out.wire)
    assert [str(rr.rdata) for rr in msg.rr] == ["x.example.", "192.0.2.44"]
    assert out.ancount == 2 and len(out.offsets) == 2


def test_guard_exempts_allowed_domains() -> None:
    guard = IcannGuard(["lan", "Corp.Example."])
    info = _info(_reply("nas.lan", "A", "nas.lan. 60 A 192.168.1.20"))
    assert guard(_key("nas.lan", QTYPE.A), info) is info
    deep = _info(_reply("a.b.corp.example", "A", "a.b.corp.example. 60 A 10.0.0.9"))
    assert guard(_key("a.b.corp.example", QTYPE.A), deep) is deep
    other = _info(_reply("notcorp.example", "A", "notcorp.example. 60 A 10.0.0.9"))
    assert guard(_key("notcorp.example", QTYPE.A), other) is not other


def test_guard_sees_https_hints_in_wire() -> None:
    rdata = HTTPS.fromZone(["1", ".", "ipv4hint=127.0.0.1"])
    msg = DNSRecord.question("h.example", "HTTPS").reply()
    msg.add_answer(RR("h.example", QTYPE.HTTPS, rdata=rdata, ttl=60))
    info = _info(msg)
    assert suspicious(info)
    out = IcannGuard(())(_key("h.example", QTYPE.HTTPS), info)
    assert str(DNSRecord.parse(out.wire).rr[0].rdata) == "1 ."


def test_dnslib_is_what_the_guard_rebuilds_with() -> None:
    # the rare path re-packs with dnslib: a compressed reply with glue survives the round trip
    msg = _reply("d.example", "A", "d.example. 60 A 172.16.5.5", "d.example. 60 A 192.0.2.8")
    msg.add_auth(*RR.fromZone("example. 60 NS ns.example."))
    msg.add_ar(*RR.fromZone("ns.example. 60 A 192.168.0.53"))
    out = IcannGuard(())(_key("d.example", QTYPE.A), _info(msg))
    parsed = dnslib.DNSRecord.parse(out.wire)
    assert [str(r.rdata) for r in parsed.rr] == ["192.0.2.8"] and parsed.ar == []
    assert [QTYPE[r.rtype] for r in parsed.auth] == ["NS"]
