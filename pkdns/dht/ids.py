"""Node ids, XOR distance and BEP 42 ("DHT security extension") id derivation.

BEP 42 ties a node id to its external IP: ``crc32c((ip & mask) | (r << 29))`` gives the first
21 bits, the last byte is ``r``. We generate a BEP 42 id when our external IP is known, and we
never require one from loopback or private peers (BEP 42 exempts them; libtorrent
``verify_id()`` does the same).
"""

from __future__ import annotations

import hashlib
import ipaddress
import random

ID_BYTES = 20
ID_BITS = 160


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum BEP 42 specifies; stdlib only has CRC-32."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def distance(a: bytes, b: bytes) -> int:
    """Kademlia XOR metric as an integer (smaller is closer)."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def bucket_index(own: bytes, other: bytes) -> int:
    """Index of the k-bucket for ``other``: number of leading bits shared with ``own`` (0..159)."""
    d = distance(own, other)
    return ID_BITS - d.bit_length() if d else ID_BITS - 1


def target_of(public_key: bytes, salt: bytes = b"") -> bytes:
    """BEP 44 mutable item target: ``sha1(k || salt)`` (pkarr uses no salt)."""
    return hashlib.sha1(public_key + salt).digest()


def is_local(host: str) -> bool:
    """Loopback, private, link-local: addresses BEP 42 does not apply to."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


def _bep42_prefix(ip: str, r: int) -> int:
    """The 21 significant bits from BEP 42 for ``ip`` and random ``r`` (0..7)."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        masked = bytearray(int(addr).to_bytes(4, "big"))
        for i, m in enumerate((0x03, 0x0F, 0x3F, 0xFF)):
            masked[i] &= m
    else:
        masked = bytearray(addr.packed[:8])
        for i, m in enumerate((0x01, 0x03, 0x07, 0x0F, 0x1F, 0x3F, 0x7F, 0xFF)):
            masked[i] &= m
    masked[0] |= (r & 7) << 5
    return crc32c(bytes(masked))


def make_node_id(rng: random.Random, external_ip: str | None = None) -> bytes:
    """A random id, or a BEP 42 id when our public address is known."""
    raw = bytearray(rng.getrandbits(ID_BITS).to_bytes(ID_BYTES, "big"))
    if external_ip is None or is_local(external_ip):
        return bytes(raw)
    r = raw[19] & 7
    crc = _bep42_prefix(external_ip, r)
    raw[0] = (crc >> 24) & 0xFF
    raw[1] = (crc >> 16) & 0xFF
    raw[2] = ((crc >> 8) & 0xF8) | (raw[2] & 0x07)
    raw[19] = (raw[19] & 0xF8) | r
    return bytes(raw)


def is_bep42_valid(node_id: bytes, ip: str) -> bool:
    """True if ``node_id`` matches BEP 42 for ``ip``; local addresses always pass."""
    if is_local(ip):
        return True
    if len(node_id) != ID_BYTES:
        return False
    try:
        crc = _bep42_prefix(ip, node_id[19] & 7)
    except ValueError:
        return False
    return (node_id[0] == (crc >> 24) & 0xFF and node_id[1] == (crc >> 16) & 0xFF
            and (node_id[2] & 0xF8) == ((crc >> 8) & 0xF8))
