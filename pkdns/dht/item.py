"""BEP 44 mutable items without salt, the shape pkarr uses (pkarr ``design/base.md``).

``k`` is the Ed25519 public key, ``target = sha1(k)``, ``seq`` the packet timestamp in µs and
``sig`` signs the bencoded ``3:seqi<seq>e1:v<len>:<v>``. Verification is done here with pynacl
on exactly those bytes; parsing ``v`` as a DNS packet is the pkarr layer's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from pkdns.dht.ids import target_of
from pkdns.errors import VerifyError

MAX_VALUE = 1000
"""BEP 44: ``v`` must be at most 1000 bytes (error 205)."""


@dataclass(frozen=True, slots=True)
class MutableItem:
    """A verified BEP 44 item (no salt)."""

    k: bytes
    seq: int
    v: bytes
    sig: bytes

    @property
    def target(self) -> bytes:
        return target_of(self.k)

    def newer_than(self, other: MutableItem | None) -> bool:
        """Higher seq wins; equal seq: the larger value (pkarr ``more_recent_than``)."""
        return other is None or (self.seq, self.v) > (other.seq, other.v)


def signable(seq: int, v: bytes) -> bytes:
    """BEP 44 signed bytes for an item without salt."""
    return b"3:seqi%de1:v%d:" % (seq, len(v)) + v


def sign_item(seed: bytes, seq: int, v: bytes) -> MutableItem:
    """Sign ``v`` at ``seq`` with a 32-byte Ed25519 seed."""
    key = SigningKey(seed)
    sig = key.sign(signable(seq, v)).signature
    return MutableItem(k=bytes(key.verify_key), seq=seq, v=v, sig=sig)


def check_item(k: bytes | None, seq: int | None, v: bytes | None, sig: bytes | None,
               *, expected_key: bytes | None = None,
               expected_target: bytes | None = None) -> MutableItem:
    """Build a :class:`MutableItem` from wire fields, or raise :class:`VerifyError`.

    Checks (BEP 44; libtorrent ``get_item.cpp``, ``node.cpp``): every field present with the
    right size, ``seq`` ≥ 0, ``len(v)`` ≤ 1000, ``k`` equals the requested key, ``sha1(k)``
    equals the target and the Ed25519 signature verifies.
    """
    if k is None or seq is None or v is None or sig is None:
        raise VerifyError("incomplete item")
    if len(k) != 32 or len(sig) != 64:
        raise VerifyError("bad key or signature size")
    if seq < 0:
        raise VerifyError("negative seq")
    if len(v) > MAX_VALUE:
        raise VerifyError("v larger than 1000 bytes")
    if expected_key is not None and k != expected_key:
        raise VerifyError("item for another key")
    if expected_target is not None and target_of(k) != expected_target:
        raise VerifyError("sha1(k) is not the target")
    try:
        VerifyKey(k).verify(signable(seq, v), sig)
    except (CryptoError, ValueError, TypeError) as exc:
        raise VerifyError(f"bad signature: {exc}") from None
    return MutableItem(k=k, seq=seq, v=v, sig=sig)
