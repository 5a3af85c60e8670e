"""`pkdns publish`, `pkdns resolve`, `pkdns testnet`: the DHT from the command line.

publish and resolve run a short-lived read-only node: bootstrap (``--bootstrap`` replaces the
public routers, so a loopback address keeps everything local), one BEP 44 put or get, exit.
``--relay URL`` (repeatable) also uses pkarr relays, in parallel with the DHT; ``--no-dht``
uses only the relays (the DHT would otherwise join the public routers). publish reports every
source; resolve prints the most recent verified packet over all of them. Both go through the
pkarr client (:mod:`pkdns.pkarr.client`), so a packet counts here exactly when it counts in the
daemon (a packet dated more than an hour ahead is refused, as everywhere). Exit 1 when nothing
was stored or found anywhere (a failing source next to a working one is a warning on stderr);
2 for bad input (seed, zone, key, flags, relay URL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import signal
import sys
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TextIO

from pkdns.answer.names import BadKey, Icann, PkarrName, classify
from pkdns.clock import SYSTEM_CLOCK
from pkdns.cmd.keys import add_ip_echo_flag, read_seed, with_addresses
from pkdns.cmd.serve import add_common_dht_flags
from pkdns.dht.ids import target_of
from pkdns.dht.lookup import Outcome
from pkdns.dht.node import DhtNode
from pkdns.dht.testnet import Testnet
from pkdns.errors import DecodeError, DhtError, UsageError
from pkdns.hostport import HostPort, format_hostport
from pkdns.pkarr.client import DHT, PkarrClient, Publication, Resolution
from pkdns.pkarr.keys import PublicKey
from pkdns.pkarr.signed_packet import SignedPacket
from pkdns.pkarr.zonetext import records_to_text

LOOKUP_TIMEOUT = 5.0
"""Seconds a get (or a put's lookup) goes on after joining: new rounds while nothing is found."""
FIRST_VALUE_GRACE = 1.0
"""Seconds a get goes on after the first packet, for a newer one, unless AGREE agree sooner."""
AGREE = 2
"""DHT nodes that must have given the newest packet (and none an older one) for a get to stop
short of FIRST_VALUE_GRACE. Two, not the lookup's quorum of four: the daemon answers from the
first packet plus 150 ms, and on a lossy network the third and fourth holders take most of a
second longer to be heard."""
JOIN_TIMEOUT = 10.0
"""Seconds of hellos (resent with backoff) before "could not join the DHT"."""

if TYPE_CHECKING:
    from pkdns.pkarr.relay_client import RelayClient


def register(sub: Any) -> None:
    """Add the publish, resolve and testnet subcommands."""
    p = sub.add_parser("publish", help="sign a zone and put it on the DHT",
                       description="Sign ZONEFILE with SEEDFILE and store it on the Mainline "
                       "DHT (BEP 44); print how many nodes stored it.")
    p.add_argument("seedfile", metavar="SEEDFILE")
    p.add_argument("zonefile", metavar="ZONEFILE")
    add_ip_echo_flag(p)
    add_common_dht_flags(p)
    _relay_flags(p)
    p.set_defaults(func=run_publish)

    p = sub.add_parser("resolve", help="look a public key up on the DHT",
                       description="Fetch the most recent verified signed packet for KEY and "
                       "print its records as zone text with the timestamp.")
    p.add_argument("key", metavar="KEY", help="z-base-32 public key, or any name under it "
                   "the resolver answers (www.KEY, KEY.key), or pk:KEY / a URL")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_common_dht_flags(p)
    _relay_flags(p)
    p.set_defaults(func=run_resolve)

    p = sub.add_parser("testnet", help="run a loopback DHT testnet",
                       description="Run N server-mode DHT nodes on 127.0.0.1, print the "
                       "bootstrap address, and run until SIGINT/SIGTERM.")
    p.add_argument("--nodes", type=int, default=10, metavar="N", help="nodes (default 10)")
    p.add_argument("--port", type=int, default=0, metavar="PORT",
                   help="first port; nodes use PORT..PORT+N-1 (default: free ports)")
    p.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    p.set_defaults(func=run_testnet)


def _relay_url(text: str) -> str:
    if not text.startswith(("http://", "https://")) or len(text) < 10:
        raise argparse.ArgumentTypeError(f"not an http(s) relay URL: {text!r}")
    return text


def _relay_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--relay", action="append", type=_relay_url, default=[], metavar="URL",
                   help="pkarr relay, used in parallel with the DHT (repeatable)")
    p.add_argument("--no-dht", action="store_true",
                   help="use only the --relay servers, not the DHT")


def _check_sources(args: argparse.Namespace) -> None:
    if args.no_dht and not args.relay:
        raise UsageError("--no-dht needs at least one --relay URL")
    if args.no_dht and args.bootstrap:
        raise UsageError("--bootstrap and --no-dht contradict each other")


def _warn(message: str) -> None:
    print(f"pkdns: warning: {message}", file=sys.stderr)


