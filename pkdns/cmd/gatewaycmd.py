"""`pkdns tlsa` and `pkdns ca`: what an origin publishes, and the gateway's local CA.

``pkdns tlsa CERT.pem`` prints the TLSA RDATA (RFC 6698 §2.2) an origin puts at
``_443._tcp.<name>`` in its zone: ``3 1 1 <hex>`` by default (DANE-EE, SubjectPublicKeyInfo,
SHA-256; RFC 7671 §5.1 recommends it). ``pkdns ca init|show|export`` manage the CA the
gateway signs its certificates with (:mod:`pkdns.gateway.ca`). The ``cryptography`` imports
stay inside the commands, so the rest of the CLI starts without it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pkdns.errors import UsageError


def register(sub: Any) -> None:
    """Add the tlsa and ca subcommands."""
    p = sub.add_parser(
        "tlsa", help="print the TLSA record data for a certificate",
        description="Print the TLSA RDATA for CERT (PEM or DER): '3 1 1 <hex>' by default "
        "(DANE-EE, the certificate's public key, SHA-256). Publish it in the zone as "
        "'_443._tcp.NAME IN TLSA <output>' so the pkdns gateway accepts the origin.",
    )
    p.add_argument("cert", metavar="CERT.pem")
    p.add_argument("--selector", type=int, choices=(0, 1), default=1,
                   help="0: the whole certificate, 1: its public key (default)")
    p.add_argument("--matching", type=int, choices=(0, 1, 2), default=1,
                   help="0: the data itself, 1: SHA-256 (default), 2: SHA-512")
    _verbose(p)
    p.set_defaults(func=run_tlsa)


def _verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")


def run_tlsa(args: argparse.Namespace) -> int:
    """Print one line: the TLSA RDATA of the certificate."""
    from pkdns.gateway import tlsa

    try:
        data = Path(args.cert).read_bytes()
    except OSError as exc:
        raise UsageError(f"{args.cert}: cannot read certificate: {exc.strerror or exc}"
                         ) from None
    der = tlsa.cert_der_from_pem(data, args.cert)
    print(tlsa.record_for(der, args.selector, args.matching).text())
    return 0
