"""Composition root: builds every part from a Config, starts and stops them in order.

:meth:`Daemon.__init__` is the one place the parts are built, each from the ones it needs
(metrics, answer cache, forwarder, resolver and its ICANN path, pkarr service, DNS listeners,
HTTP face, gateway; with a :class:`~pkdns.lifecycle.Service`, the state keeper, republisher
and :class:`~pkdns.lifecycle.Operations` too), handed its collaborators in its constructor,
but for three links set just after (``resolver.pkarr``, the gateway's ``route`` on the pkarr
handler, ``keeper.schedule``): each pair needs the other, so one side is given after both exist.
A :class:`Daemon` owns an ordered list of components (anything with ``name``, ``async
start()`` and ``async stop()``): ``start`` runs them in order, a part before the ones that use
it, the DNS listeners last (they let clients in); ``stop`` stops the transports first, together
(DNS listeners, HTTP face, gateway), then the rest in reverse order. ``Daemon.parts``
lists the parts that apply options on reload (:class:`pkdns.reload.Live`): a new part that
reads a live option declares it there and applies it in its ``reconfigure``.

Shutdown (SIGTERM/SIGINT): every transport stops taking queries at once and gives the ones it
took up to ``dns.query_deadline`` to finish (in parallel: a DoH client is not served while the
DNS listeners drain), then the other parts stop in reverse order and the process exits 0. Each
transport drains only the queries it took; the upstream fetches they share end last
(:meth:`Daemon.stop`).
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import uvloop

from pkdns import log
from pkdns.answer.service import PkarrService
from pkdns.clock import SYSTEM_CLOCK, Clock
from pkdns.config import Config, LogConfig, format_hostport
from pkdns.dns.cache import WireCache
from pkdns.dns.forwarder import Forwarder
from pkdns.dns.resolver import Resolver
from pkdns.lifecycle import Operations, Service, dht_publisher
from pkdns.metrics import Metrics, by_label
from pkdns.persist import StateKeeper
from pkdns.publish.republisher import Republisher
from pkdns.publish.zonebuild import ZoneBuilder
from pkdns.reload import Live
from pkdns.sdnotify import ActivatedSockets, Notifier, listen_fds
from pkdns.server.listeners import DnsListeners

if TYPE_CHECKING:
    from pkdns.gateway.server import GatewayService
    from pkdns.server.face import HttpFace

_log = log.get("app")


class Component(Protocol):
    """A part of the daemon with a lifecycle."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class _Gauges:
    """Refreshes the cache size gauges once a second (kept off the hot path)."""

    name = "gauges"

    def __init__(self, cache: WireCache, metrics: Metrics) -> None:
        self.cache, self.metrics = cache, metrics
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            self.metrics.cache_bytes.set(self.cache.bytes_used)
            self.metrics.cache_entries.set(len(self.cache))
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()


class LogSettings:
    """The log level and format as a part that applies them on reload."""

    live = ("log.level", "log.format")

    def __init__(self, cfg: LogConfig) -> None:
        self.cfg = cfg          # configured by main() before anything is built

    def reconfigure(self, old: Config, cfg: Config) -> None:
        if cfg.log != self.cfg:
            log.configure(cfg.log.level, cfg.log.format)
        self.cfg = cfg.log


