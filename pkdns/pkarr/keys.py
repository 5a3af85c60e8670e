"""Ed25519 public keys as pkarr names, keypairs and seed files.

A pkarr name is the 52-character z-base-32 spelling of a 32-byte Ed25519 public key
(RFC 8032 §5.1.5). :meth:`PublicKey.parse` accepts every form pkarr's ``FromStr`` accepts
(bare key, ``pk:``, URLs with scheme/userinfo/port/path/query/fragment, subdomains, trailing
dot) but lowercases first, because DNS names are case-insensitive (RFC 4343).

:func:`parse_label` is the resolver's per-query check of one DNS label; like pkdns it rejects
non-canonical spellings (pad bits set in the last character), so two spellings never name
one key.

Seed files hold the 32-byte RFC 8032 secret seed as 64 hex characters (pkarr
``write_secret_key_file``, pkdns-cli ``seed.txt``); legacy 52-character z-base-32 seeds
(old pkdns-cli) are accepted on read.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import nacl.bindings
import nacl.exceptions
import nacl.signing

from pkdns.errors import DecodeError, UsageError, VerifyError
from pkdns.pkarr import zbase32

KEY_BYTES = 32
Z32_LEN = 52
SIGNATURE_BYTES = 64

# Curve25519 field prime and the Edwards curve constant d = -121665/121666 (RFC 8032 §5.1).
_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P


@functools.lru_cache(maxsize=4096)
def is_curve_point(raw: bytes) -> bool:
    """True if ``raw`` decodes to a point on edwards25519 (RFC 8032 §5.1.3, steps 1-4).

    This is the check pkarr makes (ed25519-dalek ``VerifyingKey::from_bytes``). Small-order
    points pass here and fail later at signature verification (libsodium rejects them).
    """
    if len(raw) != KEY_BYTES:
        return False
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    sign = raw[31] >> 7
    if y >= _P:
        return False
    y2 = y * y % _P
    u = (y2 - 1) % _P
    v = (_D * y2 + 1) % _P
    # x = sqrt(u/v): candidate (u v^3)(u v^7)^((p-5)/8), then check v x^2 == ±u.
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    vx2 = v * x * x % _P
    if vx2 != u and vx2 != (-u) % _P:
        return False
    return not (x == 0 and sign == 1)


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A valid Ed25519 public key; ``z32`` is its pkarr name."""

    raw: bytes
    z32: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.raw) != KEY_BYTES:
            raise VerifyError(f"public key must be {KEY_BYTES} bytes, got {len(self.raw)}")
        z32 = zbase32.encode(self.raw)
        if not is_curve_point(self.raw):
            raise VerifyError(f"{z32} is not a valid Ed25519 public key (not a curve point)")
        object.__setattr__(self, "z32", z32)

    def __str__(self) -> str:
        return self.z32

    def __repr__(self) -> str:
        return f"PublicKey({self.z32})"

    @property
    def target(self) -> bytes:
        """The BEP 44 target of this key's (unsalted) mutable item: sha1(key)."""
        return hashlib.sha1(self.raw).digest()

    @property
    def uri(self) -> str:
        """``pk:<z32>``, pkarr's URI form."""
        return "pk:" + self.z32

    @classmethod
    def from_bytes(cls, raw: bytes) -> PublicKey:
        """The key with these 32 raw bytes; VerifyError if they are not a curve point."""
        return cls(bytes(raw))

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        """The key named by ``text`` in any form pkarr accepts (its ``keys.rs`` ``FromStr``),
        case-insensitively.

        Raises:
            DecodeError: not 52 z-base-32 characters after stripping URL parts.
            VerifyError: 32 bytes that are not an Ed25519 point.
        """
        label = _strip_to_key(text.strip().lower())
        if not zbase32.is_zbase32(label):
            raise DecodeError(f"{text!r} is not a public key: {label!r} is not z-base-32")
        if len(label) != Z32_LEN:
            raise DecodeError(
                f"{text!r} is not a public key: {label!r} has {len(label)} characters,"
                f" a key has {Z32_LEN}"
            )
        raw = zbase32.decode(label)
        if not is_curve_point(raw):
            raise VerifyError(f"{text!r} is not a valid Ed25519 public key (not a curve point)")
        return cls(raw)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True if ``signature`` is this key's Ed25519 signature of ``message``."""
        if len(signature) != SIGNATURE_BYTES:
            return False
        try:
            nacl.bindings.crypto_sign_open(signature + message, self.raw)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
            return False
        return True


