"""`pkdns [serve]`: run the daemon in the foreground.

Flags override the config file; ``--check`` validates the result (and every ``[[zones]]``
seed and zone file, offline) and exits.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from pkdns.errors import UsageError
from pkdns.hostport import DNS_PORT, HostPort, parse_hostport, parse_ip_hostport

if TYPE_CHECKING:
    from pkdns.config import Config


def _hostport(text: str) -> HostPort:
    try:
        return parse_hostport(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ip_hostport(text: str, default_port: int | None = None) -> HostPort:
    """The same rule as the file's ``dns.listen``/``dns.upstream``/``http.listen``: IP only."""
    try:
        return parse_ip_hostport(text, default_port)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad address {text!r}: {exc}") from None


def _dns_hostport(text: str) -> HostPort:
    """``--listen`` / ``--upstream``: an IP literal; the port may be left out (53)."""
    return _ip_hostport(text, DNS_PORT)


def add_common_dht_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by serve, publish and resolve."""
    p.add_argument("--bootstrap", action="append", type=_hostport, metavar="HOST:PORT",
                   help="DHT bootstrap node (repeatable; replaces the public routers)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")


def register(sub: Any) -> None:
    """Add the `serve` subcommand."""
    p = sub.add_parser(
        "serve", help="run the DNS daemon (default command)",
        description="Run the resolver in the foreground: DNS on UDP and TCP (keys from the "
        "Mainline DHT, other names forwarded to the ICANN upstreams), the HTTP face (DoH, "
        "relay API, /metrics, status page) and the republisher of [[zones]]. Settings come "
        "from --config (defaults otherwise); the flags below override the file. SIGHUP "
        "reloads the file, SIGTERM drains and exits 0.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--check", action="store_true", help="validate the configuration and exit")
    p.add_argument("--listen", action="append", type=_dns_hostport, metavar="HOST[:PORT]",
                   help="DNS listen address, UDP and TCP; an IP literal, port 53 unless given, "
                   "[v6]:PORT for IPv6 (repeatable)")
    p.add_argument("--upstream", action="append", type=_dns_hostport, metavar="HOST[:PORT]",
                   help="ICANN upstream resolver; an IP literal, port 53 unless given "
                   "(repeatable)")
    http = p.add_mutually_exclusive_group()
    http.add_argument("--http", action="append", type=_ip_hostport, metavar="HOST:PORT",
                      help="HTTP listen address, an IP literal (DoH, relay API, metrics)")
    http.add_argument("--no-http", action="store_true", help="disable the HTTP server")
    p.add_argument("--dht-port", type=int, metavar="PORT", help="DHT UDP port (0 = any free)")
    p.add_argument("--dht-mode", choices=("client", "server"),
                   help="client: read-only DHT node (BEP 43, the default); server: also "
                   "answer and store for others")
    p.add_argument("--tld-suffix", metavar="NAME", help='suffix TLD after keys ("" disables)')
    p.add_argument("--state-dir", metavar="DIR",
                   help="where the routing table and verified packets are kept across "
                   "restarts (default /var/lib/pkdns)")
    p.add_argument("--testnet", action="store_true",
                   help="run against an in-process loopback DHT with a demo key (offline demo)")
    p.add_argument("--log-format", choices=("json", "console"),
                   help="log lines as JSON or for people (default: console on a terminal, "
                   "JSON otherwise)")
    add_common_dht_flags(p)
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> Config:
    """Config file (if any) with command-line flags applied on top."""
    # imported here: the dataclasses and the TOML reader cost publish/resolve ~35 ms of
    # start-up, and they share only the flags above with serve
    from pkdns import config as cfgmod
    from pkdns import configfile

    cfg = configfile.load(args.config) if args.config else cfgmod.Config()
    dns = cfgmod.replace(cfg.dns, listen=_tuple(args.listen), upstream=_tuple(args.upstream))
    http = cfg.http
    if args.no_http:
        http = cfgmod.replace(http, enabled=False)
    elif args.http:
        http = cfgmod.replace(http, enabled=True, listen=tuple(args.http))
    if args.dht_port is not None and not 0 <= args.dht_port <= 65535:
        raise UsageError(f"--dht-port: {args.dht_port} is not a port number")
    dht = cfgmod.replace(cfg.dht, port=args.dht_port, mode=args.dht_mode,
                         bootstrap=_tuple(args.bootstrap))
    pkarr = cfgmod.replace(cfg.pkarr, tld_suffix=args.tld_suffix)
    level = "debug" if args.verbose else None
    log = cfgmod.replace(cfg.log, format=args.log_format, level=level)
    cfg = cfgmod.replace(cfg, dns=dns, http=http, dht=dht, pkarr=pkarr, log=log,
                         state_dir=args.state_dir, testnet=True if args.testnet else None)
    configfile.validate(cfg, args.config or "<command line>")
    return cfg


def _tuple(value: list[Any] | None) -> tuple[Any, ...] | None:
    return tuple(value) if value else None


def run(args: argparse.Namespace) -> int:
    """Validate, then run the daemon until SIGTERM/SIGINT (``--check``: validate and exit)."""
    cfg = build_config(args)
    if args.check:
        from pkdns.publish.zonebuild import check_zone

        for zone in cfg.zones:
            check_zone(zone)
        source = args.config or "defaults (no --config given, no file read)"
        print(f"{source}: configuration OK", file=sys.stdout)
        return 0
    if cfg.testnet:
        from pkdns.demo import main as run_demo

        return run_demo(cfg, lambda: build_config(args))
    from pkdns.app import main as run_daemon

    return run_daemon(cfg, lambda: build_config(args))
