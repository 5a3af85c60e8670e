"""The HTTP listener: DNS-over-HTTPS, the pkarr relay API, ``/metrics`` and the status page.

One aiohttp application (default ``127.0.0.1:6881``, config ``http.listen``) so a browser or a
web app that cannot open UDP sockets finds everything at one origin:

    /dns-query        RFC 8484 GET/POST -> the same resolver entry point as UDP/TCP
    /metrics          Prometheus text exposition of the daemon's registry
    /, /api/...       status page and its JSON endpoints (pkdns.server.status)
    /<z32 key>        pkarr relay API GET/PUT (pkdns.server.relay_api)

CORS is open on every route, so pages on any origin can use the relay API and DoH: pkarr
relays are open services. Unlike pkarr's ``CorsLayer::very_permissive`` we do not mirror the
``Origin`` with ``Access-Control-Allow-Credentials: true``: nothing here uses cookies or HTTP
auth, and credentials would let any site make a visitor's browser send them. The answer is
``Access-Control-Allow-Origin: *`` (the Fetch standard forbids ``*`` with credentials, so a
credentialed request is refused by the browser) with the ``Pkarr-*`` headers exposed.

The client address is the TCP peer, or the ``X-Forwarded-For`` entry a *trusted* proxy
appended (never a header from anyone: pkdns 0.7's DoH server trusted it from anyone).

What is public and what is not (an HTTP listener on a public address must not give the
operator's view to anyone):

    /dns-query        everyone reaches it; the DNS policy (``dns.allow``, rate limit) decides
    /<z32 key>        public: an open pkarr relay, like every relay (``http.relay_rate_limit``)
    everything else   ``http.admin_allow`` only (default: loopback and private networks, as
                      ``dns.allow``): ``/metrics``, ``/``, ``/api/...`` and unknown paths get
                      403 from any other address (counted in ``pkdns_dropped{reason="http_acl"}``)

The address checked is the one :func:`client_ip` finds (so behind a trusted proxy, the client's).
CORS preflights (OPTIONS) are answered for every path: they carry no data.

DoH queries go through the resolver's policy like UDP/TCP ones: a client outside ``dns.allow``
or over ``dns.rate_limit`` gets HTTP 200 with a DNS REFUSED reply, not an HTTP 403/429, because
RFC 8484 §4.2.1 carries every valid DNS response, whatever its RCODE, in a 2xx response (the
stub then treats it as it would a REFUSED over UDP: try another server).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

from pkdns import log
from pkdns.config import HostPort, HttpConfig, format_hostport
from pkdns.dns.acl import Acl
from pkdns.dns.resolver import ClientInfo
from pkdns.errors import PkdnsError
from pkdns.metrics import Metrics
from pkdns.pkarr import zbase32
from pkdns.pkarr.keys import Z32_LEN
from pkdns.server import doh

_log = log.get("http")
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CLIENT_KEY = web.RequestKey("client_ip", str)

EXPOSED_HEADERS = ("Pkarr-Invalid-Signed-Packet-Seq", "Pkarr-Dht-Stored-Nodes", "Last-Modified",
                   "Cache-Control", "Memento-Datetime", "Retry-After", "ETag")


class DnsEntry(Protocol):
    """The resolver's one door, awaited (:meth:`pkdns.dns.resolver.Resolver.resolve`): the
    door the UDP and TCP listeners call; ACL and rate limit apply there (REFUSED over DoH)."""

    async def resolve(self, data: bytes, client: ClientInfo, max_size: int) -> bytes | None:
        """Reply wire bytes, or ``None`` when the resolver drops the query."""
        ...


def parse_networks(entries: Iterable[str]) -> tuple[IpNetwork, ...]:
    """``http.trusted_proxies`` entries (addresses or CIDR blocks) as networks."""
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def client_ip(peer: str, forwarded_for: str | None, trusted: Sequence[IpNetwork]) -> str:
    """The address a request is from.

    ``X-Forwarded-For`` is read only when the TCP peer is a trusted proxy; then the list is
    walked from the right (the entry the nearest proxy appended) past further trusted proxies,
    and the first untrusted address is the client (the rule uvicorn's ProxyHeadersMiddleware
    applies). A malformed entry stops the walk at the last address we could trust.
    """
    if not forwarded_for or not _is_trusted(peer, trusted):
        return peer
    current = peer
    for entry in reversed([e.strip() for e in forwarded_for.split(",")]):
        try:
            ipaddress.ip_address(entry)
        except ValueError:
            return current
        current = entry
        if not _is_trusted(entry, trusted):
            return entry
    return current


def _is_trusted(addr: str, trusted: Sequence[IpNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": ", ".join(EXPOSED_HEADERS),
}
ALLOWED_METHODS = "GET, POST, PUT, OPTIONS"


def _preflight(request: web.Request) -> web.Response:
    """Answer a CORS preflight (OPTIONS) for any route: any origin, our methods, the headers
    asked for (``Content-Type: application/dns-message`` and ``If-Match`` are not "simple")."""
    headers = {
        **CORS_HEADERS,
        "Access-Control-Allow-Methods": ALLOWED_METHODS,
        "Access-Control-Allow-Headers": request.headers.get(
            "Access-Control-Request-Headers", "*"),
        "Access-Control-Max-Age": "86400",
    }
    return web.Response(status=204, headers=headers)


def public_path(path: str) -> bool:
    """Is ``path`` open to everyone: DoH (the DNS policy applies inside) or the relay API
    (one path segment that is a z-base32 key)?"""
    if path == "/dns-query":
        return True
    key = path[1:].lower()
    return len(key) == Z32_LEN and zbase32.is_zbase32(key)


def _middleware(trusted: Sequence[IpNetwork], admin: Acl, metrics: Metrics) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote or ""
        client = client_ip(peer, request.headers.get("X-Forwarded-For"), trusted)
        request[CLIENT_KEY] = client
        if request.method == "OPTIONS":
            return _preflight(request)
        if not public_path(request.path) and not admin.allowed(client):
            metrics.dropped.labels(reason="http_acl").inc()
            return text_error(403, "forbidden: this address is not in http.admin_allow",
                              CORS_HEADERS)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(CORS_HEADERS)
            raise
        if not response.prepared:
            response.headers.update(CORS_HEADERS)
        return response

    return middleware


def text_error(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    """A plain-text error response, as pkarr relays send."""
    return web.Response(status=status, text=reason + "\n", headers=headers)


class DohHandler:
    """``/dns-query``: RFC 8484 in front of the resolver entry point."""

    def __init__(self, dns: DnsEntry, metrics: Metrics) -> None:
        self._dns = dns
        self._metrics = metrics

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body = await _read_body(request, doh.MAX_MESSAGE) if request.method == "POST" else b""
            query = doh.decode_request(request.method, request.query.get("dns"),
                                       request.headers.get("Content-Type"), body)
        except doh.HttpError as exc:
            self._metrics.dropped.labels(reason=f"doh_{exc.status}").inc()
            headers = {"Allow": "GET, POST"} if exc.status == 405 else None
            return text_error(exc.status, exc.reason, headers)
        answer = await self._dns.resolve(query, ClientInfo(request[CLIENT_KEY], "doh"),
                                         doh.MAX_MESSAGE)
        if answer is None:
            return text_error(400, "the DNS query was dropped as malformed")
        return web.Response(body=answer, content_type=doh.CONTENT_TYPE, headers={
            "Cache-Control": f"max-age={doh.cache_max_age(answer)}"})


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The request body, or a 413 HttpError as soon as it is known to exceed ``limit``."""
    if request.content_length is not None and request.content_length > limit:
        raise doh.HttpError(413, f"body larger than {limit} bytes")
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise doh.HttpError(413, f"body larger than {limit} bytes")
    return body


