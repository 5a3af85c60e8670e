"""pkarr signed packets: the canonical bytes, the BEP 44 signable, build, parse and verify.

Layout (pkarr ``design/base.md``, ``signed_packet.rs``)::

    offset  size      field
    0       32        Ed25519 public key (RFC 8032)
    32      64        Ed25519 signature over signable(timestamp, packet)
    96      8         timestamp, u64 big-endian, microseconds since the UNIX epoch (= BEP 44 seq)
    104     0..1000   DNS packet (RFC 1035 wire format; compressed when we build it)

The relay payload is the same without the key. The signable is exactly BEP 44's signature
buffer for an unsalted mutable item whose ``v`` is the packet as a bencoded byte string:
``3:seqi<timestamp>e1:v<len>:<packet>``.

Verification order matches pkarr's ``from_bytes``: length bounds, key is a curve point,
signature, then the DNS parse. Only the answer section is ever read. Packets built elsewhere
may be uncompressed (the legacy JS vector is); dnslib parses both.

This module never reads the clock: timestamps are parameters.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dnslib

from pkdns.errors import DecodeError, UsageError, VerifyError
from pkdns.pkarr.keys import KEY_BYTES, SIGNATURE_BYTES, Keypair, PublicKey

MAX_PACKET_BYTES = 1000
HEADER_BYTES = KEY_BYTES + SIGNATURE_BYTES + 8  # 104
MAX_BYTES = HEADER_BYTES + MAX_PACKET_BYTES  # 1104
_MAX_TIMESTAMP = 2**63 - 1  # BEP 44 seq is a bencoded (signed 64-bit) integer
_REPLY_FLAGS = 0x8000  # QR only: simple-dns Packet::new_reply(0)


def signable(timestamp: int, packet: bytes, *, salt: bytes | None = None) -> bytes:
    """BEP 44 signature buffer of a mutable item with ``seq=timestamp`` and ``v=packet``.

    ``v`` is bencoded as a byte string. pkarr never salts; ``salt`` exists for the BEP 44
    vectors and the DHT layer (the buffer then starts ``4:salt<len>:<salt>``).
    """
    prefix = b"" if salt is None else b"4:salt%d:%s" % (len(salt), salt)
    return prefix + b"3:seqi%de1:v%d:" % (timestamp, len(packet)) + packet


def normalize_name(origin: str, name: str) -> str:
    """pkarr ``normalize_name``: make ``name`` absolute under ``origin``, without trailing dot.

    Strips one trailing dot; a name whose last label is the origin stays as is; ``@`` or
    empty means the apex (so ``foo.@`` is the apex too: pkarr's quirk, kept for
    compatibility); anything else gets ``.origin`` appended. Case-sensitive, like pkarr.
    """
    if name.endswith("."):
        name = name[:-1]
    last = name.rsplit(".", 1)[-1]
    if last == origin:
        return name
    if last in ("@", ""):
        return origin
    return f"{name}.{origin}"


def _rr_name(rr: Any) -> str:
    """Owner name of a dnslib RR as text without the trailing dot (dnslib escaping)."""
    return str(rr.rname)[:-1]


def _parse_answers(packet: bytes) -> tuple[Any, ...]:
    """The answer RRs of a DNS packet; DecodeError for anything dnslib cannot round-trip.

    dnslib is untyped and raises many exception types on hostile input (DNSError,
    BufferError, struct.error, UnicodeError, ValueError, RecursionError ...). This is the
    boundary where remote bytes enter, so every failure becomes one DecodeError. The
    re-pack proves later code (answer synthesis) can serialize these records.
    """
    try:
        record = dnslib.DNSRecord.parse(packet)
        answers = tuple(record.rr)
        record.pack()
    except Exception as exc:
        raise DecodeError(f"signed packet: DNS packet does not parse: {exc}") from None
    return answers


@dataclass(frozen=True, slots=True)
class SignedPacket:
    """A verified pkarr packet; ``records`` is its answer section (names as in the packet)."""

    public_key: PublicKey
    signature: bytes
    timestamp: int
    packet: bytes
    records: tuple[Any, ...] = field(init=False, repr=False, compare=False)
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.timestamp <= _MAX_TIMESTAMP:
            raise DecodeError(f"signed packet: timestamp {self.timestamp} out of range")
        if len(self.packet) > MAX_PACKET_BYTES:
            raise VerifyError(
                f"signed packet: DNS packet is {len(self.packet)} bytes,"
                f" over the {MAX_PACKET_BYTES}-byte limit"
            )
        records = _parse_answers(self.packet)
        object.__setattr__(self, "records", records)
        object.__setattr__(self, "_names", tuple(_rr_name(rr).lower() for rr in records))

    def __repr__(self) -> str:
        return (
            f"SignedPacket({self.public_key.z32}, ts={self.timestamp},"
            f" {len(self.packet)} bytes, {len(self.records)} records)"
        )

    # --- construction -------------------------------------------------------------------

    @classmethod
    def sign(
        cls, keypair: Keypair, records: Sequence[Any], timestamp: int
    ) -> SignedPacket:
        """Sign ``records`` (dnslib RRs) as pkarr does; names are normalized to the key.

        The packet is a reply header (id 0, flags QR, no question) with compressed names,
        like pkarr's ``SignedPacket::new``. ``timestamp`` is in µs; callers with a clock pass
        ``clock.wall_us()`` (this module never reads the clock).

        Raises:
            UsageError: the packet would be over 1000 bytes (the message gives its size), or
                a record cannot be encoded.
        """
        packet = encode_packet(keypair.public_key.z32, records)
        if len(packet) > MAX_PACKET_BYTES:
            raise UsageError(
                f"DNS packet is {len(packet)} bytes, over the {MAX_PACKET_BYTES}-byte limit"
                f" of a signed packet ({len(records)} records)"
            )
        return cls.sign_packet(keypair, packet, timestamp)

    @classmethod
    def sign_packet(cls, keypair: Keypair, packet: bytes, timestamp: int) -> SignedPacket:
        """Sign already-encoded DNS packet bytes (kept byte for byte, e.g. uncompressed)."""
        signature = keypair.sign(signable(timestamp, packet))
        return cls(keypair.public_key, signature, timestamp, packet)

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedPacket:
        """Parse and verify canonical bytes (key | sig | ts | packet).

        Raises:
            VerifyError: length out of bounds, key not a curve point, bad signature.
            DecodeError: the DNS packet does not parse.
        """
        if not HEADER_BYTES <= len(data) <= MAX_BYTES:
            raise VerifyError(
                f"signed packet is {len(data)} bytes; it must be {HEADER_BYTES}..{MAX_BYTES}"
            )
        key = PublicKey.from_bytes(data[:KEY_BYTES])
        return cls.from_relay_payload(key, data[KEY_BYTES:])

    @classmethod
    def from_relay_payload(cls, key: PublicKey, payload: bytes) -> SignedPacket:
        """Parse and verify a relay payload (sig | ts | packet) for ``key``."""
        lo, hi = HEADER_BYTES - KEY_BYTES, MAX_BYTES - KEY_BYTES
        if not lo <= len(payload) <= hi:
            raise VerifyError(f"relay payload is {len(payload)} bytes; it must be {lo}..{hi}")
        signature = bytes(payload[:SIGNATURE_BYTES])
        (timestamp,) = struct.unpack_from(">Q", payload, SIGNATURE_BYTES)
        packet = bytes(payload[SIGNATURE_BYTES + 8 :])
        return cls._verified(key, signature, timestamp, packet)

    @classmethod
    def from_bep44(cls, k: bytes, seq: int, v: bytes, sig: bytes) -> SignedPacket:
        """Parse and verify a BEP 44 mutable item (``k``, ``seq``, ``v``, ``sig``) as a packet."""
        if len(k) != KEY_BYTES or len(sig) != SIGNATURE_BYTES:
            raise VerifyError(f"BEP 44 item: k is {len(k)} bytes, sig is {len(sig)} bytes")
        if not 0 <= seq <= _MAX_TIMESTAMP:
            raise VerifyError(f"BEP 44 item: seq {seq} is not a pkarr timestamp")
        if len(v) > MAX_PACKET_BYTES:
            raise VerifyError(f"BEP 44 item: v is {len(v)} bytes, over {MAX_PACKET_BYTES}")
        return cls._verified(PublicKey.from_bytes(k), bytes(sig), seq, bytes(v))

    @classmethod
    def _verified(
        cls, key: PublicKey, signature: bytes, timestamp: int, packet: bytes
    ) -> SignedPacket:
        if not key.verify(signature, signable(timestamp, packet)):
            raise VerifyError(f"signed packet for {key.z32}: bad signature")
        return cls(key, signature, timestamp, packet)

    # --- encodings ----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Canonical bytes: key | signature | timestamp (u64 BE) | packet."""
        return self.public_key.raw + self.relay_payload()

    def relay_payload(self) -> bytes:
        """The relay HTTP body: signature | timestamp (u64 BE) | packet."""
        return self.signature + struct.pack(">Q", self.timestamp) + self.packet

    def signable(self) -> bytes:
        """The bytes the signature covers (BEP 44 signable)."""
        return signable(self.timestamp, self.packet)

    # --- semantics ----------------------------------------------------------------------

    def more_recent_than(self, other: SignedPacket) -> bool:
        """Newer timestamp wins; on a tie the lexicographically larger packet (pkarr)."""
        if self.timestamp == other.timestamp:
            return self.packet > other.packet
        return self.timestamp > other.timestamp

    def ttl(self, min_ttl: int, max_ttl: int) -> int:
        """Minimum answer TTL clamped to [min_ttl, max_ttl]; ``min_ttl`` with no answers."""
        if not self.records:
            return min_ttl
        lowest = min(int(rr.ttl) for rr in self.records)
        return max(min_ttl, min(lowest, max_ttl))

    def expires_in(self, age: float, min_ttl: int, max_ttl: int) -> float:
        """Seconds until this packet, last seen ``age`` seconds ago, is stale (never < 0)."""
        return max(0.0, self.ttl(min_ttl, max_ttl) - age)

    def resource_records(self, name: str) -> list[Any]:
        """Answer records named ``name`` (pkarr ``resource_records``), case-insensitively.

        ``name`` is normalized like an owner name (``@`` is the apex, relative names get the
        key appended). A leading ``*`` label is a query-side pattern for exactly one label.
        """
        wanted = normalize_name(self.public_key.z32, name.lower())
        if wanted.startswith("*"):
            suffix = wanted[1:]
            return [
                rr
                for rr, n in zip(self.records, self._names, strict=True)
                if n.endswith(suffix) and "." not in n[: len(n) - len(suffix)]
            ]
        return [rr for rr, n in zip(self.records, self._names, strict=True) if n == wanted]

    def fresh_resource_records(self, name: str, age: float) -> list[Any]:
        """:meth:`resource_records` whose own TTL is still above ``age`` seconds (strict)."""
        return [rr for rr in self.resource_records(name) if rr.ttl > age]

    @property
    def names(self) -> tuple[str, ...]:
        """Lowercased owner names of :attr:`records`, without the trailing dot."""
        return self._names


def encode_packet(origin: str, records: Sequence[Any]) -> bytes:
    """DNS reply packet holding ``records`` with owner names normalized to ``origin``.

    Header id 0, flags QR (0x8000), no question; dnslib compresses names like simple-dns.
    """
    header = dnslib.DNSHeader(id=0, bitmap=_REPLY_FLAGS)
    msg = dnslib.DNSRecord(header)
    try:
        for rr in records:
            name = normalize_name(origin, _rr_name(rr))
            msg.add_answer(
                dnslib.RR(rname=name, rtype=rr.rtype, rclass=rr.rclass, ttl=rr.ttl, rdata=rr.rdata)
            )
        return bytes(msg.pack())
    except Exception as exc:  # dnslib raises DNSLabelError, UnicodeError, struct.error ...
        raise UsageError(f"cannot encode the records as a DNS packet: {exc}") from None
