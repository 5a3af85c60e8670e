"""The status page (``/``) and its JSON endpoints (``/api/status``, ``/api/resolve/<key>``).

The page is one static HTML file with inline CSS and JS (no external assets, so it works on an
offline router). It fetches ``/api/status`` for the daemon's vital signs and, from its lookup
form, ``/api/resolve/<key>``: the key's signed packet via the same lookup as a relay GET with
the CacheFirst policy, rendered server-side as records so the browser needs no DNS decoder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

from aiohttp import web

from pkdns import __version__
from pkdns.clock import Clock
from pkdns.pkarr.relay_client import http_date
from pkdns.pkarr.signed_packet import SignedPacket
from pkdns.server.http import CLIENT_KEY
from pkdns.server.relay_api import Policy, RelayApi, RelayError, parse_key

Json = Mapping[str, Any]


class DhtInfo(Protocol):
    """What the page shows about the embedded DHT node."""

    def routing_table_size(self) -> int: ...

    def estimated_network_size(self) -> int: ...

    def health_snapshot(self) -> dict[str, object]: ...


@dataclass
class DaemonStatus:
    """Snapshot source for ``/api/status``; the composition root fills in the parts it has."""

    clock: Clock
    started: float
    dht_mode: str
    dns_listeners: Sequence[str] = ()
    http_listeners: Sequence[str] = ()
    dht: DhtInfo | None = None
    cache_stats: Callable[[], Json] | None = None
    packets_held: Callable[[], int] | None = None
    version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready vital signs."""
        out: dict[str, Any] = {
            "version": self.version,
            "uptime": round(self.clock.monotonic() - self.started, 1),
            "dns_listeners": list(self.dns_listeners),
            "http_listeners": list(self.http_listeners),
            "dht_mode": self.dht_mode,
            "routing_table_size": self.dht.routing_table_size() if self.dht else None,
            "network_size": self.dht.estimated_network_size() if self.dht else None,
            "dht_health": self.dht.health_snapshot() if self.dht else None,
            "cache": dict(self.cache_stats()) if self.cache_stats else None,
            "packets": self.packets_held() if self.packets_held else None,
        }
        out.update(self.extra)
        return out


def records_json(packet: SignedPacket) -> list[dict[str, Any]]:
    """The packet's records as rows (name, ttl, class, type, data) in zone-file notation."""
    rows = []
    for rr in packet.records:
        name, ttl, rclass, rtype, data = (rr.toZone().split(None, 4) + [""] * 5)[:5]
        rows.append({"name": name, "ttl": int(ttl), "class": rclass, "type": rtype,
                     "data": data})
    return rows


def packet_json(packet: SignedPacket) -> dict[str, Any]:
    """What the lookup form renders."""
    return {
        "found": True,
        "key": packet.public_key.z32,
        "timestamp": packet.timestamp,
        "last_modified": http_date(packet.timestamp),
        "size": len(packet.packet),
        "records": records_json(packet),
    }


class StatusPage:
    """Routes for ``/``, ``/api/status`` and ``/api/resolve/{key}``."""

    def __init__(self, status: Callable[[], Json], relay: RelayApi | None) -> None:
        self._status = status
        self._relay = relay
        self._html = resources.files("pkdns.server").joinpath("static/index.html").read_bytes()

    def register(self, app: web.Application) -> None:
        app.router.add_get("/", self._index)
        app.router.add_get("/api/status", self._api_status)
        app.router.add_get("/api/resolve/{key}", self._api_resolve)

    async def _index(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._html, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def _api_status(self, _request: web.Request) -> web.Response:
        return web.json_response(self._status())

    async def _api_resolve(self, request: web.Request) -> web.Response:
        if self._relay is None:
            return web.json_response({"found": False, "error": "lookups are disabled"}, status=503)
        try:
            key = parse_key(request.match_info["key"])
            packet, _seen = await self._relay.lookup(key, Policy.CACHE_FIRST, request[CLIENT_KEY])
        except RelayError as exc:
            return web.json_response({"found": False, "error": exc.reason}, status=exc.status)
        return web.json_response(packet_json(packet))
