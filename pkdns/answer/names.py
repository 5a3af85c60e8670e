"""Which world a query name belongs to: a pkarr key, a bad key, or ICANN (pure).

Rules (issue 7; pkdns 0.7 matched keys case-sensitively, so a 0x20-randomising resolver in
front of it missed pkarr names; here keys are case-insensitive):

- the last label is a valid public key -> pkarr (``www.<key>``);
- with the configured suffix TLD (default ``key``; ``""`` disables), ``<key>.<suffix>`` is a pkarr
  name too; the suffix is stripped for the lookup and put back in every name of the answer;
- a label that looks like a key (52 z-base32 characters) but is not one (off-curve point,
  non-canonical last character) -> NXDOMAIN: the name can only have meant a key;
- any other name under the suffix TLD (``garbage.key``, a 51-character label + ``.key``) ->
  NXDOMAIN too: the suffix is ours, so such a name is never sent to the ICANN upstream (that
  would leak what the user typed and cost a round trip for an answer we already know);
- anything else is an ICANN name.

Everything is case-insensitive: resolvers that randomise case (DNS 0x20) must still reach the key.
"""

from __future__ import annotations

from dataclasses import dataclass

from pkdns.errors import DecodeError
from pkdns.pkarr.keys import PublicKey, parse_label

KEY_LABEL_LEN = 52
_Z32 = frozenset("ybndrfg8ejkmcpqxot1uwisza345h769")


@dataclass(frozen=True, slots=True)
class PkarrName:
    """A name under a public key.

    ``relative`` is the lowercased part before the key (``""`` at the apex); ``suffix`` is the
    suffix TLD the client used (``""`` when the key was the last label).
    """

    key: PublicKey
    relative: str
    suffix: str

    @property
    def zone(self) -> str:
        """The key zone as the client sees it: ``<z32>`` or ``<z32>.<suffix>``."""
        return f"{self.key.z32}.{self.suffix}" if self.suffix else self.key.z32

    def present(self, relative: str) -> str:
        """A name of this zone as the client sees it (suffix put back)."""
        return f"{relative}.{self.zone}" if relative else self.zone

    def internal(self, relative: str) -> str:
        """A name of this zone as stored in the signed packet (no suffix)."""
        return f"{relative}.{self.key.z32}" if relative else self.key.z32


@dataclass(frozen=True, slots=True)
class BadKey:
    """A label that can only have meant a key but is not a valid one (answered NXDOMAIN):
    52 z-base32 characters off the curve, or whatever stands before the suffix TLD."""

    label: str


@dataclass(frozen=True, slots=True)
class Icann:
    """An ordinary DNS name, for the upstream resolver."""

    name: str


Classified = PkarrName | BadKey | Icann


def normalize(qname: str) -> str:
    """Lowercase, without the trailing dot (the root is ``""``)."""
    return qname.rstrip(".").lower()


def looks_like_key(label: str) -> bool:
    """52 characters of the z-base32 alphabet (lowercase): cheap, no curve check."""
    return len(label) == KEY_LABEL_LEN and set(label) <= _Z32


def _key_of(label: str) -> PublicKey | BadKey | None:
    if not looks_like_key(label):
        return None
    try:
        key = parse_label(label)
    except DecodeError:
        return BadKey(label)
    return key if key is not None else BadKey(label)


def classify(qname: str, suffix: str) -> Classified:
    """Classify ``qname`` (any case, trailing dot optional) given the suffix TLD (``""`` = off)."""
    name = normalize(qname)
    head, _, last = name.rpartition(".")
    if suffix and last == suffix and head:
        rest, _, key_label = head.rpartition(".")
        found = _key_of(key_label)
        if isinstance(found, BadKey):
            return found
        if found is not None:
            return PkarrName(found, rest, suffix)
        return BadKey(key_label)
    found = _key_of(last)
    if isinstance(found, BadKey):
        return found
    if found is not None:
        return PkarrName(found, head, "")
    return Icann(name)


def is_pkarr(qname: str, suffix: str) -> bool:
    """True when the resolver should hand ``qname`` to the pkarr handler (bad keys included)."""
    return not isinstance(classify(qname, suffix), Icann)


__all__ = [
    "BadKey", "Classified", "Icann", "KEY_LABEL_LEN", "PkarrName", "classify", "is_pkarr",
    "looks_like_key", "normalize",
]
