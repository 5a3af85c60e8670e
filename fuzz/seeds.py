"""The seed corpora in ``fuzz/corpus/<target>/``: small valid (and a few near-valid) inputs.

    python -m fuzz.seeds          # (re)write the seed-* files; regress-* files are kept

Seeds give the fuzzer every message shape to start from (a fuzzer that must discover a valid
Ed25519 signature or a bencoded dict by mutation never gets past the first check). Crashes
the fuzzer found are kept beside them as ``regress-<target>-<what>`` and replayed by the tests.
"""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import dnslib
import fastbencode

from fuzz.targets import KEYPAIR, TS
from pkdns.dht import item
from pkdns.dht.ids import target_of
from pkdns.pkarr.signed_packet import SignedPacket, signable
from pkdns.pkarr.zone import parse_zone

CORPUS = Path(__file__).resolve().parent / "corpus"
ROOT = CORPUS.parent.parent
Z = KEYPAIR.public_key.z32


def _query(name: str, qtype: str, edns: bool = False, do: bool = False) -> bytes:
    q = dnslib.DNSRecord.question(name, qtype)
    q.header.id = 0x1234
    if edns:
        q.add_ar(dnslib.EDNS0(udp_len=1232, flags="do" if do else ""))
    return bytes(q.pack())


def dns_query() -> dict[str, bytes]:
    plain = _query("www.example.com", "A")
    return {
        "a": plain,
        "edns-do": _query("Www.ExAmple.COM", "AAAA", edns=True, do=True),
        "key": _query(f"_x.{Z}.key", "TXT", edns=True),
        "any": _query("example.org", "ANY"),
        "cd": plain[:3] + bytes((plain[3] | 0x10,)) + plain[4:],
        "opcode-notify": plain[:2] + bytes((0x20,)) + plain[3:],
        "qr-set": plain[:2] + bytes((0x81,)) + plain[3:],
        "badvers": _query("a.test", "A", edns=True)[:-6] + b"\x01\x00\x00\x00\x00\x00",
        "pointer-qname": plain[:12] + b"\xc0\x0c\x00\x01\x00\x01",
        "two-questions": plain[:5] + b"\x02" + plain[6:] + plain[12:],
    }


def _reply(qname: str, qtype: str, *zone: str, auth: tuple[str, ...] = (),
           rcode: int = 0, edns: bool = False) -> bytes:
    q = dnslib.DNSRecord.question(qname, qtype)
    r = q.reply()
    r.header.rcode = rcode
    for line in zone:
        r.add_answer(*dnslib.RR.fromZone(line))
    for line in auth:
        r.add_auth(*dnslib.RR.fromZone(line))
    if edns:
        r.add_ar(dnslib.EDNS0(udp_len=1232))
    return bytes(r.pack())


def upstream_reply() -> dict[str, bytes]:
    https = dnslib.DNSRecord.question("h.example", "HTTPS").reply()
    https.add_answer(dnslib.RR("h.example", dnslib.QTYPE.HTTPS, ttl=60, rdata=dnslib.HTTPS.fromZone(
        ["1", ".", "alpn=h2", "ipv4hint=192.0.2.1,10.0.0.1", "ipv6hint=::1"])))
    return {
        "a": _reply("www.example.com", "A", "www.example.com. 300 A 192.0.2.1", edns=True),
        "cname-chain": _reply("w.example", "A", "w.example. 60 CNAME x.example.",
                              "x.example. 60 A 192.0.2.2", "x.example. 60 A 192.0.2.3"),
        "nxdomain-soa": _reply("nope.example", "A", rcode=3, auth=(
            "example. 60 SOA ns.example. host.example. 1 2 3 4 30",)),
        "out-of-chain": _reply("a.example", "A", "a.example. 60 A 192.0.2.4",
                               "evil.example. 60 A 192.0.2.66"),
        "private": _reply("lan.example", "A", "lan.example. 60 A 192.168.1.1",
                          "lan.example. 60 A 192.0.2.5"),
        "https-hints": bytes(https.pack()),
        "txt-mx": _reply("m.example", "MX", "m.example. 60 MX 10 mail.m.example.",
                         'm.example. 60 TXT "v=spf1 -all"'),
    }


def _signed_item(seq: int, v: bytes) -> item.MutableItem:
    return item.sign_item(KEYPAIR.seed, seq, v)


def krpc() -> dict[str, bytes]:
    node_id = bytes(range(20))
    signed = _signed_item(TS, _packet_bytes())
    nodes = node_id + bytes((192, 0, 2, 1)) + struct.pack(">H", 6881)

    def b(msg: dict[bytes, object]) -> bytes:
        return bytes(fastbencode.bencode(msg))

    return {
        "ping": b({b"t": b"aa", b"y": b"q", b"q": b"ping", b"a": {b"id": node_id}}),
        "find-node": b({b"t": b"ab", b"y": b"q", b"q": b"find_node",
                        b"a": {b"id": node_id, b"target": node_id}}),
        "get": b({b"t": b"ac", b"y": b"q", b"q": b"get",
                  b"a": {b"id": node_id, b"target": target_of(signed.k), b"seq": 1}}),
        "put": b({b"t": b"ad", b"y": b"q", b"q": b"put",
                  b"a": {b"id": node_id, b"token": b"tok", b"k": signed.k, b"seq": signed.seq,
                         b"v": signed.v, b"sig": signed.sig}}),
        "nodes": b({b"t": b"ae", b"y": b"r", b"r": {b"id": node_id, b"nodes": nodes},
                    b"ip": bytes((192, 0, 2, 9, 0x1a, 0xe1))}),
        "value": b({b"t": b"af", b"y": b"r", b"r": {
            b"id": node_id, b"token": b"tk", b"k": signed.k, b"seq": signed.seq,
            b"v": signed.v, b"sig": signed.sig, b"nodes": nodes}}),
        "error": b({b"t": b"ag", b"y": b"e", b"e": [302, b"Sequence number less than current"]}),
        "read-only": b({b"t": b"ah", b"y": b"q", b"q": b"get", b"ro": 1, b"v": b"LT01",
                        b"a": {b"id": node_id, b"target": node_id}}),
    }