Register = Callable[[web.Application], None]


def build_app(cfg: HttpConfig, metrics: Metrics, dns: DnsEntry | None,
              extra: Sequence[Register] = (), on_scrape: Callable[[], None] | None = None
              ) -> web.Application:
    """The aiohttp application; ``extra`` adds the status page and the relay API routes.

    The relay catch-all ``/{key}`` must be registered last (``extra`` order), so it does not
    shadow the fixed paths. ``on_scrape`` refreshes gauges just before ``/metrics`` renders.
    """
    policy = _middleware(parse_networks(cfg.trusted_proxies), Acl(cfg.admin_allow), metrics)
    app = web.Application(middlewares=[policy], client_max_size=doh.MAX_MESSAGE + 1)
    if dns is not None:
        app.router.add_route("*", "/dns-query", DohHandler(dns, metrics).handle)

    async def render_metrics(_request: web.Request) -> web.Response:
        if on_scrape is not None:
            on_scrape()
        return web.Response(body=metrics.render(), headers={
            "Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app.router.add_get("/metrics", render_metrics)
    for register in extra:
        register(app)
    return app


class HttpServer:
    """Runs :func:`build_app` on every ``http.listen`` address (port 0 picks a free port)."""

    def __init__(self, app: web.Application, listen: Sequence[HostPort],
                 grace: float = 2.0) -> None:
        # Idle keep-alive connections are closed after 10 s (slow or idle clients must not pin
        # connections). ``grace``: how long :meth:`stop` lets requests in progress finish
        # (the HTTP face passes ``dns.query_deadline``, within which the resolver answers
        # every DoH query; a fixed 2 s cut off DoH queries of a longer deadline).
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=grace, keepalive_timeout=10.0)
        self._listen = tuple(listen)
        self.addresses: list[HostPort] = []

    async def start(self) -> list[HostPort]:
        """Bind every address; returns the bound ``(host, port)`` pairs.

        Raises:
            PkdnsError: an address cannot be bound (one line naming it, for the CLI).
        """
        await self._runner.setup()
        try:
            for host, port in self._listen:
                sock = _listen_socket(host, port)
                await web.SockSite(self._runner, sock).start()
                name = sock.getsockname()
                self.addresses.append((str(name[0]), int(name[1])))
        except OSError as exc:
            await self._runner.cleanup()
            raise PkdnsError(f"http: cannot listen on {host}:{port}: {exc.strerror}") from exc
        _log.info("http_listening", addresses=[format_hostport(a) for a in self.addresses])
        return self.addresses

    async def stop(self) -> None:
        """Close the listeners, give the requests in progress up to ``grace`` to finish (then
        cancel them)."""
        await self._runner.cleanup()


def _listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)
    sock.setblocking(False)
    return sock
