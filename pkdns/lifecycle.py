"""Running as a service: systemd hooks, SIGHUP, and the service parts of the daemon.

:class:`pkdns.app.Daemon` built with a :class:`Service` (``pkdns serve``, the demo) also has,
built in the composition root with everything else:

* the :class:`~pkdns.persist.StateKeeper` *before* the pkarr service, so saved DHT contacts
  are in the routing table before the node bootstraps, and saved packets are in the packet
  cache before the first query; it is stopped after the pkarr service, saving last;
* the :class:`~pkdns.publish.republisher.Republisher` before the DNS listeners;
* :class:`Operations`, which gives ``Daemon.run`` three hooks: :meth:`Operations.ready`
  (sd_notify ``READY=1`` once listening, plus watchdog pings when ``WatchdogSec=`` is set),
  :meth:`Operations.stopping` (``STOPPING=1``) and :meth:`Operations.request_reload` (SIGHUP).

A reload re-reads the configuration and hands the new one to every part that declares live
options (:class:`pkdns.reload.Live`); each applies its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

from pkdns import log, reload
from pkdns.clock import Clock
from pkdns.config import Config, HostPort, format_hostport
from pkdns.errors import DhtError, PkdnsError
from pkdns.persist import StateKeeper
from pkdns.pkarr.client import PkarrClient
from pkdns.pkarr.signed_packet import SignedPacket
from pkdns.publish.republisher import Republisher
from pkdns.sdnotify import ActivatedSockets, Notifier

_log = log.get("app")


class Listening(Protocol):
    """The daemon's DNS listeners, as the systemd status line shows them."""

    @property
    def bound(self) -> list[HostPort]: ...


class Host(Protocol):
    """What :class:`Operations` needs of the daemon it serves (:class:`pkdns.app.Daemon`,
    which builds it: a protocol here, so this module does not import the one importing it)."""

    @property
    def cfg(self) -> Config: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def dns(self) -> Listening: ...
    @property
    def parts(self) -> list[reload.Live]: ...

    def reconfigure(self, old: Config, cfg: Config) -> None: ...


@dataclass(frozen=True, slots=True)
class Service:
    """What running as a service adds to a daemon: how to re-read the configuration on SIGHUP
    (the config file with the command-line flags applied again), and the environment systemd
    passes (sockets, notify socket, watchdog; ``os.environ`` when None)."""

    reload_config: Callable[[], Config] | None = None
    env: MutableMapping[str, str] | None = None


def dht_publisher(client: PkarrClient) -> Callable[[SignedPacket], Awaitable[int]]:
    """The republisher's ``publish``: our zones go on the DHT only (relays are where the
    daemon reads, not writes); the number of nodes that stored it, or :class:`DhtError`."""

    async def publish(packet: SignedPacket) -> int:
        answer = (await client.publish(packet, use_relays=False)).dht
        if answer is None:
            raise DhtError("the daemon has no DHT node")
        if answer.stored == 0 and answer.code is not None:
            raise DhtError(f"every node refused it ({answer.error})")
        return answer.stored

    return publish


class Operations:
    """Lifecycle services for one daemon (see the module docstring)."""

    def __init__(self, daemon: Host, service: Service, notifier: Notifier,
                 activated: ActivatedSockets, keeper: StateKeeper,
                 republisher: Republisher) -> None:
        self.daemon, self._reload_config = daemon, service.reload_config
        self.notifier, self.activated = notifier, activated
        self.keeper, self.republisher = keeper, republisher
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
        live = reload.options(self.daemon.parts)
        plan = reload.plan(old, new, live)
        self.daemon.reconfigure(old, reload.effective(old, new, live))
        if plan.restart:
            _log.warning("reload_needs_restart", options=list(plan.restart))
        _log.info("reloaded", changed=list(plan.live), zones=len(self.daemon.cfg.zones))
        self.notifier.ready(self.status_line())
        return True

    async def close(self) -> None:
        """Cancel background tasks (a reload in progress, watchdog pings)."""
        for task in (self._reload, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.activated.close()
