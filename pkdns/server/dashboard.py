"""The dashboard's data: ``/api/dashboard`` (JSON) and the sampler that feeds its history.

The status page (``static/index.html``) is the page an operator keeps open, so it shows how
the daemon is doing over the last hour, not only that it is up: queries per second and cache
hit rate, pkarr lookups by outcome and latency, upstream and DHT health, the daemon's own zones
and recent problems. Everything it draws comes from this one endpoint, and every total in it is
read from the same counters ``/metrics`` renders (:meth:`pkdns.metrics.Metrics.totals`), so the
page and Prometheus never disagree. The arithmetic is pure (:mod:`pkdns.server.history`); this
module only owns the clock and the sampling task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from pkdns.clock import Clock
from pkdns.log import RECENT, RecentProblems
from pkdns.metrics import Metrics
from pkdns.server.history import History

Json = Mapping[str, Any]
Section = Callable[[], list[dict[str, Any]]]


class Dashboard:
    """Samples the counters every ``history.step`` seconds and serves the dashboard JSON."""

    def __init__(self, metrics: Metrics, clock: Clock, status: Callable[[], Json],
                 history: History | None = None, problems: RecentProblems = RECENT) -> None:
        self._metrics, self._clock, self._status = metrics, clock, status
        self.history = history or History()
        self._problems = problems
        self._sections: dict[str, Section] = {}
        self._task: asyncio.Task[None] | None = None

    def add_section(self, name: str, rows: Section) -> None:
        """Show ``rows()`` under ``name`` (the composition root adds upstreams and zones)."""
        self._sections[name] = rows

    def sample(self) -> None:
        """Take one reading of the counters now."""
        self.history.add(self._clock.monotonic(), self._metrics.totals())

    async def start(self) -> None:
        self.sample()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="dashboard")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.history.step)
            self.sample()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows; ``totals`` are the counters as ``/metrics`` has them now."""
        out: dict[str, Any] = {
            "status": dict(self._status()),
            "totals": self._metrics.totals(),
            "window": self.history.summary(),
            "step": self.history.step,
            "series": [p.as_json() for p in self.history.points()],
            "problems": self._problems.events(),
        }
        for name, rows in self._sections.items():
            out[name] = rows()
        return out

    def register(self, app: web.Application) -> None:
        app.router.add_get("/api/dashboard", self._handle)

    async def _handle(self, _request: web.Request) -> web.Response:
        return web.json_response(self.snapshot(), headers={"Cache-Control": "no-store"})