class Daemon:
    """Every part of pkdns, built in dependency order (see the module docstring)."""

    def __init__(self, cfg: Config, clock: Clock = SYSTEM_CLOCK,
                 service: Service | None = None) -> None:
        self.cfg, self.clock = cfg, clock
        self.metrics = Metrics()
        self.cache = WireCache(cfg.cache)
        self.forwarder = Forwarder(cfg.dns.upstream, cfg.dns.upstream_timeout, self.metrics,
                                   use_0x20=cfg.dns.upstream_0x20,
                                   nearmiss_max=cfg.dns.upstream_nearmiss_max)
        self.resolver = Resolver(cfg, self.cache, self.forwarder, clock, self.metrics)
        self.pkarr = PkarrService(cfg, self.resolver.icann, clock, self.metrics)
        self.resolver.pkarr = self.pkarr.handler
        activated = listen_fds(service.env) if service is not None else None
        self.dns = DnsListeners(self.resolver, cfg.dns, activated)
        self.parts: list[Live] = [LogSettings(cfg.log), self.cache, self.forwarder,
                                  self.resolver, self.resolver.icann, self.pkarr, self.dns]
        """Everything that applies options on reload (:meth:`reconfigure`)."""
        self.http: HttpFace | None = None     # DoH, relay API, /metrics, status page
        if cfg.http.enabled:
            from pkdns.server.face import HttpFace  # aiohttp.web: only with the HTTP face

            self.http = HttpFace(
                cfg, clock, self.metrics, self.resolver, clock.monotonic(),
                dns_listeners=lambda: [format_hostport(a) for a in self.dns.bound],
                cache_stats=lambda: {"entries": len(self.cache), "bytes": self.cache.bytes_used},
                source=self.pkarr.source, dht=self.pkarr.node)
            self.http.dashboard.add_section("upstreams", self.upstream_rows)
        self.gateway: GatewayService | None = None     # HTTPS for .key names (off by default)
        if cfg.gateway.enabled:
            from pkdns.gateway.server import GatewayService

            self.gateway = GatewayService(cfg, self.pkarr.source, self.pkarr.handler, clock)
            self.pkarr.handler.route = self.gateway.route
        self.ops: Operations | None = None   # state, republisher, systemd, SIGHUP
        keeper = republisher = None
        if service is not None:
            keeper, republisher = self._service_parts(cfg, clock)
            self.ops = Operations(self, service, Notifier(service.env),
                                  activated or ActivatedSockets(), keeper, republisher)
            if self.http is not None:
                self.http.dashboard.add_section("zones", self.ops.zone_rows)
        order: list[Component | None] = [_Gauges(self.cache, self.metrics), keeper, self.pkarr,
                                         self.http, self.gateway, republisher, self.dns]
        self.components: list[Component] = [c for c in order if c is not None]
        """Started in this order, stopped in reverse: a part before the ones that use it,
        the DNS listeners last (they let clients in)."""
        self._started: list[Component] = []
        self._stop = asyncio.Event()

    def _service_parts(self, cfg: Config, clock: Clock) -> tuple[StateKeeper, Republisher]:
        """The state keeper and the republisher of a service (lifecycle.py). The keeper reads
        the saved plan the republisher starts from and saves the plan it keeps: that one link
        is made here, once both exist."""
        keeper = StateKeeper(cfg.state_dir, cfg.state, clock, dht=self.pkarr.node,
                             packets=self.pkarr.source, auto_restore=False)  # rest: once ready
        builder = ZoneBuilder(cfg.republish, preload=bool(cfg.zones))
        republisher = Republisher(
            cfg.republish, cfg.zones, publish=dht_publisher(self.pkarr.client), build=builder,
            clock=clock, cache=self.pkarr.source, metrics=self.metrics,
            saved=keeper.saved_schedule(), ready=self.pkarr.bootstrapped.wait,
            changed=builder.changed)
        keeper.schedule = republisher
        self.parts += [builder, republisher]
        return keeper, republisher

    def reconfigure(self, old: Config, cfg: Config) -> None:
        """Reload: every part applies its live options from ``cfg`` (``old``: the running
        configuration; ``cfg`` keeps the restart-only options at their running values)."""
        for part in self.parts:
            part.reconfigure(old, cfg)
        self.cfg = cfg

    def upstream_rows(self) -> list[dict[str, Any]]:
        """Each upstream's health for the dashboard: up or down (it answered nothing to its
        last attempts), attempts since its last reply that it left unanswered while answering
        nothing else, failed attempts since start."""
        health, failures = self.forwarder.health, by_label(self.metrics.upstream_failures,
                                                           "upstream")
        rows = []
        for u in self.forwarder.upstreams:
            name = format_hostport(u)
            rows.append({"upstream": name, "state": "down" if u in health.down else "up",
                         "silent": health.silent_attempts(u),
                         "failures": int(failures.get(name, 0.0))})
        return rows

    def add(self, component: Component, before: Component | None = None) -> None:
        """Add a part; by default just before the DNS listeners (which start last)."""
        anchor = before if before is not None else self.dns
        self.components.insert(self.components.index(anchor), component)

    async def start(self) -> None:
        """Start every component in order; on failure stop the started ones and re-raise."""
        for c in self.components:
            try:
                await c.start()
            except BaseException:
                await self.stop()
                raise
            self._started.append(c)
            _log.debug("component_started", name=c.name)

    async def stop(self) -> None:
        """Stop the started components (each failure logged, not raised): the transports
        together, each draining the queries it took, then the others in reverse order; last,
        end the upstream fetches still running: they are shared by every transport (UDP,
        TCP, DoH, the pkarr side), so they end here, once none is left to wait on them."""
        transports = [c for c in self._started if c in (self.dns, self.http, self.gateway)]
        self._started = [c for c in self._started if c not in transports]
        await asyncio.gather(*(self._stop_one(c) for c in transports))
        while self._started:
            await self._stop_one(self._started.pop())
        await self.resolver.close()

    async def _stop_one(self, c: Component) -> None:
        try:
            await c.stop()
        except Exception:
            _log.exception("component_stop_failed", name=c.name)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        """Start, wait for SIGTERM/SIGINT (or :meth:`request_stop`), stop; exit code 0."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        if self.ops is not None:
            loop.add_signal_handler(signal.SIGHUP, self.ops.request_reload)
        await self.start()
        _log.info("started", upstreams=[format_hostport(u) for u in self.cfg.dns.upstream])
        if self.ops is not None:
            self.ops.ready()
        await self._stop.wait()
        _log.info("stopping")
        if self.ops is not None:
            self.ops.stopping()
        await self.stop()
        if self.ops is not None:
            await self.ops.close()
        _log.info("stopped")
        return 0


def main(cfg: Config, reload_config: Callable[[], Config] | None = None) -> int:
    """Run the daemon on uvloop until stopped; returns the exit code.

    ``reload_config`` re-reads the configuration on SIGHUP (the config file with the
    command-line flags applied again).
    """
    log.configure(cfg.log.level, cfg.log.format)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        daemon = Daemon(cfg, service=Service(reload_config))
        tune_gc()
        return runner.run(daemon.run())


def tune_gc() -> None:
    """Garbage-collector settings for a long-running server (bench/dnsbench/micro.py).

    ``gc.freeze()`` once everything is imported and built moves those ~50 k objects out of
    every later collection (each full collection walked them: ~6 µs per cache miss). A
    generation-0 threshold of 50 000 instead of 700 stays above the objects that queries in
    flight hold (~15 each; 1 600 in flight under the benchmark's dnsperf load), so young
    collections run when garbage has piled up rather than every few queries (~2.5 µs per
    miss at 700). Reference counting frees almost everything anyway.
    """
    gc.freeze()
    gc.set_threshold(50_000, *gc.get_threshold()[1:])
