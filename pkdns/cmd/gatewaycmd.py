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
    register_ca(sub)


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


def register_ca(sub: Any) -> None:
    """Add ``pkdns ca init|show|export``."""
    p = sub.add_parser(
        "ca", help="the gateway's local CA (only valid for .key names)",
        description="Manage the certificate authority the HTTPS gateway signs its "
        "certificates with. It lives in the state directory; its X.509 name constraints "
        "limit it to .key names, so trusting it cannot expose any other site.",
    )
    actions = p.add_subparsers(dest="ca_action", metavar="ACTION", required=True,
                               parser_class=type(p))
    for name, text in (("init", "create the CA if there is none (prints how to trust it)"),
                       ("show", "print the CA's details and how to trust it"),
                       ("export", "print the CA certificate (PEM) on stdout")):
        a = actions.add_parser(name, help=text, description=text)
        a.add_argument("--state-dir", metavar="DIR", help="default: state_dir of --config")
        a.add_argument("--config", metavar="FILE", help="read state_dir from this config")
        _verbose(a)
        a.set_defaults(func=run_ca)
    p.set_defaults(func=run_ca)


def _state_dir(args: argparse.Namespace) -> str:
    from pkdns import config, configfile

    if args.state_dir:
        return str(args.state_dir)
    return (configfile.load(args.config) if args.config else config.Config()).state_dir


def run_ca(args: argparse.Namespace) -> int:
    """init / show / export."""
    import datetime
    import socket

    from pkdns.gateway import ca

    state_dir = _state_dir(args)
    if args.ca_action == "init":
        now = datetime.datetime.now(datetime.UTC)
        local, created = ca.init(state_dir, now, socket.gethostname())
        verb = "created" if created else "already exists, unchanged:"
        print(f"gateway CA {verb} {local.cert_path} (key {local.key_path}, mode 0600)")
        print(trust_help(local))
        return 0
    found = ca.load(state_dir)
    if found is None:
        raise UsageError(f"{state_dir}: no gateway CA yet (create it: pkdns ca init "
                         f"--state-dir {state_dir})")
    local = found
    if args.ca_action == "export":
        print(local.pem(), end="")
        return 0
    print(describe(local))
    print(trust_help(local))
    return 0


def describe(local: Any) -> str:
    """The CA's identity and limits, as ``pkdns ca show`` prints them."""
    cert = local.cert
    return "\n".join([
        f"certificate: {local.cert_path}",
        f"private key: {local.key_path} (keep it private: mode 0600)",
        f"subject:     {cert.subject.rfc4514_string()}",
        f"valid:       {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}",
        f"SHA-256:     {local.fingerprint()}",
        "limits:      name constraints (critical): DNS names under .key only; no IP addresses",
    ])


def trust_help(local: Any) -> str:
    """How to make browsers and the system trust the CA, and how to take it out again."""
    crt = local.cert_path
    return f"""
To trust it (the CA can only vouch for .key names; see docs/gateway.md):
  Debian/Ubuntu system store (curl, wget, Python, Go...):
    sudo cp {crt} /usr/local/share/ca-certificates/pkdns-key-ca.crt
    sudo update-ca-certificates
    remove: sudo rm /usr/local/share/ca-certificates/pkdns-key-ca.crt;
            sudo update-ca-certificates --fresh
  Chromium and other NSS programs on Linux (per user; package libnss3-tools):
    certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n "pkdns .key CA" -i {crt}
    remove: certutil -d sql:$HOME/.pki/nssdb -D -n "pkdns .key CA"
  Firefox (per profile): Settings > Privacy & Security > Certificates > View Certificates >
    Authorities > Import, tick "Trust this CA to identify websites"; or the certutil line
    above with -d sql:<profile directory>. Remove it in the same dialog (Delete or Distrust).
  macOS: open the file in Keychain Access, add it to the System keychain, and under Trust set
    "When using this certificate" to Always Trust (or: sudo security add-trusted-cert -d
    -r trustRoot -k /Library/Keychains/System.keychain {crt}); remove: delete it there.
  Windows: open the certificate, Install Certificate, Local Machine, place it in "Trusted
    Root Certification Authorities" (or: certutil -addstore Root pkdns-key-ca.crt);
    remove: certmgr.msc, Trusted Root Certification Authorities, delete it."""
