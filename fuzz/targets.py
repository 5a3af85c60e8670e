"""Fuzz targets: one function per parser that takes outside bytes, asserting its contract.

Each target takes the fuzzer's bytes, feeds them to the parser and lets through only the
errors that parser documents (anything else escapes, and the fuzzer reports it as a crash);
where an encoder exists, what parsed must round-trip. Targets are plain functions so the test
suite can replay every corpus file without atheris (:func:`replay`).

    dns_query       wire.scan + wire.parse_query (client datagrams): Drop / BadQuery; the hot
                    path's scan agrees with the full ladder; error replies always build
    upstream_reply  reply.inspect_reply (+ cache store/render, the ICANN rebinding guard):
                    DecodeError; the cached form re-walks to itself
    krpc            krpc.decode (bencode + KRPC): DecodeError; encode(decode(x)) decodes equal
    bep44_item      item.check_item / SignedPacket.from_bep44: VerifyError / DecodeError; a
                    signed item verifies, any changed byte does not
    signed_packet   SignedPacket.from_bytes (+ synthesis of answers from it): DecodeError;
                    to_bytes() gives the input back
    zone_file       zone.parse_zone + zonebuild.sign_zone: UsageError; the signed packet parses
                    back to the same records
    doh             doh.decode_request / decode_dns_param / cache_max_age: HttpError; GET
                    parameters round-trip
    relay_put       RelayApi.put (relay PUT bodies, If-Match): RelayError 400 / 409 / 412
    config          configfile.parse: ConfigError; what parses validates and plans a reload

Inputs with several parts use a selector byte and ``\\n``-separated fields (see each target),
so corpus files stay readable.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import dnslib

from pkdns import reload
from pkdns.answer.names import PkarrName
from pkdns.answer.synth import Final, synthesize
from pkdns.config import CacheConfig, Config
from pkdns.configfile import parse as parse_config
from pkdns.configfile import validate
from pkdns.dht import item, krpc
from pkdns.dht.ids import target_of
from pkdns.dns import rebind, wire
from pkdns.dns.cache import WireCache, render
from pkdns.dns.rebind_icann import IcannGuard, suspicious
from pkdns.dns.reply import inspect_reply
from pkdns.errors import ConfigError, DecodeError, UsageError, VerifyError
from pkdns.pkarr.client import Published
from pkdns.pkarr.keys import Keypair, PublicKey
from pkdns.pkarr.signed_packet import MAX_PACKET_BYTES, SignedPacket, signable
from pkdns.pkarr.zone import parse_zone, substitute_variables, variables_used
from pkdns.publish.zonebuild import sign_zone
from pkdns.server import doh
from pkdns.server.relay_api import Cached, Fetched, RelayApi, RelayError

KEYPAIR = Keypair.from_seed(bytes(range(32)))
KEY = KEYPAIR.public_key
TS = 1_700_000_000_000_000
T = TypeVar("T")


# --- DNS: client queries and upstream replies ----------------------------------------------

def dns_query(data: bytes) -> None:
    scanned = wire.scan(data)
    try:
        q = wire.parse_query(data)
    except wire.Drop:
        assert scanned is None, "scan took a datagram the ladder drops"
        return
    except wire.BadQuery as exc:
        assert scanned is None, "scan took a query the ladder refuses"
        reply = wire.error_for(data, exc)
        assert reply[:2] == data[:2] and reply[2] & 0x80 and (reply[3] & 0x0F) == exc.rcode & 0xF
        return
    assert q.qend <= len(data) and q.key.endswith(bytes(((q.do << 1) | q.cd,)))
    if scanned is not None:
        key, qend, size, do = scanned
        assert (key, qend, bool(do)) == (q.key, q.qend, q.do), "scan and ladder disagree"
        assert size == (q.udp_size if q.edns else 0)
        assert q.qclass == wire.C_IN and q.qname == wire.name_text(key[:-5])
    for rcode in (wire.SERVFAIL, wire.REFUSED):
        reply = wire.error_reply(data, rcode, q.qend, q.edns, q.do)
        assert reply[:2] == data[:2] and reply[12:q.qend] == data[12:q.qend]
    wire.refusal(data, wire.REFUSED)
    if q.edns:
        assert len(wire.truncated_reply(data, q.qend, True, q.do)) >= 12


def upstream_reply(data: bytes) -> None:
    try:
        info = inspect_reply(data)
    except DecodeError:
        return
    n = len(info.wire)
    assert len(info.offsets) == len(info.ttls)
    for off in info.offsets:
        assert info.qend + off + 4 <= n, "TTL offset past the end"
    again = inspect_reply(info.wire)           # the cached form is a reply we accept
    assert (again.offsets, again.ttls) == (info.offsets, info.ttls), "re-walk differs"
    # the cached header keeps the low 4 bits; extended rcodes (from the cut OPT) are never
    # cached (pkdns.dns.fetch stores NOERROR, NXDOMAIN and YXDOMAIN only)
    assert again.rcode == info.rcode & 0x0F
    if _dnslib_parses(data):                   # what a client could read, it still can
        assert _dnslib_parses(info.wire), "the cached form no longer parses"
    query = bytes((0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0)) + info.wire[12:info.qend]
    entry = WireCache(CacheConfig()).store(b"k", info, 0.0)
    for size, limit in ((0, 512), (1232, 1232), (0, 65535)):
        out = render(entry, query, info.qend, size, False, limit, 3.0)
        assert out[:2] == query[:2] and len(out) <= max(limit, info.qend + 11)
    suspicious(info)
    try:
        guarded = IcannGuard(())(b"\x00" + info.wire[info.qend - 4:info.qend] + b"\x00", info)
    except DecodeError:
        return
    inspect_reply(guarded.wire)


def _dnslib_parses(data: bytes) -> bool:
    try:
        dnslib.DNSRecord.parse(data)
    except Exception:   # dnslib raises assorted types on bad bytes
        return False
    return True


# --- DHT: KRPC and BEP 44 items ---------------------------------------------------------------

def krpc_message(data: bytes) -> None:
    try:
        msg = krpc.decode(data)
    except DecodeError:
        return
    client = msg.client if isinstance(msg, krpc.Query) else None   # top-level "v"
    assert krpc.decode(krpc.encode(msg, client=client)) == msg, "KRPC message does not round-trip"
    fields = (msg.k, msg.seq, msg.v, msg.sig) if isinstance(msg, krpc.Query | krpc.Response) \
        else None
    if fields is not None and None not in fields:
        _check_item(*fields)


def _check_item(k: Any, seq: Any, v: Any, sig: Any) -> item.MutableItem | None:
    try:
        return item.check_item(k, seq, v, sig, expected_target=target_of(k))
    except VerifyError:
        return None


def bep44_item(data: bytes) -> None:
    """``data[0]`` even: fields from the input (k 32 | sig 64 | seq 8 | v); odd: an item
    signed here over ``data[9:]`` with seq ``data[1:9]``, then byte ``data[0] // 2`` of the
    concatenated fields flipped unless it is 0 (which must verify)."""
    if not data:
        return
    if data[0] % 2 == 0:
        body = data[1:]
        k, sig, seq_b, v = body[:32], body[32:96], body[96:104], body[104:]
        seq = int.from_bytes(seq_b, "big") if len(seq_b) == 8 else -1
        got = _check_item(k, seq, v, sig)
    else:
        seq = int.from_bytes(data[1:9].ljust(8, b"\0"), "big") & ((1 << 63) - 1)
        signed = item.sign_item(KEYPAIR.seed, seq, data[9:9 + item.MAX_VALUE])
        flip = data[0] // 2
        fields = bytearray(signed.k + signed.sig + signed.v)
        if flip and flip <= len(fields):
            fields[flip - 1] ^= 0x01
        k, sig, v = bytes(fields[:32]), bytes(fields[32:96]), bytes(fields[96:])
        got = _check_item(k, seq, v, sig)
        assert (got is not None) == (not flip or flip > len(fields)), "forged item verified"
    if got is not None:
        try:
            packet = SignedPacket.from_bep44(got.k, got.seq, got.v, got.sig)
        except DecodeError:
            return
        assert packet.to_bytes() == got.k + got.sig + struct.pack(">Q", got.seq) + got.v


# --- pkarr: signed packets, zone files --------------------------------------------------------

def signed_packet(data: bytes) -> None:
    """``data[0]`` even: ``data[1:]`` as canonical signed-packet bytes; odd: ``data[9:]``
    signed here as the DNS packet, timestamp ``data[1:9]`` (reaches the DNS parser)."""
    if not data:
        return
    if data[0] % 2 == 0:
        raw = data[1:]
    else:
        ts = int.from_bytes(data[1:9].ljust(8, b"\0"), "big")
        packet = data[9:9 + MAX_PACKET_BYTES]
        raw = KEY.raw + KEYPAIR.sign(signable(ts, packet)) + struct.pack(">Q", ts) + packet
    try:
        sp = SignedPacket.from_bytes(raw)
    except DecodeError:
        return
    assert sp.to_bytes() == raw
    sp.ttl(60, 86400)
    for name in {"@", *sp.names[:4]}:
        sp.resource_records(name)
    _synthesize_from(sp)


def _synthesize_from(sp: SignedPacket) -> None:
    """Answers from a hostile packet: synthesis, the rebinding filter, packing."""
    names = [""] + [n[: -len(sp.public_key.z32) - 1] for n in sp.names[:3]
                    if n.endswith("." + sp.public_key.z32)]
    for rel in names:
        for qtype in ("A", "AAAA", "TXT", "HTTPS", "ANY"):
            qname = f"{rel}.{sp.public_key.z32}" if rel else sp.public_key.z32
            try:
                query = dnslib.DNSRecord.question(qname + ".key", qtype)
            except Exception:   # a name dnslib cannot even put in a question: not reachable
                continue
            out = synthesize(query, PkarrName(sp.public_key, rel, "key"), sp, age=5.0)
            rebind.filter_message(out.response)
            wire_out = bytes(out.response.pack())
            if isinstance(out, Final):
                inspect_reply(wire_out)


def zone_file(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    variables_used(text)
    try:
        text = substitute_variables(text, "192.0.2.1", "2001:db8::1")
        records = parse_zone(text, KEY, filename="fuzz.zone")
        sp = sign_zone(KEYPAIR, text, "fuzz.zone", TS)
    except UsageError:
        return
    back = SignedPacket.from_bytes(sp.to_bytes())
    assert len(back.records) == len(records), "signed zone lost or gained records"


# --- HTTP: DoH requests, relay PUT bodies ------------------------------------------------------

_METHODS = ("GET", "POST", "PUT", "")
_TYPES = ("application/dns-message", "application/dns-message; charset=x",
          "text/plain", "APPLICATION/DNS-MESSAGE", "")


def doh_request(data: bytes) -> None:
    """``data[0]``: method and Content-Type; then ``dns`` parameter ``\\n`` body."""
    if not data:
        return
    method, ctype = _METHODS[data[0] % 4], _TYPES[(data[0] // 4) % 5]
    param_b, _, body = data[1:].partition(b"\n")
    param = param_b.decode("latin-1") if param_b else None
    try:
        query = doh.decode_request(method, param, ctype, body)
    except doh.HttpError as exc:
        assert exc.status in (400, 405, 413, 415), exc
    else:
        assert len(query) >= 12 and not query[2] & 0x80
        assert doh.decode_dns_param(doh.encode_dns_param(query)) == query
    assert doh.cache_max_age(body) >= 0


class _Clock:
    def monotonic(self) -> float:
        return 1000.0

    def wall_us(self) -> int:
        return TS + 10_000_000


class _Store:
    def __init__(self, held: SignedPacket | None) -> None:
        self.held = held

    def cached(self, key: PublicKey) -> Cached | None:
        return Cached(self.held, TS, True) if self.held is not None else None

    async def fetch(self, key: PublicKey, floor: SignedPacket | None) -> Fetched:
        return Fetched(None)

    def store(self, packet: SignedPacket) -> None:
        self.held = packet


class _Publisher:
    async def publish(self, packet: SignedPacket) -> Published:
        return Published(stored=3)


class _Allow:
    def allow(self, client: str) -> bool:
        return True


HELD = SignedPacket.sign_packet(KEYPAIR, bytes.fromhex("000084000000000000000000"), TS)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine that never really waits (the fakes above) to its end."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the relay PUT waited on something")


def relay_put(data: bytes) -> None:
    """``data[0]`` bit 0: a packet is already held; bit 1: sign ``data[9:]`` here (timestamp
    ``data[1:9]``) instead of taking ``data[1:]`` as the body; then ``If-Match`` after a
    ``\\n`` when bit 2 is set."""
    if not data:
        return
    flags, rest = data[0], data[1:]
    if_match = None
    if flags & 4:
        rest, _, match_b = rest.partition(b"\n")
        if_match = match_b.decode("latin-1")
    if flags & 2:
        ts = int.from_bytes(rest[:8].ljust(8, b"\0"), "big")
        packet = rest[8:8 + MAX_PACKET_BYTES]
        body = KEYPAIR.sign(signable(ts, packet)) + struct.pack(">Q", ts) + packet
    else:
        body = rest
    api = RelayApi(_Store(HELD if flags & 1 else None), _Publisher(), _Allow(), _Clock(),
                   60, 86400)
    try:
        stored = _run(api.put(KEY, body, if_match, "192.0.2.9"))
    except RelayError as exc:
        assert exc.status in (400, 409, 412, 413), exc
        return
    assert stored == 3
    SignedPacket.from_relay_payload(KEY, body)


# --- the configuration file -------------------------------------------------------------------

def config_file(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    try:
        cfg = parse_config(text, "fuzz.toml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.toml"), exc
        return
    validate(cfg, "fuzz.toml")
    reload.effective(Config(), cfg, frozenset({"dns.*", "zones"}))   # some live, some not


TARGETS: dict[str, Callable[[bytes], None]] = {
    "dns_query": dns_query,
    "upstream_reply": upstream_reply,
    "krpc": krpc_message,
    "bep44_item": bep44_item,
    "signed_packet": signed_packet,
    "zone_file": zone_file,
    "doh": doh_request,
    "relay_put": relay_put,
    "config": config_file,
}


def replay(name: str, data: bytes) -> None:
    """Run target ``name`` on one input outside the fuzzer (corpus replays, regressions)."""
    TARGETS[name](data)


__all__ = ["TARGETS", "replay"]