def _bootstrap(args: argparse.Namespace) -> list[HostPort]:
    if args.bootstrap:
        return list(args.bootstrap)
    from pkdns.config import DhtConfig  # the public routers (~20 ms of imports otherwise)
    return list(DhtConfig().bootstrap)


async def _join(node: DhtNode, nodes: list[HostPort], key: PublicKey) -> None:
    """Join the DHT through ``nodes``: one node answered.

    Every bootstrap host is greeted at once and resent to with backoff (a lost datagram or
    two must not end the command), and the lookup starts from the first answer and the
    contacts it listed -- the closest to ``key``'s target it knows, which the greeting asked
    for -- instead of walking to our own id first.
    """
    if not await node.join(nodes, timeout=JOIN_TIMEOUT, target=target_of(key.raw)):
        where = ", ".join(format_hostport(n) for n in nodes)
        raise DhtError(f"could not join the DHT: no node answered (bootstrap: {where})")


@contextlib.asynccontextmanager
async def _client(args: argparse.Namespace,
                  key: PublicKey) -> AsyncIterator[tuple[PkarrClient, list[str]]]:
    """A pkarr client over a read-only node (it joins the DHT when first used, while the
    relays are already asked) and the ``--relay`` servers; closed on exit. Also yields a
    one-element list naming what the command waits for, for the progress line."""
    relays = _relays(args.relay)
    node: DhtNode | None = None
    phase = ["joining"]
    try:
        if not args.no_dht:
            node = DhtNode(mode="client")
            await node.start("0.0.0.0", 0)
        nodes = _bootstrap(args)

        async def ready() -> None:
            assert node is not None
            await _join(node, nodes, key)
            phase[0] = "joined"

        yield PkarrClient(node, relays, ready=ready), phase
    finally:
        if node is not None:
            await node.close()
        await asyncio.gather(*(r.close() for r in relays))


def _relays(urls: list[str]) -> list[RelayClient]:
    if not urls:
        return []
    from pkdns.pkarr.relay_client import RelayClient  # aiohttp: 0.3-1 s of a cold start

    return [RelayClient(url) for url in urls]


@contextlib.contextmanager
def _progress(status: Callable[[], str], stream: TextIO | None = None) -> Any:
    """A one-line status on a terminal, refreshed every 100 ms; nothing when not a TTY."""
    out = stream or sys.stderr
    if not out.isatty():
        yield
        return

    async def tick() -> None:
        frames = "|/-\\"
        for i in range(10**9):
            out.write(f"\r{frames[i % 4]} {status()}\x1b[K")
            out.flush()
            await asyncio.sleep(0.1)

    task = asyncio.get_running_loop().create_task(tick())
    try:
        yield
    finally:
        task.cancel()
        out.write("\r\x1b[K")
        out.flush()


def run_publish(args: argparse.Namespace) -> int:
    """Sign the zone (exit 2 on bad input first), then put it on the DHT and the relays."""
    _check_sources(args)
    from pkdns.publish.zonebuild import read_zone_text, sign_zone

    keypair = read_seed(args.seedfile)
    text = with_addresses(read_zone_text(args.zonefile), args.ip_echo)  # as the daemon does
    packet = sign_zone(keypair, text, args.zonefile, SYSTEM_CLOCK.wall_us())
    return asyncio.run(_publish(args, packet))


async def _publish(args: argparse.Namespace, packet: SignedPacket) -> int:
    async with _client(args, packet.public_key) as (client, phase):
        joining = f"joining the DHT via {len(_bootstrap(args))} bootstrap node(s)"
        with _progress(lambda: joining if phase[0] == "joining" else
                       "storing on the closest nodes"):
            publication = await client.publish(packet, timeout=LOOKUP_TIMEOUT)
    key = packet.public_key.z32
    failures = _publish_failures(publication)
    if not publication.stored:
        raise DhtError(f"{key}: not stored anywhere ({'; '.join(failures)})")
    dht = publication.dht
    where = (f"stored on {dht.stored} of {dht.asked} nodes" if dht is not None and dht.stored
             else "published")
    print(f"{key}: {where} (timestamp {packet.timestamp}, {len(packet.packet)} bytes)")
    for url, answer in publication.relays:
        if answer.stored:
            print(f"relay {url}: stored (relay reports {answer.stored} DHT nodes)")
    for failure in failures:
        _warn(failure)
    return 0


def _publish_failures(publication: Publication) -> list[str]:
    """Each destination that did not store the packet, in words."""
    failures = [f"DHT: {publication.dht_error}"] if publication.dht_error else []
    dht = publication.dht
    if dht is not None and not dht.stored:
        failures.append(f"DHT: not stored on any DHT node ({dht.error})")
    failures += [a.error or f"relay {url}: not stored" for url, a in publication.relays
                 if not a.stored]
    return failures


def run_resolve(args: argparse.Namespace) -> int:
    """Print the most recent verified packet for KEY from the DHT and the relays."""
    _check_sources(args)
    return asyncio.run(_resolve(args, parse_key_argument(args.key)))