def _strip_to_key(s: str) -> str:
    """pkarr's length-driven stripper (``impl FromStr for PublicKey``, keys.rs).

    Each step only runs while the text is longer than a key, so a bare key is never cut.
    """
    if len(s) > Z32_LEN:
        s = s.split(":", 1)[-1]  # scheme, or "pk:"
    if len(s) > Z32_LEN:
        s = s.removeprefix("//")
    if len(s) > Z32_LEN:
        s = s.split("@", 1)[-1]  # userinfo
    for sep in ":/?#":  # port, path, query, fragment
        if len(s) > Z32_LEN:
            s = s.split(sep, 1)[0]
    if len(s) > Z32_LEN:
        if s.endswith("."):
            s = s.strip(".")
        s = s.rsplit(".", 1)[-1]  # the TLD: the rightmost label wins
    return s


@functools.lru_cache(maxsize=8192)
def _classify_label(label: str) -> PublicKey | str | None:
    """Cached core of :func:`parse_label`: a key, an error message, or None."""
    if len(label) != Z32_LEN or not zbase32.is_zbase32(label):
        return None
    raw = zbase32.decode(label)
    if zbase32.encode(raw) != label:
        return f"{label} is not the canonical spelling of a key (pad bits set)"
    if not is_curve_point(raw):
        return f"{label} is not a valid Ed25519 public key (not a curve point)"
    return PublicKey(raw)


def parse_label(label: str) -> PublicKey | None:
    """The key a DNS label names, or None when the label is not 52 z-base-32 characters.

    Raises:
        VerifyError: 52 z-base-32 characters that are not a key (off-curve, or a
            non-canonical last character); the resolver answers NXDOMAIN for these.
    """
    result = _classify_label(label.lower())
    if isinstance(result, str):
        raise VerifyError(result)
    return result


class Keypair:
    """An Ed25519 signing key (RFC 8032 seed) and its public key."""

    __slots__ = ("_signing", "public_key")

    def __init__(self, signing: nacl.signing.SigningKey) -> None:
        self._signing = signing
        self.public_key = PublicKey(bytes(signing.verify_key))

    @classmethod
    def from_seed(cls, seed: bytes) -> Keypair:
        """The keypair of a 32-byte seed."""
        if len(seed) != KEY_BYTES:
            raise UsageError(f"a seed is {KEY_BYTES} bytes, got {len(seed)}")
        return cls(nacl.signing.SigningKey(bytes(seed)))

    @classmethod
    def random(cls) -> Keypair:
        """A fresh keypair from the OS random source."""
        return cls(nacl.signing.SigningKey.generate())

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed."""
        return bytes(self._signing)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return bytes(self._signing.sign(message).signature)

    def __repr__(self) -> str:
        return f"Keypair({self.public_key.z32})"


def parse_seed(text: str, source: str) -> Keypair:
    """A keypair from seed text: 64 hex characters, or a legacy 52-char z-base-32 seed."""
    s = text.strip()
    if len(s) == 2 * KEY_BYTES:
        try:
            return Keypair.from_seed(bytes.fromhex(s))
        except ValueError:
            raise UsageError(f"{source}: seed is not valid hex") from None
    if len(s) == Z32_LEN and zbase32.is_zbase32(s.lower()):
        return Keypair.from_seed(zbase32.decode(s.lower()))
    raise UsageError(
        f"{source}: a seed is {2 * KEY_BYTES} hex characters (or a legacy {Z32_LEN}-character"
        f" z-base-32 seed), got {len(s)} characters"
    )


def seed_file_exposure(path: str | os.PathLike[str]) -> str | None:
    """Why the seed file at ``path`` is exposed (every user may read or replace it), or None.

    The seed is the private key: whoever reads it can publish under the name. Like ssh with
    private keys, the command-line tools warn and the daemon refuses. Group access is left
    alone, because granting a service group read access (mode 0640) is the documented way to
    let the system service read a root-owned seed.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None   # read_seed_file says what is wrong with it
    if not mode & 0o006:
        return None
    how = "readable" if mode & 0o004 else "writable"
    return (f"{path}: seed file is {how} by every user (mode {stat.S_IMODE(mode):04o}); it is "
            f"the private key: chmod 600 {path}")


def read_seed_file(path: str | os.PathLike[str], *, private: bool = False) -> Keypair:
    """Read a seed file; UsageError naming the file and what is wrong.

    ``private``: also refuse a file every user may read or write (:func:`seed_file_exposure`).
    """
    exposed = seed_file_exposure(path) if private else None
    if exposed is not None:
        raise UsageError(exposed)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read seed file: {exc.strerror or exc}") from None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: seed file is not text (expected 64 hex characters)") from None
    return parse_seed(text, str(path))


def write_seed_file(
    path: str | os.PathLike[str], keypair: Keypair, *, overwrite: bool = False
) -> None:
    """Write the seed as 64 lowercase hex characters and a newline, mode 0600.

    The file is created with mode 0600 from the start (never briefly world-readable); an
    existing file is refused unless ``overwrite``, because losing a seed loses the name.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise UsageError(f"{path}: already exists; refusing to overwrite a seed file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot write seed file: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        os.fchmod(fd, 0o600)
        f.write(keypair.seed.hex() + "\n")
