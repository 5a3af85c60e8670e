"""`pkdns keygen`, `pkdns pubkey`, `pkdns packet`: keys and signed packets, offline.

All three work without a network, except `packet` when the zone uses ``{external_ipv4}`` or
``{external_ipv6}`` (then IP-echo services are asked; failure is exit 1). Bad input is exit 2
with one line naming the file and what is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pkdns.clock import SYSTEM_CLOCK
from pkdns.errors import UsageError
from pkdns.pkarr.keys import Keypair, read_seed_file, seed_file_exposure, write_seed_file
from pkdns.pkarr.signed_packet import MAX_PACKET_BYTES, SignedPacket

if TYPE_CHECKING:
    from pkdns.config import RepublishConfig


def register(sub: Any) -> None:
    """Add the keygen, pubkey and packet subcommands."""
    p = sub.add_parser(
        "keygen", help="create a new key (seed file) and print its public key",
        description="Create a random Ed25519 seed. With --out, write it to FILE (64 hex "
        "characters, mode 0600) and print the public key on stdout. Without --out, print "
        "the seed on stdout and the public key on stderr.",
    )
    p.add_argument("--out", metavar="FILE", help="seed file to create (refuses to overwrite)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    _verbose(p)
    p.set_defaults(func=run_keygen)

    p = sub.add_parser("pubkey", help="print the public key (z-base-32) of a seed file")
    p.add_argument("seedfile", metavar="SEEDFILE", help="64 hex characters (or legacy z-base-32)")
    _verbose(p)
    p.set_defaults(func=run_pubkey)

    p = sub.add_parser(
        "packet", help="sign a zone file into a pkarr signed packet",
        description="Sign ZONEFILE with the key in SEEDFILE; print the records as zone text, "
        "the timestamp and the size; with --out, write the relay payload (signature, "
        "timestamp, DNS packet) to FILE. {external_ipv4} and {external_ipv6} in the zone are "
        "replaced with this host's addresses, asked from IP-echo services.",
    )
    p.add_argument("seedfile", metavar="SEEDFILE")
    p.add_argument("zonefile", metavar="ZONEFILE")
    p.add_argument("--out", metavar="FILE", help="write the relay payload (binary) here")
    add_ip_echo_flag(p)
    p.add_argument("--timestamp", type=int, metavar="MICROSECONDS",
                   help="packet timestamp in µs since the epoch (default: now)")
    _verbose(p)
    p.set_defaults(func=run_packet)


def _verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")


def run_keygen(args: argparse.Namespace) -> int:
    """Create a seed; print the public key."""
    keypair = Keypair.random()
    if args.out:
        write_seed_file(args.out, keypair, overwrite=args.force)
        print(keypair.public_key.z32)
    else:
        print(keypair.seed.hex())
        print(keypair.public_key.z32, file=sys.stderr)
    return 0


def run_pubkey(args: argparse.Namespace) -> int:
    """Print the public key of a seed file."""
    print(read_seed(args.seedfile).public_key.z32)
    return 0


def read_seed(path: str) -> Keypair:
    """A seed file for a command-line tool: a warning on stderr (as ssh gives) when every
    user may read it; the daemon's ``[[zones]]`` refuse such a file."""
    keypair = read_seed_file(path)
    exposed = seed_file_exposure(path)
    if exposed is not None:
        print(f"pkdns: warning: {exposed}", file=sys.stderr)
    return keypair


def run_packet(args: argparse.Namespace) -> int:
    """Sign a zone file; print it; write the relay payload."""
    from pkdns.publish.zonebuild import read_zone_text, sign_zone

    keypair = read_seed(args.seedfile)
    text = with_addresses(read_zone_text(args.zonefile), args.ip_echo)
    if args.timestamp is not None and not 0 <= args.timestamp < 2**63:
        raise UsageError(f"--timestamp: {args.timestamp} is not a timestamp in µs")
    ts = SYSTEM_CLOCK.wall_us() if args.timestamp is None else args.timestamp
    packet = sign_zone(keypair, text, args.zonefile, ts)
    if args.out:
        _write_bytes(args.out, packet.relay_payload())
    print(_describe(packet, args.out), end="")
    return 0


def add_ip_echo_flag(p: argparse.ArgumentParser) -> None:
    """``--ip-echo URL`` for the commands that sign zone files (packet, publish)."""
    p.add_argument("--ip-echo", action="append", metavar="URL",
                   help="IP-echo URL for the {external_ip*} variables (repeatable; replaces "
                   "the default services)")


def with_addresses(text: str, urls: list[str] | None) -> str:
    """Fill in {external_ipv4}/{external_ipv6}, asking IP-echo services only when used."""
    # the zone modules (dnspython) and the config dataclasses are imported by the commands
    # that use them: `pkdns resolve` imports this module too, and starts faster without them
    from pkdns.config import RepublishConfig
    from pkdns.pkarr.zone import substitute_variables, variables_used

    want4, want6 = variables_used(text)
    if not (want4 or want6):
        return text
    defaults = RepublishConfig()
    v4 = _discover(urls or defaults.ip_echo_v4, socket.AF_INET, defaults) if want4 else None
    v6 = _discover(urls or defaults.ip_echo_v6, socket.AF_INET6, defaults) if want6 else None
    return substitute_variables(text, v4, v6)


def _discover(urls: Any, family: int, defaults: RepublishConfig) -> str:
    from pkdns.pkarr import external_ip

    external_ip.preload()
    return asyncio.run(external_ip.discover(tuple(urls), family, defaults.ip_echo_timeout))


def _describe(packet: SignedPacket, out: str | None) -> str:
    try:
        when = datetime.datetime.fromtimestamp(packet.timestamp / 1e6, datetime.UTC)
        date = f" ({when.isoformat(timespec='microseconds')})"
    except (OverflowError, ValueError, OSError):  # past year 9999
        date = ""
    lines = [
        f"; public key {packet.public_key.z32}",
        f"; timestamp {packet.timestamp}{date}",
        f"; size {len(packet.packet)} bytes of DNS packet (limit {MAX_PACKET_BYTES}),"
        f" relay payload {len(packet.relay_payload())} bytes",
    ]
    if out:
        lines.append(f"; relay payload written to {out}")
    from pkdns.pkarr.zone import records_to_text

    body = records_to_text(packet.records, packet.public_key.z32)
    return "\n".join(lines) + "\n" + body


def _write_bytes(path: str, data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}") from None