def parse_key_argument(text: str) -> PublicKey:
    """The key in ``text``: every name the resolver answers for it (``<key>``, ``www.<key>``,
    ``<key>.key``, any case, trailing dot) and pkarr's forms (``pk:<key>``, URLs).

    Raises:
        UsageError: no key there; the message names the label that should have been one.
    """
    host = urllib.parse.urlsplit(text).hostname if "://" in text else None
    name = classify(host or text.strip(), "")  # a key as the last label: no suffix matters
    if isinstance(name, Icann):
        from pkdns.config import PkarrConfig  # only for <key>.<suffix> (~20 ms of imports)

        name = classify(host or text.strip(), PkarrConfig().tld_suffix)
    if isinstance(name, PkarrName):
        return name.key
    try:
        return PublicKey.parse(text)
    except DecodeError as exc:
        if isinstance(name, BadKey):
            raise UsageError(f"{text!r} is not a public key: {name.label!r} is not a valid "
                             "key (52 z-base-32 characters on the Ed25519 curve)") from None
        raise UsageError(str(exc)) from None


async def _resolve(args: argparse.Namespace, key: PublicKey) -> int:
    """Rounds of DHT lookups until a packet is found, absence is proven or LOOKUP_TIMEOUT
    passed (on a lossy network a round can end with every close node silent), the relays in
    parallel. Once a verified packet is in, the lookup goes on until AGREE nodes gave it (and
    none an older one) or for FIRST_VALUE_GRACE more, then stops: waiting for every silent
    node to time out would add seconds and rarely a newer packet."""
    async with _client(args, key) as (client, phase):
        resolving = client.resolve(key, timeout=LOOKUP_TIMEOUT, grace=FIRST_VALUE_GRACE,
                                   rounds=None, round_min=0.0, agree=AGREE)
        found = resolving.result
        joining = f"joining the DHT via {len(_bootstrap(args))} bootstrap node(s)"
        with _progress(lambda: joining if phase[0] == "joining" else
                       _status(found.rounds[-1].outcome if found.rounds else Outcome())):
            found = await resolving.collect()
        return _report(found, key, len(args.relay), args.json)   # before the node closes


def _report(found: Resolution, key: PublicKey, relays: int, as_json: bool) -> int:
    """Print the newest packet (exit 0), flushed before the node closes: its reader need not
    wait for the teardown. Failed sources are warnings on stderr; nothing found: DhtError."""
    failures = ([f"DHT: {found.dht_error}"] if found.dht_error else []) + found.errors
    if found.best is None:
        searched = [f"DHT: {_dht_status(found)}"] if found.dht_used else []
        searched += [f"{relays - len(found.errors)} relay(s) had nothing"] if relays else []
        raise DhtError(f"{key.z32}: no signed packet found ({'; '.join(searched + failures)})")
    for failure in failures:
        _warn(failure)
    print(_render(found.best, as_json, "dht" if found.source == DHT else "relay"), end="",
          flush=True)
    return 0


def _dht_status(found: Resolution) -> str:
    status = _status(found.dht_counters())
    if found.invalid:
        status += f", {found.invalid} unparseable"
    if found.future:
        status += f", {found.future} dated more than an hour ahead (refused)"
    return status


def _status(o: Outcome) -> str:
    shunned = f", {o.shunned_clusters} off-target clusters passed by" if o.shunned_clusters else ""
    return f"{o.queried} nodes asked, {o.responded} answered, {o.values} values{shunned}"


def _render(packet: SignedPacket, as_json: bool, source: str) -> str:
    text = records_to_text(packet.records, packet.public_key.z32)
    when = datetime.datetime.fromtimestamp(packet.timestamp / 1e6, datetime.UTC)
    if as_json:
        return json.dumps({
            "public_key": packet.public_key.z32, "timestamp": packet.timestamp,
            "time": when.isoformat(timespec="microseconds"), "source": source,
            "records": text.splitlines(), "packet_hex": packet.packet.hex(),
        }) + "\n"
    return (f"; public key {packet.public_key.z32}\n"
            f"; timestamp {packet.timestamp} ({when.isoformat(timespec='microseconds')}), "
            f"from the {'DHT' if source == 'dht' else 'relays'}\n" + text)


def run_testnet(args: argparse.Namespace) -> int:
    """Run a loopback testnet until SIGINT/SIGTERM; its first node's address on stdout."""
    if not 1 <= args.nodes <= 1000:
        raise UsageError(f"--nodes: {args.nodes} is not between 1 and 1000")
    if args.port and not 1 <= args.port <= 65536 - args.nodes:
        raise UsageError(f"--port: {args.port} leaves no room for {args.nodes} ports")
    return asyncio.run(_testnet(args.nodes, args.port))


async def _testnet(n: int, port: int) -> int:
    net = await Testnet.start(n, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        print(format_hostport(net.bootstrap[0]), flush=True)
        print(f"testnet: {n} nodes on 127.0.0.1; use --bootstrap "
              f"{format_hostport(net.bootstrap[0])}; Ctrl-C to stop", file=sys.stderr,
              flush=True)
        await stop.wait()
    finally:
        await net.close()
    return 0
