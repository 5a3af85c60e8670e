"""z-base-32, the alphabet pkarr writes public keys in.

pkarr (Rust ``base32`` crate, ``Alphabet::Z``) and pkdns (``zbase32`` crate) both use plain
RFC 4648 base32 bit order (MSB first, no padding) with the alphabet of the z-base-32 proposal
substituted: ``ybndrfg8ejkmcpqxot1uwisza345h769``. A 32-byte key is 256 bits, so 52 characters;
the 52nd character carries one data bit and four zero pad bits.

Decoding ignores the pad bits of the last character, as the ``base32`` crate does; callers that
need the canonical spelling (the DNS label parser) re-encode and compare.
"""

from __future__ import annotations

import base64

from pkdns.errors import DecodeError

ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"
_RFC4648 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_TO_Z = str.maketrans(_RFC4648, ALPHABET)
_FROM_Z = str.maketrans(ALPHABET, _RFC4648)
_VALID = frozenset(ALPHABET)
# base64.b32decode needs a multiple of 8 characters; pad up with '=' (RFC 4648 §6).
_PAD = ("", "=======", "======", "=====", "====", "===", "==", "=")


def encode(data: bytes) -> str:
    """z-base-32 text of ``data`` (no padding)."""
    return base64.b32encode(data).decode("ascii").rstrip("=").translate(_TO_Z)


def decode(text: str) -> bytes:
    """Bytes of z-base-32 ``text``; trailing pad bits are ignored.

    Raises:
        DecodeError: a character outside the (lowercase) alphabet.
    """
    bad = set(text) - _VALID
    if bad:
        shown = "".join(sorted(bad))
        raise DecodeError(f"not z-base-32: invalid character(s) {shown!r} in {text!r}")
    nbytes = len(text) * 5 // 8
    full = text.translate(_FROM_Z)
    # b32decode rejects lengths whose trailing group cannot come from whole bytes (1, 3 or 6
    # characters); fill the group with zero characters and keep only the whole bytes.
    rem = len(full) % 8
    if rem in (1, 3, 6):
        full += "A"
        rem += 1
    try:
        return base64.b32decode(full + _PAD[rem])[:nbytes]
    except ValueError as exc:  # binascii.Error; unreachable after the checks above
        raise DecodeError(f"not z-base-32: {text!r}: {exc}") from None


def is_zbase32(text: str) -> bool:
    """True when every character of ``text`` is in the z-base-32 alphabet."""
    return not set(text) - _VALID
