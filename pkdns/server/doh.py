"""DNS-over-HTTPS message codec (RFC 8484), sans I/O.

Turns an HTTP request (method, ``dns`` query parameter, Content-Type, body) into DNS query wire
bytes or an :class:`HttpError` carrying the status to answer with, and computes the
``Cache-Control`` freshness of a DNS response (RFC 8484 §5.1).

Status mapping: malformed base64url or a missing/short query -> 400;
a message over 65535 bytes -> 413; POST with another Content-Type -> 415; any method other
than GET/POST -> 405. Unlike pkdns 0.7 (``dns_over_https/server.rs``) the ``Accept`` header is not
required to equal ``application/dns-message`` exactly: RFC 8484 §4.1 only says clients SHOULD
send it, and browsers send lists such as ``application/dns-message, */*``.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass

CONTENT_TYPE = "application/dns-message"
MAX_MESSAGE = 65535          # RFC 8484 §6 / RFC 1035 §4.2.2: a DNS message fits a u16 length
HEADER_LEN = 12
_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_TYPE_SOA = 6


@dataclass(frozen=True, slots=True)
class HttpError(Exception):
    """The request cannot be served; answer with ``status`` and a short plain-text ``reason``."""

    status: int
    reason: str

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


def decode_request(method: str, dns_param: str | None, content_type: str | None,
                   body: bytes) -> bytes:
    """The DNS query carried by a DoH request (RFC 8484 §4.1), or raise :class:`HttpError`."""
    if method == "GET":
        return _checked(decode_dns_param(dns_param))
    if method == "POST":
        if _media_type(content_type) != CONTENT_TYPE:
            raise HttpError(415, f"Content-Type must be {CONTENT_TYPE}")
        if len(body) > MAX_MESSAGE:
            raise HttpError(413, f"DNS message larger than {MAX_MESSAGE} bytes")
        return _checked(body)
    raise HttpError(405, "use GET or POST")


def decode_dns_param(value: str | None) -> bytes:
    """Decode the GET ``dns`` parameter: base64url without padding (RFC 8484 §6).

    Trailing ``=`` padding is tolerated (some clients send it); any other character outside the
    base64url alphabet is a 400.
    """
    if not value:
        raise HttpError(400, "missing dns query parameter")
    if _B64URL.fullmatch(value) is None:
        raise HttpError(400, "dns parameter is not base64url")
    if (len(value.rstrip("=")) * 3) // 4 > MAX_MESSAGE:
        raise HttpError(413, f"DNS message larger than {MAX_MESSAGE} bytes")
    raw = value.rstrip("=")
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise HttpError(400, "dns parameter is not base64url") from None


def encode_dns_param(wire: bytes) -> str:
    """base64url without padding, as a GET ``dns`` parameter."""
    return base64.urlsafe_b64encode(wire).rstrip(b"=").decode("ascii")


def _checked(wire: bytes) -> bytes:
    """Reject what is plainly not a DNS query: shorter than a header, or QR=1 (a response)."""
    if len(wire) < HEADER_LEN:
        raise HttpError(400, "DNS message shorter than a header")
    if wire[2] & 0x80:
        raise HttpError(400, "DNS message is a response, not a query")
    return wire


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def cache_max_age(response: bytes) -> int:
    """Freshness lifetime for a DoH response (RFC 8484 §5.1).

    The smallest TTL in the Answer section; with no answers, the negative-caching TTL of the
    SOA in the Authority section (min of its TTL and MINIMUM, RFC 2308 §5); otherwise 0 (for
    example SERVFAIL: nothing may be cached). A response we cannot walk also gets 0.
    """
    try:
        answer_ttls, soa_ttls = _section_ttls(response)
    except (IndexError, struct.error, ValueError):
        return 0
    if answer_ttls:
        return min(answer_ttls)
    return min(soa_ttls) if soa_ttls else 0


def _section_ttls(wire: bytes) -> tuple[list[int], list[int]]:
    """TTLs of the answer records, and of SOA records in the authority section."""
    _id, _flags, qd, an, ns, _ar = struct.unpack_from("!6H", wire, 0)
    pos = HEADER_LEN
    for _ in range(qd):
        pos = _skip_name(wire, pos) + 4
    answers: list[int] = []
    soas: list[int] = []
    for index in range(an + ns):
        pos = _skip_name(wire, pos)
        rtype, _cls, ttl, rdlen = struct.unpack_from("!HHIH", wire, pos)
        pos += 10
        if pos + rdlen > len(wire):
            raise ValueError("record data past the end of the message")
        ttl = 0 if ttl & 0x80000000 else ttl      # RFC 2181 §8: top bit set means 0
        if index < an:
            answers.append(ttl)
        elif rtype == _TYPE_SOA and rdlen >= 20:
            (minimum,) = struct.unpack_from("!I", wire, pos + rdlen - 4)
            soas.append(min(ttl, minimum))
        pos += rdlen
    return answers, soas


def _skip_name(wire: bytes, pos: int) -> int:
    """Position after the (possibly compressed, RFC 1035 §4.1.4) name starting at ``pos``."""
    for _ in range(128):
        length = wire[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        if length & 0xC0:
            raise ValueError("reserved label type")
        pos += 1 + length
    raise ValueError("name too long")