def _packet_bytes() -> bytes:
    records = parse_zone("@ 300 IN A 192.0.2.1\nwww 300 IN CNAME @\n"
                         '_t 300 IN TXT "hi"\nsub 300 IN NS ns.sub\nns.sub 300 IN A 192.0.2.53\n'
                         "*.w 300 IN AAAA 2001:db8::1\n@ 300 IN HTTPS 1 . alpn=h2\n",
                         KEYPAIR.public_key)
    return SignedPacket.sign(KEYPAIR, records, TS).packet


def bep44_item() -> dict[str, bytes]:
    signed = _signed_item(TS, _packet_bytes())
    fields = signed.k + signed.sig + struct.pack(">Q", signed.seq) + signed.v
    seq = struct.pack(">Q", TS)
    return {
        "fields": b"\x00" + fields,
        "signed": b"\x01" + seq + _packet_bytes(),
        "signed-flip": b"\x0b" + seq + b"\x00" * 20,
        "not-a-packet": b"\x01" + seq + b"hello",
    }


def signed_packet() -> dict[str, bytes]:
    packet = _packet_bytes()
    sp = SignedPacket.sign_packet(KEYPAIR, packet, TS)
    empty = bytes.fromhex("000084000000000000000000")
    return {
        "canonical": b"\x00" + sp.to_bytes(),
        "sign-records": b"\x01" + struct.pack(">Q", TS) + packet,
        "sign-empty": b"\x01" + struct.pack(">Q", TS) + empty,
        "sign-garbage": b"\x01" + struct.pack(">Q", TS) + b"\x00\x00\x84\x00\x00\x00\x00\x05",
    }


def zone_file() -> dict[str, bytes]:
    return {
        "demo": (ROOT / "pkdns" / "demo.py").read_text().split('DEMO_ZONE = """\\\n')[1]
        .split('"""')[0].encode(),
        "dyndns": b"$TTL 60\n@ IN A {external_ipv4}\n@ IN AAAA {external_ipv6}\n",
        "types": (b"mx IN MX 10 mail\nsrv IN SRV 0 5 443 web\ncaa IN CAA 0 issue \"ca\"\n"
                  b"svc IN SVCB 1 web alpn=h3 ipv4hint=192.0.2.9\nptr IN PTR example.com.\n"),
        "bad": b"@ IN A 1.2.3\n@ IN SOA a b 1 2 3 4 5\n",
    }


def doh() -> dict[str, bytes]:
    q = _query("example.com", "A")
    param = base64.urlsafe_b64encode(q).rstrip(b"=")
    return {
        "get": b"\x00" + param,
        "get-padded": b"\x00" + base64.urlsafe_b64encode(q),
        "post": b"\x01\n" + q,
        "post-wrong-type": b"\x09\n" + q,
        "get-bad": b"\x00dns+query/",
        "post-reply": b"\x01\n" + _reply("example.com", "A", "example.com. 60 A 192.0.2.1"),
    }


def relay_put() -> dict[str, bytes]:
    packet = _packet_bytes()
    sp = SignedPacket.sign_packet(KEYPAIR, packet, TS + 1)
    body = sp.relay_payload()
    sig = KEYPAIR.sign(signable(TS + 5, packet))
    assert len(sig) == 64
    return {
        "valid": b"\x00" + body,
        "over-held": b"\x01" + body,
        "signed-here": b"\x02" + struct.pack(">Q", TS + 2) + packet,
        "if-match": b"\x05" + body + b"\n" + str(TS).encode(),
        "future": b"\x02" + struct.pack(">Q", TS + 10**13) + packet,
        "short": b"\x00" + b"\x00" * 40,
    }


def config() -> dict[str, bytes]:
    return {
        "example": (ROOT / "config.example.toml").read_bytes(),
        "small": b'[dns]\nlisten = ["127.0.0.1:5353"]\nupstream = ["[::1]:53"]\n',
        "zones": b'state_dir = "/tmp/x"\n[[zones]]\nseed = "s"\nzone = "z"\ninterval = 60\n',
        "rebind": (b'[pkarr]\nrebind_allow = ["' + Z.encode()
                   + b'"]\n[dns]\nrebind_allow = ["lan"]\n'),
        "bad": b"[dns]\nrate_limit = -1\n[nope]\n",
    }


SEEDS = {
    "dns_query": dns_query, "upstream_reply": upstream_reply, "krpc": krpc,
    "bep44_item": bep44_item, "signed_packet": signed_packet, "zone_file": zone_file,
    "doh": doh, "relay_put": relay_put, "config": config,
}


def write() -> None:
    for target, make in SEEDS.items():
        d = CORPUS / target
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("seed-*"):
            old.unlink()
        for name, data in make().items():
            (d / f"seed-{name}").write_bytes(data)


if __name__ == "__main__":
    write()
