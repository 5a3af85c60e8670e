"""The pkarr side of the daemon as one component: DHT node + pkarr client + packet source +
handler.

Built from :class:`Config` in :class:`pkdns.app.Daemon`. The handler is attached to the resolver
at construction, so pkarr names never leak upstream even before the DHT is up (they get SERVFAIL
until it answers). ``start`` binds the DHT socket (a bind failure stops the daemon with a clear
error) and starts the node's upkeep task, which bootstraps in the background: unreachable
routers must not delay DNS service. The node owns the retry policy (re-bootstrap with backoff
1 s -> 60 s while the table is empty or tiny, :mod:`pkdns.dht.upkeep`); this module only
starts it.

Bootstrap host names (``router.bittorrent.com``) are resolved through the configured ICANN
upstreams, never the system resolver (pkdns#24): on a machine where pkdns *is* the system
resolver, getaddrinfo would ask pkdns itself, or a resolv.conf that points nowhere yet.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from dnslib import QTYPE, RCODE

from pkdns import log
from pkdns.answer.answerer import IcannClient, PkarrAnswerer
from pkdns.answer.source import PkarrSource
from pkdns.clock import Clock
from pkdns.config import Config, ZoneConfig
from pkdns.dht.krpc import Address
from pkdns.dht.node import DhtNode
from pkdns.dns.acl import Acl
from pkdns.errors import DhtError, PkdnsError
from pkdns.metrics import Metrics
from pkdns.pkarr.client import PkarrClient
from pkdns.pkarr.keys import read_seed_file

if TYPE_CHECKING:
    from pkdns.pkarr.relay_client import RelayClient

_log = log.get("pkarr")
_LOCALHOST = ("localhost", "localhost.")


def own_keys(zones: Iterable[ZoneConfig]) -> list[str]:
    """The public keys (z-base-32) of our ``[[zones]]``, read from their seed files.

    They are exempt from the rebinding filter: a zone the user serves may well point at the
    user's own LAN. A seed that cannot be read is skipped here; the republisher reports it.
    """
    keys = []
    for zone in zones:
        try:
            keys.append(read_seed_file(zone.seed).public_key.z32)
        except PkdnsError:
            continue
    return keys


class PkarrService:
    """Owns the DHT node, the relay clients, the pkarr client over both, the
    :class:`PkarrSource` and the handler."""

    name = "pkarr"

    def __init__(self, cfg: Config, icann: IcannClient, clock: Clock, metrics: Metrics) -> None:
        self.cfg = cfg
        self.icann = icann
        d = cfg.dht
        self.node = DhtNode(mode=d.mode, request_timeout=d.request_timeout, clock=clock,
                            max_stored_items=d.max_stored_items,
                            max_stored_bytes=d.max_stored_bytes,
                            request_rate_limit=d.request_rate_limit,
                            pace_limit=d.pace_limit, resolve_host=self.resolve_host)
        self.relays = _relays(cfg.pkarr.relays)
        self.client = PkarrClient(self.node, self.relays, clock=clock)
        self.source = PkarrSource(self.client, cfg.pkarr, clock, metrics=metrics,
                                  forwarders=cfg.dns.forwarders)
        self.handler = PkarrAnswerer(self.source, icann, cfg.pkarr, ns_port=cfg.pkarr.ns_port,
                                     metrics=metrics, own_keys=own_keys(cfg.zones))
        self.bootstrapped: asyncio.Event = self.node.joined
        self.metrics = metrics
        self._counted: dict[tuple[str, str], int] = {}
        metrics.on_render(self.count_messages)

    live = ("dns.forwarders", "zones")
    """Options applied on reload (:class:`pkdns.reload.Live`)."""

    def reconfigure(self, old: Config, cfg: Config) -> None:
        """The lookup gate's shared addresses (not one client each) and our own keys (exempt
        from the rebinding filter) follow the new configuration."""
        self.cfg = cfg
        if cfg.dns.forwarders != old.dns.forwarders:
            self.source.gate.forwarders = Acl(cfg.dns.forwarders)
        self.handler.set_own_keys(own_keys(cfg.zones))

    def count_messages(self) -> None:
        """Move the node's KRPC datagram counters into ``pkdns_dht_messages`` (before every
        ``/metrics`` render): malformed and unsolicited datagrams (late or forged replies)
        and queries over the per-IP limit show up there, not only in the node's fields."""
        try:
            st = self.node.protocol.stats
        except DhtError:            # not started (yet)
            return
        node = self.node
        now = {("in", "received"): st.received, ("in", "malformed"): st.malformed,
               ("in", "unsolicited"): st.unsolicited, ("in", "rate_limited"): node.rate_limited,
               ("out", "sent"): st.sent, ("out", "send_error"): st.send_errors,
               ("out", "paced"): node.paced}
        for labels, total in now.items():
            delta = total - self._counted.get(labels, 0)
            if delta > 0:
                self.metrics.dht_messages.labels(*labels).inc(delta)
            self._counted[labels] = total

    async def resolve_host(self, host: str, port: int) -> list[Address]:
        """IPv4 addresses of a bootstrap host, via the configured upstreams (A records).

        IP literals are used as they are (IPv6 ones are skipped: the DHT socket is IPv4) and
        ``localhost`` is 127.0.0.1 (RFC 6761 §6.3); anything else is an ICANN query through
        the resolver's cache and forwarder. Raises :class:`DhtError` when the name does not
        resolve; the node logs it and tries the other bootstrap hosts.
        """
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return [(host, port)] if ip.version == 4 else []
        if host.lower() in _LOCALHOST:
            return [("127.0.0.1", port)]
        reply = await self.icann.resolve(host, QTYPE.A)
        rcode = reply.header.rcode
        if rcode != RCODE.NOERROR:
            raise DhtError(f"{host}: {RCODE.get(rcode)} from the upstream resolver")
        return [(str(rr.rdata), port) for rr in reply.rr if rr.rtype == QTYPE.A]

    async def start(self) -> None:
        bind, port = self.cfg.dht.bind, self.cfg.dht.port
        try:
            await self.node.start(bind, port)
        except DhtError:
            if port == 0:
                raise
            # Like mainline and libtorrent: another client holding 6881 must not stop us.
            _log.warning("dht_port_in_use", port=port, fallback="any free port")
            await self.node.start(bind, 0)
        _log.info("dht_started", address=f"{self.node.address[0]}:{self.node.address[1]}",
                  mode=self.cfg.dht.mode)
        self.node.start_upkeep(self.cfg.dht.bootstrap)

    async def stop(self) -> None:
        await self.source.close()
        await asyncio.gather(*(r.close() for r in self.relays))
        await self.node.close()




def _relays(urls: Sequence[str]) -> list[RelayClient]:
    """A client per configured relay; aiohttp (a noticeable part of start-up) is imported only
    when there is one."""
    if not urls:
        return []
    from pkdns.pkarr.relay_client import RelayClient

    return [RelayClient(url) for url in urls]


__all__ = ["PkarrService", "own_keys"]
