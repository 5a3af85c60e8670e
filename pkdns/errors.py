"""The pkdns error tree.

Every failure a user or a peer can cause has a class here, so the edges (CLI, DNS transports,
KRPC, HTTP) can map it to exactly one outcome: an exit code, an RCODE, a KRPC error or an
HTTP status.

    PkdnsError
    ├── UsageError        bad CLI input or input file (exit 2)
    │   └── ConfigError   bad configuration (exit 2); names the key, the file and the line
    ├── DecodeError       remote bytes we cannot parse (bencode/KRPC/DNS/pkarr)
    │   └── VerifyError   bad Ed25519 signature, wrong key, size limits
    ├── UpstreamError     the ICANN forwarder failed (timeout, bad reply, network)
    └── DhtError          the DHT could not be used (no bootstrap, lookup deadline)

"Not found" is never an exception: lookups return ``None``.
"""

from __future__ import annotations


class PkdnsError(Exception):
    """Root of every error pkdns raises on purpose."""

    exit_code = 1


class UsageError(PkdnsError):
    """The user gave bad input: a flag, a file, a key, a zone line."""

    exit_code = 2


class ConfigError(UsageError):
    """The configuration is invalid; the message names the key, the file and the line."""


class DecodeError(PkdnsError):
    """Bytes from the network (or a file) do not decode."""


class VerifyError(DecodeError):
    """Bytes decode but fail verification (signature, key, size)."""


class UpstreamError(PkdnsError):
    """The ICANN upstream did not give a usable answer."""


class DhtError(PkdnsError):
    """The DHT could not be reached or used."""
