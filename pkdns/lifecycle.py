"""Running as a service: state, republishing, systemd and SIGHUP, attached to a :class:`Daemon`.

``Operations(daemon, reload_config)`` adds two components to the daemon, in this order:

* the :class:`~pkdns.persist.StateKeeper` *before* the pkarr service, so saved DHT contacts
  are in the routing table before the node bootstraps, and saved packets are in the packet
  cache before the first query; it is stopped after the pkarr service, saving last;
* the :class:`~pkdns.publish.republisher.Republisher` before the DNS listeners.

and gives ``Daemon.run`` three hooks: :meth:`ready` (sd_notify ``READY=1`` once listening, plus
watchdog pings when ``WatchdogSec=`` is set), :meth:`stopping` (``STOPPING=1``) and
:meth:`request_reload` (SIGHUP). It sets ``daemon.ops`` to itself and hands the sockets
systemd passed (socket activation, :attr:`activated`) to the DNS listeners, so callers only
construct it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from pkdns import log, reload
from pkdns.answer.service import own_keys
from pkdns.config import Config, format_hostport
from pkdns.dns.acl import Acl
from pkdns.errors import DhtError, PkdnsError
from pkdns.persist import StateKeeper
from pkdns.pkarr.signed_packet import SignedPacket
from pkdns.publish.republisher import Republisher
from pkdns.publish.zonebuild import ZoneBuilder
from pkdns.sdnotify import ActivatedSockets, Notifier, listen_fds

if TYPE_CHECKING:
    from pkdns.app import Daemon

_log = log.get("app")


class Operations:
    """Lifecycle services for one daemon (see the module docstring)."""

    def __init__(self, daemon: Daemon, reload_config: Callable[[], Config] | None = None,
                 env: MutableMapping[str, str] | None = None) -> None:
        self.daemon, self._reload_config = daemon, reload_config
        cfg, pkarr = daemon.cfg, daemon.pkarr
        self.notifier = Notifier(env)
        self.activated: ActivatedSockets = listen_fds(env)
        daemon.ops, daemon.dns.activated = self, self.activated   # SIGHUP; socket activation
        self.keeper = StateKeeper(cfg.state_dir, cfg.state, daemon.clock)
        self.keeper.dht, self.keeper.packets = pkarr.node, pkarr.source
        self.keeper.auto_restore = False      # the rest of the packets once listening
        daemon.add(self.keeper, before=pkarr)
        self.builder = ZoneBuilder(cfg.republish, preload=bool(cfg.zones))
        self.republisher = Republisher(
            cfg.republish, cfg.zones, publish=self._publish, build=self.builder,
            clock=daemon.clock, cache=pkarr.source, metrics=daemon.metrics,
            saved=self.keeper.saved_schedule(), ready=pkarr.bootstrapped.wait,
            changed=self.builder.changed)
        self.keeper.schedule = self.republisher
        daemon.add(self.republisher)
        if daemon.http is not None:
            daemon.http.dashboard.add_section("zones", self.zone_rows)
        self._reload: asyncio.Task[None] | None = None
        self._again = False
        self._watchdog: asyncio.Task[None] | None = None

    def zone_rows(self) -> list[dict[str, Any]]:
        """Own zones for the dashboard: last publish (seconds ago) and its result (the number
        of nodes that stored it, or the error), the next publish (seconds from now)."""
        wall = self.daemon.clock.wall_us() / 1e6
        return [{"zone": job.zone.zone, "result": job.last_result,
                 "last_ago": round(wall - job.last_at) if job.last_at else None,
                 "next_in": round(job.next_at - wall), "failures": job.failures}
                for job in self.republisher.plan.zones.values()]

    async def _publish(self, packet: SignedPacket) -> int:
        """Our zones go on the DHT only (relays are where the daemon reads, not writes)."""
        answer = (await self.daemon.pkarr.client.publish(packet, use_relays=False)).dht
        if answer is None:
            raise DhtError("the daemon has no DHT node")
        if answer.stored == 0 and answer.code is not None:
            raise DhtError(f"every node refused it ({answer.error})")
        return answer.stored

    # --- systemd -------------------------------------------------------------------------

    def status_line(self) -> str:
        listening = [format_hostport(a) for a in self.daemon.dns.bound]
        return f"serving DNS on {', '.join(listening) or 'passed sockets'}"

    def ready(self) -> None:
        """The daemon is listening: tell systemd, start watchdog pings."""
        self.notifier.ready(self.status_line())
        self.keeper.restore_in_background()
        interval = self.notifier.watchdog_interval
        if interval is not None and self._watchdog is None:
            self._watchdog = asyncio.create_task(self._ping(interval), name="watchdog")

    async def _ping(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    def stopping(self) -> None:
        """Shutdown began: tell systemd, stop pinging the watchdog."""
        self.notifier.stopping()
        if self._watchdog is not None:
            self._watchdog.cancel()

    # --- SIGHUP --------------------------------------------------------------------------

    def request_reload(self) -> None:
        """Signal handler: reload now, or once more after the running reload."""
        if self._reload is not None and not self._reload.done():
            self._again = True
            return
        self._reload = asyncio.get_running_loop().create_task(self._reload_loop())

    async def _reload_loop(self) -> None:
        self._again = True
        while self._again:
            self._again = False
            try:
                await self.reload()
            except Exception:
                _log.exception("reload_failed")

    async def reload(self) -> bool:
        """Re-read the configuration and zones; keep every cache. False if the file is bad."""
        self.notifier.reloading()
        old = self.daemon.cfg
        try:
            new = self._reload_config() if self._reload_config is not None else old
        except PkdnsError as exc:  # keep running with the old configuration
            _log.error("reload_failed", error=str(exc))
            self.notifier.ready(f"reload failed: {exc}")
            return False
        plan = reload.plan(old, new)
        cfg = reload.effective(old, new)
        self._apply(old, cfg)
        if plan.restart:
            _log.warning("reload_needs_restart", options=list(plan.restart))
        _log.info("reloaded", changed=list(plan.live), zones=len(cfg.zones))
        self.notifier.ready(self.status_line())
        return True

    def _apply(self, old: Config, cfg: Config) -> None:
        d = self.daemon
        d.cfg = cfg
        if cfg.log != old.log:
            log.configure(cfg.log.level, cfg.log.format)
        d.resolver.configure(old, cfg)
        if cfg.dns.forwarders != old.dns.forwarders:
            d.pkarr.source.gate.forwarders = Acl(cfg.dns.forwarders)
        d.forwarder.upstreams = cfg.dns.upstream
        if cfg.cache.serve_stale != old.cache.serve_stale:
            d.cache.set_serve_stale(cfg.cache.serve_stale)
        d.forwarder.attempt_timeout = cfg.dns.upstream_timeout
        d.forwarder.use_0x20 = cfg.dns.upstream_0x20
        d.forwarder.nearmiss_max = cfg.dns.upstream_nearmiss_max
        self.republisher.plan.cfg = self.builder.cfg = cfg.republish
        self.republisher.reload(cfg.zones)
        d.pkarr.handler.set_own_keys(own_keys(cfg.zones))   # exempt from the rebinding filter

    async def close(self) -> None:
        """Cancel background tasks (a reload in progress, watchdog pings)."""
        for task in (self._reload, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.activated.close()
