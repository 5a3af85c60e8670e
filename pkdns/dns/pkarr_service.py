"""The pkarr side of the daemon as one component: DHT node + packet source + handler.

Built from :class:`Config` in :class:`pkdns.app.Daemon`. The handler is attached to the resolver
at construction, so pkarr names never leak upstream even before the DHT is up (they get SERVFAIL
until it answers). ``start`` binds the DHT socket (a bind failure stops the daemon with a clear
error) and bootstraps in the background: unreachable routers must not delay DNS service, and
bootstrap is retried with backoff while the routing table stays empty.
"""

from __future__ import annotations

import asyncio

from pkdns import log
from pkdns.clock import Clock
from pkdns.config import Config
from pkdns.dht.node import DhtNode
from pkdns.dns.pkarr_answer import IcannClient, PkarrAnswerer
from pkdns.dns.pkarr_source import PkarrSource
from pkdns.errors import DhtError
from pkdns.metrics import Metrics
from pkdns.pkarr.relay_client import RelayClient

_log = log.get("pkarr")
_RETRY_FIRST, _RETRY_MAX = 5.0, 300.0


class PkarrService:
    """Owns the DHT node, the relay clients, the :class:`PkarrSource` and the handler."""

    name = "pkarr"

    def __init__(self, cfg: Config, icann: IcannClient, clock: Clock, metrics: Metrics) -> None:
        self.cfg = cfg
        d = cfg.dht
        self.node = DhtNode(mode=d.mode, request_timeout=d.request_timeout, clock=clock,
                            max_stored_items=d.max_stored_items,
                            max_stored_bytes=d.max_stored_bytes,
                            request_rate_limit=d.request_rate_limit)
        self.relays = [RelayClient(url) for url in cfg.pkarr.relays]
        self.source = PkarrSource(self.node, cfg.pkarr, clock,
                                  relays=[r.fetch for r in self.relays], metrics=metrics)
        self.handler = PkarrAnswerer(self.source, icann, cfg.pkarr)
        self._bootstrap: asyncio.Task[None] | None = None
        self.bootstrapped = asyncio.Event()

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
        self._bootstrap = asyncio.get_running_loop().create_task(self._join())

    async def _join(self) -> None:
        """Bootstrap until the routing table has nodes (backoff 5 s .. 5 min)."""
        delay = _RETRY_FIRST
        while True:
            try:
                size = await self.node.bootstrap(self.cfg.dht.bootstrap)
            except Exception as exc:  # a failed round is retried, never fatal
                _log.warning("dht_bootstrap_failed", error=repr(exc))
                size = 0
            if size > 0:
                _log.info("dht_bootstrapped", nodes=size)
                self.bootstrapped.set()
                return
            _log.warning("dht_bootstrap_empty", retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    async def stop(self) -> None:
        if self._bootstrap is not None:
            self._bootstrap.cancel()
            await asyncio.gather(self._bootstrap, return_exceptions=True)
        await self.source.close()
        await asyncio.gather(*(r.close() for r in self.relays))
        await self.node.close()


__all__ = ["PkarrService"]
