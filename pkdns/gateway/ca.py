"""The gateway's local certificate authority: a root that can only vouch for ``.key`` names.

The root is an ECDSA P-256 key with a critical X.509 NameConstraints extension (RFC 5280
§4.2.1.10) permitting the DNS subtree ``key`` (``key`` and every name under it) and excluding
every IPv4 and IPv6 address, so even a stolen CA key cannot make a browser that honours
constraints (Chromium, Firefox, OpenSSL) accept a certificate for ``example.com`` or an IP
address. Its certificate and key live in the daemon's state directory (key file mode 0600).

Leaves are minted per SNI name with one in-memory leaf key, valid for a day (:data:`LEAF_LIFE`);
a name outside ``.key`` is refused before any signing. Certificate building is pure (``now``
is a parameter); only :func:`init` and :func:`load` touch files.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pkdns.errors import UsageError

CERT_FILE = "gateway-ca.crt"
KEY_FILE = "gateway-ca.key"
SUFFIX = "key"
CA_LIFE = datetime.timedelta(days=3650)
LEAF_LIFE = datetime.timedelta(days=1)
_BACKDATE = datetime.timedelta(hours=1)     # clients whose clock is a little behind


@dataclass(frozen=True, slots=True)
class LocalCa:
    """The root certificate and its private key (``cryptography`` objects)."""

    cert: Any
    key: Any
    cert_path: Path
    key_path: Path

    def pem(self) -> str:
        """The root certificate, PEM (what users import into trust stores)."""
        from cryptography.hazmat.primitives import serialization

        text: bytes = self.cert.public_bytes(serialization.Encoding.PEM)
        return text.decode()

    def fingerprint(self) -> str:
        """SHA-256 of the certificate, colon-separated hex (what certutil and browsers show)."""
        from cryptography.hazmat.primitives import hashes

        digest: bytes = self.cert.fingerprint(hashes.SHA256())
        return ":".join(f"{b:02X}" for b in digest)


def paths(state_dir: str | Path) -> tuple[Path, Path]:
    """Where the CA certificate and key live in a state directory."""
    base = Path(state_dir)
    return base / CERT_FILE, base / KEY_FILE


def build_root(key: Any, now: datetime.datetime, label: str) -> Any:
    """A self-signed root for ``key``, constrained to ``.key`` names (pure)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pkdns"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"pkdns .key gateway CA ({label})")])
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName(SUFFIX)],
        excluded_subtrees=[x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
                           x509.IPAddress(ipaddress.ip_network("::/0"))])
    usage = x509.KeyUsage(digital_signature=False, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=True, crl_sign=True, encipher_only=False,
                          decipher_only=False)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(_serial())
               .not_valid_before(now - _BACKDATE).not_valid_after(now + CA_LIFE)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(usage, critical=True)
               .add_extension(constraints, critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    return builder.sign(key, hashes.SHA256())


def mint_leaf(ca: LocalCa, name: str, leaf_key: Any, now: datetime.datetime) -> Any:
    """A server certificate for ``name`` (a ``.key`` name), signed by ``ca`` (pure).

    Raises:
        ValueError: ``name`` is not under ``.key`` (the gateway never asks; this is the
            last line of defence, independent of the name constraint).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    name = name.rstrip(".").lower()
    if not name.endswith("." + SUFFIX) or not all(name.split(".")):
        raise ValueError(f"refusing to mint a certificate for {name!r}: not a .{SUFFIX} name")
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=False, crl_sign=False, encipher_only=False,
                          decipher_only=False)
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])]))
               .issuer_name(ca.cert.subject).public_key(leaf_key.public_key())
               .serial_number(_serial())
               .not_valid_before(now - _BACKDATE).not_valid_after(now + LEAF_LIFE)
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(usage, critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                              critical=False))
    return builder.sign(ca.key, hashes.SHA256())


def new_key() -> Any:
    """A fresh ECDSA P-256 private key."""
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _serial() -> int:
    return secrets.randbits(159) | 1     # RFC 5280 §4.1.2.2: positive, at most 20 octets


def load(state_dir: str | Path) -> LocalCa | None:
    """The CA in ``state_dir``; None if there is none yet.

    Raises:
        UsageError: only one of the two files exists, or they do not parse or do not pair.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = paths(state_dir)
    if not cert_path.exists() and not key_path.exists():
        return None
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key: Any = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise UsageError(f"{exc.filename}: cannot read the gateway CA: "
                         f"{exc.strerror or exc}") from None
    except ValueError:
        raise UsageError(f"{cert_path}, {key_path}: not a PEM certificate and key") from None
    if cert.public_key() != key.public_key():
        raise UsageError(f"{key_path}: this key does not belong to {cert_path}")
    return LocalCa(cert, key, cert_path, key_path)


def init(state_dir: str | Path, now: datetime.datetime, label: str) -> tuple[LocalCa, bool]:
    """The CA in ``state_dir``, created if absent; ``(ca, created)``.

    The key is written with mode 0600 before any byte of it (``O_EXCL``: never over an
    existing file). When root runs this for a state directory that belongs to another user
    (``sudo pkdns ca init --state-dir /var/lib/pkdns``), both files are given to that user,
    the one the daemon runs as.

    Raises:
        UsageError: the directory cannot be created or written, or a CA half exists.
    """
    from cryptography.hazmat.primitives import serialization

    existing = load(state_dir)
    if existing is not None:
        return existing, False
    base = Path(state_dir)
    cert_path, key_path = paths(base)
    key = new_key()
    cert = build_root(key, now, label)
    key_pem: bytes = key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
    cert_pem: bytes = cert.public_bytes(serialization.Encoding.PEM)
    try:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_new(key_path, key_pem, 0o600)
        try:
            _write_new(cert_path, cert_pem, 0o644)
        except OSError:
            key_path.unlink()       # no half CA left behind
            raise
        _give_to_owner_of(base, (key_path, cert_path))
    except OSError as exc:
        raise UsageError(f"{exc.filename or base}: cannot create the gateway CA: "
                         f"{exc.strerror or exc}") from None
    return LocalCa(cert, key, cert_path, key_path), True


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)        # the umask must not widen or narrow it
        os.write(fd, data)
    finally:
        os.close(fd)


def _give_to_owner_of(base: Path, files: tuple[Path, ...]) -> None:
    st = base.stat()
    if os.geteuid() == 0 and st.st_uid != 0:
        for f in files:
            os.chown(f, st.st_uid, st.st_gid)


__all__ = ["CA_LIFE", "CERT_FILE", "KEY_FILE", "LEAF_LIFE", "LocalCa", "build_root", "init",
           "load", "mint_leaf", "new_key", "paths"]
