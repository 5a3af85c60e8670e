"""SignedPacket against every upstream/derived vector, plus properties of parse and verify."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import dnslib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pkdns.errors import DecodeError, UsageError, VerifyError
from pkdns.pkarr.keys import Keypair, PublicKey
from pkdns.pkarr.signed_packet import (
    HEADER_BYTES,
    MAX_PACKET_BYTES,
    SignedPacket,
    normalize_name,
    signable,
)
from tests.conftest import load_vector
from tests.support.pkarr_factory import keypair, packet, rr

LEGACY = load_vector("signed_packet_js_legacy")
DERIVED = load_vector("signed_packet_derived_compressed")
BEP44 = load_vector("bep44")
NAMES = load_vector("normalize_names")
TTLS = load_vector("ttl_and_cache")
ZERO = Keypair.from_seed(bytes(32))


def _derived_records() -> list[Any]:
    out = []
    for r in DERIVED["input_records"]:
        data = " ".join(f'"{t}"' for t in r["data"]) if r["type"] == "TXT" else r["data"]
        out.append(rr(f'{r["name"]} {r["ttl"]} IN {r["type"]} {data}'))
    return out


# --- the byte-exact vectors -----------------------------------------------------------


def test_legacy_js_vector_parses_and_verifies() -> None:
    sp = SignedPacket.from_bytes(bytes.fromhex(LEGACY["signed_packet_canonical_hex"]))
    assert sp.public_key.z32 == LEGACY["public_key_z32"]
    assert sp.timestamp == LEGACY["timestamp_us"]
    assert sp.signature.hex() == LEGACY["signature_hex"]
    assert sp.packet.hex() == LEGACY["encoded_dns_packet_hex"]
    assert len(sp.packet) == LEGACY["encoded_dns_packet_len"]
    assert sp.signable().hex() == LEGACY["signable_hex"]
    assert sp.signable().startswith(LEGACY["signable_prefix_ascii"].encode())
    assert sp.relay_payload().hex() == LEGACY["relay_payload_hex"]
    assert len(sp.to_bytes()) == LEGACY["signed_packet_canonical_len"]
    assert sp.names == tuple(LEGACY["normalized_names"])
    (a,) = sp.resource_records("@")
    assert str(a.rdata) == "1.1.1.1" and a.ttl == 0
    (txt,) = sp.resource_records("foo")
    assert txt.rdata.data == [b"bar"] and txt.ttl == 30


def test_legacy_js_vector_resigned_with_zero_seed_is_byte_exact() -> None:
    assert ZERO.public_key.raw.hex() == LEGACY["public_key_hex"]
    sp = SignedPacket.sign_packet(
        ZERO, bytes.fromhex(LEGACY["encoded_dns_packet_hex"]), LEGACY["timestamp_us"]
    )
    assert sp.signature.hex() == LEGACY["signature_hex"]
    assert sp.to_bytes().hex() == LEGACY["signed_packet_canonical_hex"]


def test_legacy_js_vector_bep44_args() -> None:
    args = LEGACY["bep44_put_args"]
    sp = SignedPacket.from_bep44(
        bytes.fromhex(args["k_hex"]), args["seq"], bytes.fromhex(args["v_hex"]),
        bytes.fromhex(args["sig_hex"]),
    )
    assert sp.public_key.target.hex() == args["target_hex"]
    assert sp.to_bytes().hex() == LEGACY["signed_packet_canonical_hex"]


def test_legacy_relay_payload() -> None:
    key = PublicKey.parse(LEGACY["public_key_z32"])
    sp = SignedPacket.from_relay_payload(key, bytes.fromhex(LEGACY["relay_payload_hex"]))
    assert len(sp.relay_payload()) == LEGACY["relay_payload_len"]
    assert struct.pack(">Q", sp.timestamp).hex() == LEGACY["timestamp_be_hex"]


def test_derived_compressed_vector_built_from_records() -> None:
    sp = SignedPacket.sign(ZERO, _derived_records(), DERIVED["timestamp_us"])
    assert sp.packet.hex() == DERIVED["encoded_dns_packet_hex"]
    assert len(sp.packet) == DERIVED["encoded_dns_packet_len"]
    assert sp.signable().hex() == DERIVED["signable_hex"]
    assert sp.signature.hex() == DERIVED["signature_hex"]
    assert sp.relay_payload().hex() == DERIVED["relay_payload_hex"]
    assert sp.to_bytes().hex() == DERIVED["signed_packet_canonical_hex"]
    assert sp.public_key.target.hex() == DERIVED["dht_target_hex"]
    assert sp.names == tuple(DERIVED["normalized_names"])
    assert SignedPacket.from_bytes(sp.to_bytes()) == sp


def test_derived_crosscheck_packet_length() -> None:
    check = DERIVED["crosscheck_pkdns_packet_memory_size"]
    lines = [f"{n} {ttl} IN {t} {d}" for n, t, ttl, d in check["records"]]
    sp = packet(ZERO, lines)
    assert len(sp.packet) == check["emulated_encoded_len"]
    assert len(sp.to_bytes()) == check["signed_packet_len"]


def test_header_is_a_reply_without_question() -> None:
    sp = packet(keypair(), ["@ 300 IN A 1.2.3.4"])
    msg = dnslib.DNSRecord.parse(sp.packet)
    assert (msg.header.id, msg.header.bitmap) == (0, 0x8000)
    assert (msg.header.q, msg.header.a, msg.header.auth, msg.header.ar) == (0, 1, 0, 0)


# --- BEP 44 -------------------------------------------------------------------------------


def test_bep44_vector_1_no_salt() -> None:
    t = BEP44["test1_mutable_no_salt"]
    key = PublicKey.from_bytes(bytes.fromhex(BEP44["public_key_hex"]))
    buf = signable(t["seq"], b"Hello World!")
    assert buf == t["signable_ascii"].encode()
    assert key.target.hex() == t["target_hex"]
    assert key.verify(bytes.fromhex(t["signature_hex"]), buf)
    assert not key.verify(bytes.fromhex(t["signature_hex"]), signable(2, b"Hello World!"))


def test_bep44_vector_2_salt() -> None:
    t = BEP44["test2_mutable_salt"]
    key = PublicKey.from_bytes(bytes.fromhex(BEP44["public_key_hex"]))
    buf = signable(t["seq"], b"Hello World!", salt=t["salt"].encode())
    assert buf == t["signable_ascii"].encode()
    assert hashlib.sha1(key.raw + t["salt"].encode()).hexdigest() == t["target_hex"]
    assert key.verify(bytes.fromhex(t["signature_hex"]), buf)


def test_bep44_vector_3_immutable_target() -> None:
    t = BEP44["test3_immutable"]
    assert hashlib.sha1(t["v_bencoded"].encode()).hexdigest() == t["target_hex"]


@pytest.mark.parametrize("case", BEP44["mainline_crate_signable"], ids=lambda c: str(c["salt"]))
def test_mainline_signable(case: dict[str, Any]) -> None:
    salt = None if case["salt"] is None else case["salt"].encode()
    got = signable(case["seq"], case["value_ascii"].encode(), salt=salt)
    assert got == case["signable_ascii"].encode()


# --- names and matching ---------------------------------------------------------------


ALL_NAME_CASES = NAMES["upstream_cases"] + NAMES["derived_cases_by_research"]


@pytest.mark.parametrize("case", ALL_NAME_CASES, ids=lambda c: repr(c["input"]))
def test_normalize_name(case: dict[str, str]) -> None:
    assert normalize_name(NAMES["origin"], case["input"]) == case["output"]


def test_wildcard_query_matches_exactly_one_label() -> None:
    up = NAMES["resource_records_matching"]["upstream_test"]
    sp = packet(keypair(), [f"{name} 300 IN A 1.2.3.4" for name in up["records"]])
    got = sp.resource_records(up["query"])
    assert len(got) == up["expected_count"]
    z32 = sp.public_key.z32
    assert str(got[0].rname) == up["matching"].replace("<origin>", z32) + "."


def test_resource_records_apex_relative_absolute_and_case() -> None:
    sp = packet(keypair(), ["@ 300 IN A 1.2.3.4", "foo 300 IN A 5.6.7.8", "foo 300 IN TXT x"])
    z32 = sp.public_key.z32
    assert len(sp.resource_records("@")) == 1
    assert len(sp.resource_records(z32)) == 1
    assert len(sp.resource_records(z32.upper() + ".")) == 1
    assert len(sp.resource_records("FOO")) == 2
    assert len(sp.resource_records(f"Foo.{z32}.")) == 2
    assert sp.resource_records("bar") == []


def test_uppercase_owner_names_match_case_insensitively() -> None:
    sp = packet(keypair(), ["WWW 300 IN A 1.2.3.4"])
    assert sp.names[0].startswith("www.")
    assert len(sp.resource_records("www")) == 1


def test_records_literally_named_star_are_not_expanded() -> None:
    sp = packet(keypair(), ["*.foo 300 IN A 1.2.3.4"])
    assert sp.resource_records("bar.foo") == []
    assert len(sp.resource_records("*.foo")) == 1


# --- TTL ----------------------------------------------------------------------------------


def _ttl_packet(ttls: list[int]) -> SignedPacket:
    return packet(keypair(), [f"r{i} {t} IN A 1.2.3.4" for i, t in enumerate(ttls)])


@pytest.mark.parametrize("case", [c for c in TTLS["upstream_cases"] if "ttl" in c])
def test_ttl_clamp(case: dict[str, Any]) -> None:
    assert _ttl_packet(case["records_ttl"]).ttl(case["min"], case["max"]) == case["ttl"]


@pytest.mark.parametrize(
    "case", [c for c in TTLS["upstream_cases"] if "last_seen_ago_s" in c and "records_ttl" in c]
)
def test_expires_in(case: dict[str, Any]) -> None:
    sp = _ttl_packet(case["records_ttl"])
    left = sp.expires_in(case["last_seen_ago_s"], case["min"], case["max"])
    if "expires_in" in case:
        assert left == case["expires_in"]
    else:
        assert (left > 0) is case["expires_in_gt_0"]


def test_fresh_resource_records() -> None:
    (case,) = [c for c in TTLS["upstream_cases"] if "records" in c]
    sp = packet(keypair(), [f"{n} {t} IN A 1.2.3.4" for n, t in case["records"]])
    got = sp.fresh_resource_records("_foo", case["last_seen_ago_s"])
    assert len(got) == case["fresh_resource_records('_foo')_count"]


def test_more_recent_than() -> None:
    kp = keypair()
    old = packet(kp, ["@ 300 IN A 1.2.3.4"], ts=100)
    new = packet(kp, ["@ 300 IN A 1.2.3.4"], ts=101)
    assert new.more_recent_than(old) and not old.more_recent_than(new)
    a = packet(kp, ["@ 300 IN A 1.2.3.4"], ts=100)
    b = packet(kp, ["@ 300 IN A 1.2.3.5"], ts=100)
    assert b.packet > a.packet
    assert b.more_recent_than(a) and not a.more_recent_than(b)
    assert not a.more_recent_than(a)


# --- limits and errors ------------------------------------------------------------------


def test_sign_refuses_oversize_packet_with_its_size() -> None:
    lines = [f"t{i} 300 IN TXT {'x' * 200}" for i in range(5)]
    with pytest.raises(UsageError, match=r"DNS packet is 1\d\d\d bytes, over the 1000-byte"):
        packet(keypair(), lines)


def test_largest_packet_is_accepted() -> None:
    kp = keypair()
    body = dnslib.DNSRecord(dnslib.DNSHeader(id=0, bitmap=0x8000)).pack()
    raw = body + bytes(MAX_PACKET_BYTES - len(body))  # trailing bytes are ignored like pkarr
    sp = SignedPacket.sign_packet(kp, raw, 1)
    assert len(sp.to_bytes()) == HEADER_BYTES + MAX_PACKET_BYTES
    assert SignedPacket.from_bytes(sp.to_bytes()) == sp
    with pytest.raises(VerifyError, match="1105 bytes"):
        SignedPacket.from_bytes(sp.to_bytes() + b"\0")


@pytest.mark.parametrize("size", [0, 1, 103])
def test_too_short(size: int) -> None:
    with pytest.raises(VerifyError, match=f"{size} bytes"):
        SignedPacket.from_bytes(bytes(size))


def test_relay_payload_bounds() -> None:
    key = keypair().public_key
    with pytest.raises(VerifyError, match="71 bytes"):
        SignedPacket.from_relay_payload(key, bytes(71))
    with pytest.raises(VerifyError, match="1073 bytes"):
        SignedPacket.from_relay_payload(key, bytes(1073))


def test_relay_payload_for_wrong_key_fails() -> None:
    sp = packet(keypair(1), ["@ 300 IN A 1.2.3.4"])
    with pytest.raises(VerifyError, match="bad signature"):
        SignedPacket.from_relay_payload(keypair(2).public_key, sp.relay_payload())


def test_bep44_bad_arguments() -> None:
    sp = packet(keypair(), ["@ 300 IN A 1.2.3.4"])
    k, v, sig = sp.public_key.raw, sp.packet, sp.signature
    assert SignedPacket.from_bep44(k, sp.timestamp, v, sig) == sp
    with pytest.raises(VerifyError, match="seq"):
        SignedPacket.from_bep44(k, -1, v, sig)
    with pytest.raises(VerifyError, match="bad signature"):
        SignedPacket.from_bep44(k, sp.timestamp + 1, v, sig)
    with pytest.raises(VerifyError, match="k is 31 bytes"):
        SignedPacket.from_bep44(k[:31], sp.timestamp, v, sig)
    with pytest.raises(VerifyError, match="v is 1001 bytes"):
        SignedPacket.from_bep44(k, sp.timestamp, bytes(1001), sig)


def test_signed_garbage_is_decode_error() -> None:
    with pytest.raises(DecodeError, match="does not parse"):
        SignedPacket.sign_packet(keypair(), b"\x00\x00\x80\x00\x00\x00\x00\x05", 1)


def test_empty_packet_is_valid() -> None:
    sp = SignedPacket.sign(keypair(), [], 5)
    assert sp.records == () and sp.ttl(300, 86400) == 300
    assert SignedPacket.from_bytes(sp.to_bytes()) == sp


def test_repr_is_short() -> None:
    sp = packet(keypair(), ["@ 300 IN A 1.2.3.4"])
    assert repr(sp) == f"SignedPacket({sp.public_key.z32}, ts={sp.timestamp}, 80 bytes, 1 records)"


# --- properties ---------------------------------------------------------------------------

_VECTOR_BYTES = bytes.fromhex(DERIVED["signed_packet_canonical_hex"])


@settings(max_examples=400)
@given(st.integers(min_value=0, max_value=len(_VECTOR_BYTES) * 8 - 1))
def test_any_single_flipped_bit_fails_verification(bit: int) -> None:
    data = bytearray(_VECTOR_BYTES)
    data[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(VerifyError):
        SignedPacket.from_bytes(bytes(data))


def test_every_single_flipped_bit_fails_verification() -> None:
    data = bytes.fromhex(LEGACY["signed_packet_canonical_hex"])
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(VerifyError):
            SignedPacket.from_bytes(bytes(flipped))


@given(st.binary(max_size=1200))
def test_from_bytes_on_arbitrary_bytes_only_raises_decode_error(data: bytes) -> None:
    try:
        SignedPacket.from_bytes(data)
    except DecodeError:
        pass


_HEADER = st.builds(
    lambda counts, flags: struct.pack(">HHHHHH", 0, flags, *counts),
    st.tuples(*[st.integers(0, 6)] * 4),
    st.integers(0, 0xFFFF),
)


_TYPES = [1, 2, 5, 6, 12, 13, 15, 16, 17, 28, 29, 33, 35, 43, 46, 47, 48, 52, 64, 65, 257]


def _answer(name: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
    return name + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata


_NAME = st.one_of(
    st.sampled_from([b"\x00", b"\xc0\x0c", b"\x03foo\x00"]), st.binary(max_size=8)
)
_ANSWER = st.builds(
    _answer, _NAME, st.one_of(st.sampled_from(_TYPES), st.integers(0, 0xFFFF)),
    st.integers(0, 2**32 - 1), st.binary(max_size=40),
)
_PACKET = st.builds(
    lambda rrs: struct.pack(">HHHHHH", 0, 0x8000, 0, len(rrs), 0, 0) + b"".join(rrs),
    st.lists(_ANSWER, min_size=1, max_size=4),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=1000),
    st.builds(bytes.__add__, _HEADER, st.binary(max_size=300)),
    _PACKET,
))
def test_signed_arbitrary_dns_bytes_only_raise_decode_error(body: bytes) -> None:
    # Signing first gets past the signature check, so the DNS parser sees hostile bytes.
    try:
        sp = SignedPacket.sign_packet(ZERO, body, 7)
    except DecodeError:
        return
    again = SignedPacket.from_bytes(sp.to_bytes())
    assert again == sp and again.names == sp.names
    sp.ttl(60, 86400)
    sp.resource_records("*.x")
    sp.resource_records("@")
