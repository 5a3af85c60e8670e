"""The pkarr relay HTTP API (``GET``/``PUT /<z32 key>``), as pkarr 7 relays serve it.

As pkarr defines it (``relay/src/handlers.rs``, ``response.rs``, ``design/relays.md``):

PUT  body = relay payload (sig | ts | packet). Verify (400; also a timestamp more than an hour
     ahead, which pkarr relays accept: a signer with a broken clock must not freeze its record)
     -> a more recent cached packet is a 409 -> (v3: ``If-Match: <ts>`` CAS against the cached
     timestamp, 412) -> per-IP rate limit (429) -> publish to the DHT (500 when no node stored
     it) -> cache -> 204 with ``Pkarr-Dht-Stored-Nodes``. Bodies over 1104 bytes are 413 (axum
     ``DefaultBodyLimit``).
GET  ``?policy=CacheOnly|CacheFirst|NetworkOnly`` (default CacheFirst). 200 with the payload,
     ``Content-Type: application/pkarr.org/relays#payload``, ``Cache-Control: public,
     max-age=<clamped ttl>``, ``Last-Modified`` (packet timestamp), ``Memento-Datetime``
     (last seen) and ``ETag`` (timestamp and signature); 304 when ``If-None-Match`` names
     that ETag, or (without ``If-None-Match``, RFC 9110 §13.1.3) when ``If-Modified-Since`` >=
     the packet timestamp at full µs precision;
     404 (with ``Pkarr-Invalid-Signed-Packet-Seq`` when the newest DHT item was not a valid
     packet); 503 when too few DHT nodes answered to tell; 429 over the rate limit (only
     requests that reach the network are charged).

Older (v3.8) clients send ``If-Modified-Since`` on plain GETs and ``If-Match`` on PUTs; both
work here, and a 204 (not v3's 200) is a success to them (``response.ok``).

Why an ETag: an HTTP-date has whole seconds and packet timestamps have microseconds, so a
cache that revalidates with the ``Last-Modified`` it was given (…:37 for a packet at …:37.5)
must get a 200: pkarr's own relay answers so too, since a packet published at …:37.8 would
otherwise be hidden behind a 304. The ETag names the exact packet, so ``If-None-Match`` gives
the 304 that a cache (or ``curl --etag-compare``) expects when nothing changed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from pkdns.clock import Clock
from pkdns.errors import DecodeError
from pkdns.metrics import Metrics
from pkdns.pkarr.client import Published
from pkdns.pkarr.evidence import from_the_future
from pkdns.pkarr.keys import PublicKey
from pkdns.pkarr.relay_client import INVALID_SEQ, STORED_NODES, http_date, parse_http_date
from pkdns.pkarr.signed_packet import MAX_BYTES, SignedPacket
from pkdns.server.http import CLIENT_KEY, text_error

PAYLOAD_TYPE = "application/pkarr.org/relays#payload"
MAX_BODY = MAX_BYTES                      # axum DefaultBodyLimit::max(1104) on the v7 relay


class Policy(enum.Enum):
    """pkarr 7 ``ResolvePolicy``."""

    CACHE_ONLY = "CacheOnly"
    CACHE_FIRST = "CacheFirst"
    NETWORK_ONLY = "NetworkOnly"


@dataclass(frozen=True, slots=True)
class Cached:
    """A packet the cache holds; ``fresh`` per the daemon's TTL policy."""

    packet: SignedPacket
    last_seen_us: int
    fresh: bool


@dataclass(frozen=True, slots=True)
class Fetched:
    """Outcome of a network lookup (DHT, and configured relays).

    ``responded`` False means the network gave no evidence of absence: too few DHT nodes
    answered, or the lookup hit its deadline (503, never "not found");
    ``invalid_seq`` is the seq of a newer item that was not a valid signed packet.
    """

    packet: SignedPacket | None
    responded: bool = True
    invalid_seq: int | None = None


class RelayStore(Protocol):
    """The daemon's signed-packet cache and network lookups (``pkdns.answer.source``)."""

    def cached(self, key: PublicKey) -> Cached | None: ...

    async def fetch(self, key: PublicKey, floor: SignedPacket | None) -> Fetched:
        """Look ``key`` up on the network; ``floor`` is the packet a result must not be older
        than (the pkarr 7 relay asks with ``more_recent_than = floor.timestamp - 1``)."""
        ...

    def store(self, packet: SignedPacket) -> None: ...


