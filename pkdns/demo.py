"""``pkdns --testnet``: the whole product offline, in one command, without root.

It starts a loopback DHT (:class:`pkdns.dht.testnet.Testnet`, in this process), signs a demo
zone with a fresh key and stores it on that DHT with a BEP 44 put, then runs the ordinary
:class:`pkdns.app.Daemon` joined to the testnet only, and prints the ``dig`` lines to try.
Nothing here needs the internet: the daemon's DHT node bootstraps from the testnet (the public
routers are never asked), relays are not used, and ICANN names go to a stand-in resolver on
loopback (:mod:`pkdns.demo_icann`) unless upstreams were given (``--upstream`` or the file).
The banner says exactly what, if anything, leaves the machine: those upstreams, and IP-echo
services when a ``[[zones]]`` entry uses ``{external_ipv4}``/``{external_ipv6}``.

Settings left at their defaults are replaced by ones that suit a demo on a workstation (a value
set on the command line or in the config file is kept): DNS on ``127.0.0.1:5353`` (no root
needed; any free port if that one is taken), HTTP on ``127.0.0.1:6881`` or, when a running pkdns
(or anything else) holds it, any free port, the state in a temporary directory (removed at
exit) instead of ``/var/lib/pkdns``, and the DHT node on ``127.0.0.1``, any free port. The
banner prints the addresses actually bound.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import TextIO

import uvloop
from dnslib import QTYPE

from pkdns import log
from pkdns.app import Daemon
from pkdns.clock import SYSTEM_CLOCK
from pkdns.config import (
    Config,
    DhtConfig,
    DnsConfig,
    HostPort,
    HttpConfig,
    format_hostport,
    replace,
)
from pkdns.demo_icann import NAMES, StandInIcann
from pkdns.dht.testnet import HOST, Testnet
from pkdns.dns import wire
from pkdns.errors import DhtError, PkdnsError
from pkdns.lifecycle import Service
from pkdns.pkarr.client import PkarrClient
from pkdns.pkarr.keys import Keypair
from pkdns.pkarr.signed_packet import SignedPacket
from pkdns.pkarr.zone import parse_zone, variables_used
from pkdns.publish.zonebuild import read_zone_text

DEMO_NODES = 8
DEMO_LISTEN: tuple[HostPort, ...] = ((HOST, 5353),)
DEMO_ZONE = """\
@      300 IN A     127.0.0.1
@      300 IN AAAA  ::1
@      300 IN HTTPS 1 . alpn=h2
www    300 IN CNAME @
_demo  300 IN TXT   "hello from the pkdns testnet"
"""
"""The records of the demo key (owner names relative to the key)."""
BOOTSTRAP_WAIT = 10.0   # seconds to wait for the daemon's DHT node before printing the banner

_log = log.get("demo")


def demo_config(cfg: Config, bootstrap: Sequence[HostPort], state_dir: str,
                listen: tuple[HostPort, ...] = DEMO_LISTEN,
                http_listen: tuple[HostPort, ...] = HttpConfig().listen,
                demo_key: str = "", icann: HostPort | None = None) -> Config:
    """``cfg`` adapted to the loopback testnet (see the module docstring); ``listen``,
    ``http_listen`` and ``icann`` (the stand-in resolver) replace the DNS, HTTP and upstream
    addresses left at their defaults. ``demo_key``
    is allowed loopback addresses (the rebinding filter): the demo signs it itself, like a
    ``[[zones]]`` key, and its records point at this machine."""
    dns, dht, http = cfg.dns, cfg.dht, cfg.http
    if dns.listen == DnsConfig().listen:
        dns = replace(dns, listen=listen)
    if icann is not None and dns.upstream == DnsConfig().upstream:
        dns = replace(dns, upstream=(icann,))
    if http.listen == HttpConfig().listen:
        http = replace(http, listen=http_listen)
    defaults = DhtConfig()
    dht = replace(dht, bootstrap=tuple(bootstrap),
                  bind=HOST if dht.bind == defaults.bind else None,
                  port=0 if dht.port == defaults.port else None)
    allow = (*cfg.pkarr.rebind_allow, demo_key) if demo_key else None
    pkarr = replace(cfg.pkarr, relays=(), rebind_allow=allow)   # the testnet: only source
    state = state_dir if cfg.state_dir == Config().state_dir else None
    return replace(cfg, dns=dns, dht=dht, http=http, pkarr=pkarr, state_dir=state)


def demo_packet(keypair: Keypair) -> SignedPacket:
    """The demo zone signed by ``keypair`` (timestamp: now)."""
    records = parse_zone(DEMO_ZONE, keypair.public_key, filename="<demo zone>")
    return SignedPacket.sign(keypair, records, SYSTEM_CLOCK.wall_us())


def demo_listen() -> tuple[HostPort, ...]:
    """:data:`DEMO_LISTEN`, or any free port on it if 5353 is taken.

    5353 is also the mDNS port: avahi-daemon (or macOS mDNSResponder) holds ``0.0.0.0:5353``,
    which makes binding ``127.0.0.1:5353`` fail. The banner shows the port actually used.
    """
    host, port = DEMO_LISTEN[0]
    try:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET, kind) as probe:
                probe.bind((host, port))
    except OSError:
        _log.warning("demo_port_in_use", port=port, fallback="any free port")
        return ((host, 0),)
    return DEMO_LISTEN


def demo_http_listen(http: HttpConfig) -> tuple[HostPort, ...]:
    """The default ``http.listen`` (``127.0.0.1:6881``), or any free port on it if taken.

    A pkdns already running on the machine holds 6881 with its own HTTP face; the demo must
    start next to it. The probe binds the way the listener will (``SO_REUSEADDR``, as
    :func:`socket.create_server` does), so a socket in TIME_WAIT is not mistaken for a holder.
    """
    default = HttpConfig().listen
    if not http.enabled or http.listen != default:
        return default
    host, port = default[0]
    try:
        socket.create_server((host, port)).close()
    except OSError:
        _log.warning("demo_http_port_in_use", port=port, fallback="any free port")
        return ((host, 0),)
    return default


async def publish(net: Testnet, packet: SignedPacket) -> int:
    """Put ``packet`` on the testnet through a pkarr client over one of its nodes; the number
    of nodes that stored it."""
    answer = (await PkarrClient(net.nodes[-1]).publish(packet)).dht
    if answer is None or answer.stored == 0:
        why = answer.error if answer is not None else "no DHT"
        raise DhtError(f"the testnet stored no copy of the demo packet ({why})")
    return answer.stored


class Banner:
    """What to try, printed once the daemon listens (a component started last)."""

    name = "banner"

    def __init__(self, daemon: Daemon, key: str, net: Testnet, stream: TextIO | None = None,
                 icann: HostPort | None = None) -> None:
        self.daemon, self.key, self.net, self.icann = daemon, key, net, icann
        self.stream = stream or sys.stdout

    async def start(self) -> None:
        with contextlib.suppress(TimeoutError):   # a slow bootstrap only delays the banner
            await asyncio.wait_for(self.daemon.pkarr.bootstrapped.wait(), BOOTSTRAP_WAIT)
        print(self.text(), file=self.stream, flush=True)

    async def stop(self) -> None:
        return None

    def text(self) -> str:
        host, port = self.daemon.dns.bound[0]
        suffix = self.daemon.cfg.pkarr.tld_suffix
        z = self.key
        dig = f"@{host} -p {port}"
        leaving = what_leaves(self.daemon.cfg, self.icann)
        lines = [
            "",
            f"pkdns testnet demo: {len(self.net.nodes)} DHT nodes on {HOST} "
            f"(bootstrap {format_hostport(self.net.bootstrap[0])}), "
            + ("nothing leaves this machine" if not leaving else
               "what leaves this machine: " + "; ".join(leaving)),
            self._icann_line(),
            f"demo key: {z}",
            f"DNS on {format_hostport((host, port))} (UDP and TCP). Try:",
            f"  dig {dig} {z}",
            f"  dig {dig} AAAA {z}",
            f"  dig {dig} TXT _demo.{z}",
            f"  dig {dig} HTTPS {z}",
            f"  kdig {dig} +tcp www.{z}",
        ]
        if suffix:
            lines.append(f"  dig {dig} www.{z}.{suffix}")
        if self.icann is not None and self.daemon.cfg.dns.upstream == (self.icann,):
            lines.append(f"  dig {dig} {NAMES[0]}")
        lines += self._http_lines(z)
        lines += ["Ctrl-C to stop.", ""]
        return "\n".join(lines)

    def _icann_line(self) -> str:
        upstream = self.daemon.cfg.dns.upstream
        if self.icann is not None and upstream == (self.icann,):
            return (f"ICANN names: a stand-in resolver on {format_hostport(self.icann)} answers "
                    f"{', '.join(NAMES)} (www. too), every other name NXDOMAIN; "
                    "--upstream IP forwards them to a real resolver instead")
        where = ", ".join(format_hostport(a) for a in upstream)
        return f"ICANN names: forwarded to {where}"

    def _http_lines(self, z: str) -> list[str]:
        face = next((c for c in self.daemon.components if c.name == "http"), None)
        addresses: list[HostPort] = list(getattr(face, "addresses", []))
        if not addresses:
            return []
        base = f"http://{format_hostport(addresses[0])}"
        query = wire.build_query(0, wire.name_wire(z), QTYPE.A, wire.C_IN, False, False)
        b64 = base64.urlsafe_b64encode(query).rstrip(b"=").decode()
        decode = ("import sys, dns.message; "
                  "print(dns.message.from_wire(sys.stdin.buffer.read()))")
        return [
            f"  curl -s '{base}/dns-query?dns={b64}' | {sys.executable} -c '{decode}'",
            f"  curl -s {base}/api/resolve/{z}",
            f"status page: {base}/",
        ]


def what_leaves(cfg: Config, icann: HostPort | None) -> list[str]:
    """What the demo daemon sends off this machine, one phrase each (empty: nothing).

    ICANN queries when they go to configured upstreams rather than the stand-in, and IP-echo
    requests when a ``[[zones]]`` zone file uses a DynDNS variable. The DHT is the testnet
    and relays are off, so nothing else can leave.
    """
    out = []
    outside = [a for a in cfg.dns.upstream if a != icann and not _is_loopback(a[0])]
    if outside:
        where = ", ".join(format_hostport(a) for a in outside)
        out.append(f"ICANN queries to {where}")
    want4 = want6 = False
    for zone in cfg.zones:
        with contextlib.suppress(PkdnsError):   # a bad zone file is reported when published
            v4, v6 = variables_used(read_zone_text(zone.zone))
            want4, want6 = want4 or v4, want6 or v6
    echo = [*(cfg.republish.ip_echo_v4 if want4 else ()),
            *(cfg.republish.ip_echo_v6 if want6 else ())]
    if echo:
        out.append(f"IP-echo requests for the [[zones]] DynDNS variables to {', '.join(echo)}")
    return out


def _is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


async def run(cfg: Config, reload_config: Callable[[], Config] | None = None,
              keypair: Keypair | None = None) -> int:
    """Testnet, demo key, daemon; until SIGINT/SIGTERM. Returns the exit code.

    The daemon is the one ``pkdns serve`` runs, with its operations (state keeper,
    republisher: ``[[zones]]`` are published to the testnet, SIGHUP reload).
    """
    net = await Testnet.start(DEMO_NODES)
    icann = await StandInIcann.start_on(HOST)
    try:
        packet = demo_packet(keypair or Keypair.random())
        stored = await publish(net, packet)
        _log.info("demo_key_published", key=packet.public_key.z32, stored=stored)
        with tempfile.TemporaryDirectory(prefix="pkdns-testnet-") as state_dir:
            listen, http_listen = demo_listen(), demo_http_listen(cfg.http)

            def adapt(fresh: Config) -> Config:
                return demo_config(fresh, net.bootstrap, state_dir, listen, http_listen,
                                   packet.public_key.z32, icann.address)

            reread = (lambda: adapt(reload_config())) if reload_config is not None else None
            daemon = Daemon(adapt(cfg), service=Service(reread))
            daemon.components.append(Banner(daemon, packet.public_key.z32, net,
                                            icann=icann.address))
            return await daemon.run()
    finally:
        icann.close()
        await net.close()


def main(cfg: Config, reload_config: Callable[[], Config] | None = None) -> int:
    """``pkdns --testnet``: run the demo on uvloop until stopped (see :func:`run`)."""
    log.configure(cfg.log.level, cfg.log.format)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run(cfg, reload_config))


__all__ = ["DEMO_ZONE", "Banner", "demo_config", "demo_http_listen", "demo_listen", "demo_packet",
           "main", "publish", "run", "what_leaves"]
