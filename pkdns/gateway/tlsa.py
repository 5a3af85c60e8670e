"""TLSA records (RFC 6698, DANE-EE as RFC 7671 narrows it): build one, check a certificate.

Only DANE-EE (certificate usage 3) is usable here: the key holder's signed packet names the
origin's own certificate or public key, so no CA, name or validity period comes into it
(RFC 7671 §5.1). Records with another usage, an unknown selector or matching type, or data of
the wrong length for their matching type are "unusable" (RFC 6698 §4.1) and ignored; a packet
with no usable record does not authenticate anything. Pure: bytes in, verdicts out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pkdns.errors import UsageError

TLSA_TYPE = 52                      # RFC 6698 §7.1
DANE_EE = 3                         # RFC 7671 §5.1
SELECTOR_CERT, SELECTOR_SPKI = 0, 1  # RFC 6698 §2.1.2
MATCH_FULL, MATCH_SHA256, MATCH_SHA512 = 0, 1, 2   # RFC 6698 §2.1.3
_DIGEST_SIZE = {MATCH_SHA256: 32, MATCH_SHA512: 64}


@dataclass(frozen=True, slots=True)
class Tlsa:
    """One TLSA RDATA (RFC 6698 §2.1)."""

    usage: int
    selector: int
    matching: int
    data: bytes

    def text(self) -> str:
        """Presentation form (RFC 6698 §2.2): ``3 1 1 <hex>``."""
        return f"{self.usage} {self.selector} {self.matching} {self.data.hex()}"

    @property
    def usable(self) -> bool:
        """DANE-EE with a known selector and matching type whose data has the right size."""
        if self.usage != DANE_EE or self.selector not in (SELECTOR_CERT, SELECTOR_SPKI):
            return False
        if self.matching == MATCH_FULL:
            return bool(self.data)
        return len(self.data) == _DIGEST_SIZE.get(self.matching, -1)


def from_rdata(rdata: bytes) -> Tlsa | None:
    """The record in wire-format RDATA; None if it is shorter than its fixed fields."""
    if len(rdata) < 3:
        return None
    return Tlsa(rdata[0], rdata[1], rdata[2], bytes(rdata[3:]))


def owner(name: str, port: int = 443) -> str:
    """The TLSA owner name for TCP ``port`` at ``name`` (RFC 6698 §3): ``_443._tcp.name``."""
    return f"_{port}._tcp.{name.rstrip('.')}"


def selected(cert_der: bytes, selector: int) -> bytes:
    """The certificate part a selector names: the whole DER, or its SubjectPublicKeyInfo."""
    if selector == SELECTOR_CERT:
        return cert_der
    return spki_der(cert_der)


def spki_der(cert_der: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a DER certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key: Any = x509.load_der_x509_certificate(cert_der).public_key()
    spki: bytes = key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return spki


def associated(content: bytes, matching: int) -> bytes:
    """Certificate association data for ``content`` under a matching type."""
    if matching == MATCH_SHA256:
        return hashlib.sha256(content).digest()
    if matching == MATCH_SHA512:
        return hashlib.sha512(content).digest()
    return content


def record_for(cert_der: bytes, selector: int = SELECTOR_SPKI,
               matching: int = MATCH_SHA256) -> Tlsa:
    """The DANE-EE record for a certificate (default ``3 1 1``: survives re-issuing the
    certificate for the same key, and is short)."""
    return Tlsa(DANE_EE, selector, matching, associated(selected(cert_der, selector), matching))


def matches(cert_der: bytes, records: Iterable[Tlsa]) -> bool:
    """Does the certificate match one usable record (RFC 6698 §2.1, §4.1)?

    Raises:
        ValueError: ``cert_der`` is not a certificate (the caller treats it as a mismatch).
    """
    parts: dict[int, bytes] = {}
    for rec in records:
        if not rec.usable:
            continue
        if rec.selector not in parts:
            parts[rec.selector] = selected(cert_der, rec.selector)
        if associated(parts[rec.selector], rec.matching) == rec.data:
            return True
    return False


def cert_der_from_pem(data: bytes, source: str) -> bytes:
    """The first certificate of a PEM (or DER) file's bytes, as DER.

    Raises:
        UsageError: naming ``source`` when no certificate can be read.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        if b"-----BEGIN" in data:
            cert: Any = x509.load_pem_x509_certificate(data)
        else:
            cert = x509.load_der_x509_certificate(data)
    except ValueError:
        raise UsageError(f"{source}: not a PEM or DER certificate") from None
    der: bytes = cert.public_bytes(serialization.Encoding.DER)
    return der


__all__ = [
    "DANE_EE", "MATCH_FULL", "MATCH_SHA256", "MATCH_SHA512", "SELECTOR_CERT", "SELECTOR_SPKI",
    "TLSA_TYPE", "Tlsa", "associated", "cert_der_from_pem", "from_rdata", "matches", "owner",
    "record_for", "selected", "spki_der",
]