class Publisher(Protocol):
    """Puts a signed packet on the DHT (BEP 44 put of the mutable item)."""

    async def publish(self, packet: SignedPacket) -> Published: ...


class RelayQuota(Protocol):
    """Per-client token bucket: ``allow`` spends one token or returns False."""

    def allow(self, client: str) -> bool: ...


class RelayError(Exception):
    """An HTTP error answer of the relay API (plain text body, like pkarr relays)."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


# --- pure helpers -------------------------------------------------------------------------

def parse_key(text: str) -> PublicKey:
    """The key named in the path (any form pkarr's ``PublicKey::try_from`` accepts); 400."""
    try:
        return PublicKey.parse(text)
    except DecodeError as exc:
        raise RelayError(400, f"invalid public key: {exc}") from None


def parse_policy(text: str | None) -> Policy:
    """The ``policy`` query parameter (CacheFirst when absent); 400 for anything else."""
    if text is None:
        return Policy.CACHE_FIRST
    for policy in Policy:
        if policy.value == text:
            return policy
    raise RelayError(400, f"unknown policy {text!r}: use CacheOnly, CacheFirst or NetworkOnly")


def not_modified(timestamp_us: int, if_modified_since: str | None) -> bool:
    """304 rule of the v7 relay: the packet is not newer than IMS, compared at µs precision
    (``relay/src/response.rs`` tests: ts ``…:37.5`` is newer than IMS ``…:37``)."""
    if not if_modified_since:
        return False
    ims = parse_http_date(if_modified_since)
    return ims is not None and timestamp_us <= ims


def etag(packet: SignedPacket) -> str:
    """A strong validator naming exactly this packet (RFC 9110 §8.8.3): its timestamp, and
    the start of its signature for two packets signed in the same microsecond."""
    return f'"{packet.timestamp:x}-{packet.signature[:8].hex()}"'


def none_match(tag: str, if_none_match: str | None) -> bool | None:
    """RFC 9110 §13.1.2 for a GET (weak comparison): True when ``If-None-Match`` lists
    ``tag`` or is ``*`` (answer 304), False when it lists others, None when absent."""
    if if_none_match is None:
        return None
    listed = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in listed or tag in listed


def not_modified_request(packet: SignedPacket, if_none_match: str | None,
                         if_modified_since: str | None) -> bool:
    """Should a GET for ``packet`` be a 304? ``If-None-Match`` decides when present;
    ``If-Modified-Since`` is then ignored (RFC 9110 §13.1.3)."""
    matched = none_match(etag(packet), if_none_match)
    if matched is not None:
        return matched
    return not_modified(packet.timestamp, if_modified_since)


def payload_headers(packet: SignedPacket, last_seen_us: int, min_ttl: int,
                    max_ttl: int) -> dict[str, str]:
    """Headers of a 200/304 relay GET answer."""
    return {
        "Content-Type": PAYLOAD_TYPE,
        "Cache-Control": f"public, max-age={packet.ttl(min_ttl, max_ttl)}",
        "Last-Modified": http_date(packet.timestamp),
        "Memento-Datetime": http_date(last_seen_us),
        "ETag": etag(packet),
    }


def check_if_match(if_match: str | None, cached: Cached | None) -> None:
    """pkarr 3.8 PUT ``If-Match: <u64 ts>`` compare-and-swap against the cached packet: 412
    when what we hold is a different timestamp (BEP 44 ``cas``); v7 dropped CAS."""
    if if_match is None:
        return
    try:
        expected = int(if_match.strip().strip('"'))
    except ValueError:
        raise RelayError(400, f"If-Match must be a timestamp, got {if_match!r}") from None
    if cached is not None and cached.packet.timestamp != expected:
        raise RelayError(412, "If-Match does not match the current packet timestamp")


# --- the service and its aiohttp handlers ---------------------------------------------------

class RelayApi:
    """Relay GET/PUT over the daemon's packet store and DHT publisher."""

    def __init__(self, store: RelayStore, publisher: Publisher | None, limiter: RelayQuota,
                 clock: Clock, min_ttl: int, max_ttl: int, metrics: Metrics | None = None
                 ) -> None:
        self._store = store
        self._publisher = publisher
        self._limiter = limiter
        self._clock = clock
        self._ttl = (min_ttl, max_ttl)
        self._metrics = metrics

    async def lookup(self, key: PublicKey, policy: Policy, client: str) -> tuple[SignedPacket, int]:
        """The packet to serve and when it was last seen (µs), or raise :class:`RelayError`."""
        cached = self._store.cached(key)
        fresh_hit = policy is Policy.CACHE_FIRST and cached is not None and cached.fresh
        if policy is Policy.CACHE_ONLY or fresh_hit:
            if cached is None:
                raise RelayError(404, "not found in the cache")
            return cached.packet, cached.last_seen_us
        if not self._limiter.allow(client):
            raise RelayError(429, "rate limited", {"Retry-After": "1"})
        floor = cached.packet if cached is not None and policy is Policy.CACHE_FIRST else None
        fetched = await self._store.fetch(key, floor)
        found = fetched.packet
        if found is not None and (floor is None or not floor.more_recent_than(found)):
            return found, self._clock.wall_us()
        if fetched.invalid_seq is not None:
            raise RelayError(404, "the most recent item is not a valid signed packet",
                             {INVALID_SEQ: str(fetched.invalid_seq)})
        if not fetched.responded:
            raise RelayError(503, "too few DHT nodes responded to tell whether a packet exists")
        raise RelayError(404, "not found")

    async def put(self, key: PublicKey, payload: bytes, if_match: str | None, client: str) -> int:
        """Verify, publish and cache a relay payload; returns the nodes that stored it."""
        try:
            packet = SignedPacket.from_relay_payload(key, payload)
        except DecodeError as exc:
            raise RelayError(400, str(exc)) from None
        if from_the_future(packet, self._clock.wall_us()):
            raise RelayError(400, "the packet timestamp is more than an hour in the future "
                                  f"({http_date(packet.timestamp)}): check the signer's clock")
        cached = self._store.cached(key)
        if cached is not None and cached.packet.more_recent_than(packet):
            raise RelayError(409, "a more recent signed packet is already known")
        check_if_match(if_match, cached)
        if self._publisher is None:
            raise RelayError(503, "publishing is not available on this server")
        if not self._limiter.allow(client):
            raise RelayError(429, "rate limited", {"Retry-After": "1"})
        result = await self._publisher.publish(packet)
        if result.conflict:
            raise RelayError(409, "the DHT holds a more recent signed packet")
        if result.stored == 0:
            raise RelayError(500, f"no DHT node stored the packet: {result.error or 'timeout'}")
        self._store.store(packet)
        return result.stored

    def register(self, app: web.Application) -> None:
        """Add ``GET``/``PUT /{key}`` (register after every fixed path)."""
        app.router.add_get("/{key}", self._get)
        app.router.add_put("/{key}", self._put)

    async def _get(self, request: web.Request) -> web.Response:
        try:
            key = parse_key(request.match_info["key"])
            policy = parse_policy(request.query.get("policy"))
            packet, last_seen = await self.lookup(key, policy, request[CLIENT_KEY])
        except RelayError as exc:
            return self._error("GET", exc)
        headers = payload_headers(packet, last_seen, *self._ttl)
        if not_modified_request(packet, request.headers.get("If-None-Match"),
                                request.headers.get("If-Modified-Since")):
            self._count("GET", 304)
            del headers["Content-Type"]
            return web.Response(status=304, headers=headers)
        self._count("GET", 200)
        return web.Response(body=packet.relay_payload(), headers=headers)

    async def _put(self, request: web.Request) -> web.Response:
        try:
            key = parse_key(request.match_info["key"])
            payload = await _read_payload(request)
            stored = await self.put(key, payload, request.headers.get("If-Match"),
                                    request[CLIENT_KEY])
        except RelayError as exc:
            return self._error("PUT", exc)
        self._count("PUT", 204)
        return web.Response(status=204, headers={STORED_NODES: str(stored)})

    def _error(self, method: str, exc: RelayError) -> web.Response:
        self._count(method, exc.status)
        if exc.status == 429 and self._metrics is not None:
            self._metrics.rate_limited.labels(what="relay").inc()
        return text_error(exc.status, exc.reason, exc.headers)

    def _count(self, method: str, status: int) -> None:
        if self._metrics is not None:
            self._metrics.relay_requests.labels(method=method, status=str(status)).inc()


async def _read_payload(request: web.Request) -> bytes:
    """The PUT body; 413 past 1104 bytes, decided before reading when Content-Length says so."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise RelayError(413, f"body larger than {MAX_BODY} bytes")
    body = await request.content.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise RelayError(413, f"body larger than {MAX_BODY} bytes")
    return body
