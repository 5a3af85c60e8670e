"""Client of the pkarr relay HTTP API (pkarr ``design/relays.md``), for v7 and v3.8 relays.

GET ``<relay>/<z32>[?policy=...]``: 200 carries a relay payload (sig | ts | packet), verified
like any packet from the network; 404 and 304 mean "nothing (newer)". Following pkarr 7's
``relay_client.rs``: ``If-Modified-Since`` asks only for something newer than a packet we hold;
a 304 we did not ask for, or a 200 with an empty body (what a v3.8 relay sends when a GET
carries ``If-Modified-Since``), is a broken HTTP cache in between and is retried once with
``Cache-Control: no-cache, no-store, must-revalidate``; bodies are read up to 1104 bytes.

PUT: 2xx is success; the stored-node count is ``Pkarr-Dht-Stored-Nodes`` (v7), or 1 when the
header is absent (v3 relays answer a bare 200, pkarr 7 counts that as one). ``If-Match`` sends
a v3.8 compare-and-swap timestamp. Anything else raises :class:`RelayClientError` with the
relay's status and first line of text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

import aiohttp

from pkdns.errors import DecodeError, PkdnsError
from pkdns.pkarr.keys import PublicKey
from pkdns.pkarr.signed_packet import MAX_BYTES, SignedPacket

NO_CACHE = "no-cache, no-store, must-revalidate"
STORED_NODES = "Pkarr-Dht-Stored-Nodes"
INVALID_SEQ = "Pkarr-Invalid-Signed-Packet-Seq"
POLICIES = ("CacheOnly", "CacheFirst", "NetworkOnly")


class RelayClientError(PkdnsError):
    """A relay answered with an error status, or could not be reached."""

    def __init__(self, url: str, message: str, status: int | None = None) -> None:
        super().__init__(f"relay {url}: {message}")
        self.status = status


@dataclass(frozen=True, slots=True)
class RelayResponse:
    """What one GET returned: a verified packet, or why not (``invalid_seq`` from v7)."""

    packet: SignedPacket | None
    status: int
    invalid_seq: int | None = None


class RelayClient:
    """One relay URL. Owns an aiohttp session unless one is given (the daemon shares one)."""

    def __init__(self, url: str, session: aiohttp.ClientSession | None = None,
                 timeout: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise PkdnsError(f"relay URL must start with http:// or https://: {url!r}")
        self.url = url.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def close(self) -> None:
        """Close the session if this client created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def get(self, key: PublicKey, policy: str | None = None,
                  newer_than: SignedPacket | None = None) -> RelayResponse:
        """GET the key's packet; with ``newer_than``, only a strictly more recent one."""
        if policy is not None and policy not in POLICIES:
            raise PkdnsError(f"unknown relay policy {policy!r}; use one of {', '.join(POLICIES)}")
        headers = {}
        if newer_than is not None:
            headers["If-Modified-Since"] = http_date(newer_than.timestamp)
        if policy == "NetworkOnly":
            headers["Cache-Control"] = NO_CACHE
        status, body, resp_headers = await self._get(key, policy, headers)
        if (status == 304 and newer_than is None) or (status == 200 and not body):
            status, body, resp_headers = await self._get(
                key, policy, {**headers, "Cache-Control": NO_CACHE})
        if status in (304, 404) or (status == 200 and not body):
            return RelayResponse(None, status, _int_header(resp_headers.get(INVALID_SEQ)))
        if status != 200:
            raise RelayClientError(self.url, _describe(status, body), status)
        try:
            packet = SignedPacket.from_relay_payload(key, body)
        except DecodeError as exc:
            raise RelayClientError(self.url, f"invalid packet for {key.z32}: {exc}") from None
        if newer_than is not None and not packet.more_recent_than(newer_than):
            return RelayResponse(None, status)
        return RelayResponse(packet, status)

    async def _get(self, key: PublicKey, policy: str | None, headers: dict[str, str]
                   ) -> tuple[int, bytes, dict[str, str]]:
        params = {"policy": policy} if policy else None
        try:
            async with self._http().get(f"{self.url}/{key.z32}", params=params, headers=headers,
                                        timeout=self._timeout) as resp:
                body = await resp.content.read(MAX_BYTES + 1)
                if len(body) > MAX_BYTES:
                    raise RelayClientError(self.url, f"body larger than {MAX_BYTES} bytes")
                return resp.status, body, dict(resp.headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RelayClientError(self.url, _network_error(exc)) from None

    async def put(self, packet: SignedPacket, if_match: int | None = None) -> int:
        """PUT the packet; returns how many DHT nodes stored it (per the relay)."""
        headers = {"Content-Type": "application/pkarr.org/relays#payload"}
        if if_match is not None:
            headers["If-Match"] = str(if_match)
        url = f"{self.url}/{packet.public_key.z32}"
        try:
            async with self._http().put(url, data=packet.relay_payload(), headers=headers,
                                        timeout=self._timeout) as resp:
                body = await resp.content.read(4096)
                status, stored = resp.status, resp.headers.get(STORED_NODES)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RelayClientError(self.url, _network_error(exc)) from None
        if not 200 <= status < 300:
            raise RelayClientError(self.url, _describe(status, body), status)
        count = _int_header(stored)
        return 1 if count is None else count


_FIRST_SECOND = int(datetime(1, 1, 1, tzinfo=UTC).timestamp())
_LAST_SECOND = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())


def http_date(us: int) -> str:
    """RFC 9110 §5.6.7 IMF-fixdate of a µs timestamp (whole seconds).

    Clamped to the years an HTTP-date can write (0001..9999): a signed packet may carry any
    64-bit timestamp, and the relay names a future one in its 400 answer (found by fuzzing:
    a PUT dated year 107007 raised ValueError, a 500).
    """
    seconds = min(max(us // 1_000_000, _FIRST_SECOND), _LAST_SECOND)
    return format_datetime(datetime.fromtimestamp(seconds, UTC), usegmt=True)


def parse_http_date(text: str) -> int | None:
    """µs since the epoch of an HTTP-date (any of the three RFC 9110 forms), or None when it
    does not parse (a server then ignores the header, RFC 9110 §13.1.3)."""
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp()) * 1_000_000


def _int_header(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _describe(status: int, body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip().splitlines()
    return f"HTTP {status}" + (f": {text[0][:200]}" if text else "")


def _network_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
