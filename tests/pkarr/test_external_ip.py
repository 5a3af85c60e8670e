"""External-IP discovery against local aiohttp IP-echo servers (loopback, no internet)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from pkdns.errors import PkdnsError
from pkdns.pkarr.external_ip import discover, parse_reply

Handler = Callable[[web.Request], web.StreamResponse]


class EchoServers:
    """Routes on one loopback server per family; each route answers differently."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.app = web.Application()
        for path, body, status in [
            ("/ip", None, 200),                    # the client's own address, as text
            ("/json", None, 200),                  # {"ip": ...} like ipinfo.io
            ("/fixed4", "198.51.100.7\n", 200),
            ("/fixed6", "2001:db8::7\n", 200),
            ("/html", "<html>hello</html>", 200),
            ("/down", "oops", 503),
            ("/huge", "1" * 10_000, 200),
        ]:
            self.app.router.add_get(path, self._handler(path, body, status))
        self.app.router.add_get("/slow", self._slow)
        self.runner = web.AppRunner(self.app, shutdown_timeout=0.1)
        self.base: dict[int, str] = {}

    def _handler(self, path: str, body: str | None, status: int) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.hits.append(path)
            peer = request.remote or ""
            if body is None and path == "/json":
                return web.json_response({"ip": peer, "city": "Loopback"})
            return web.Response(text=peer if body is None else body, status=status)

        return handle

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        self.hits.append("/slow")
        await asyncio.sleep(5)
        return web.Response(text="127.0.0.1")

    async def start(self) -> None:
        await self.runner.setup()
        for family, host, fmt in [(socket.AF_INET, "127.0.0.1", "{}"),
                                  (socket.AF_INET6, "::1", "[{}]")]:
            await web.TCPSite(self.runner, host, 0).start()
            port = self.runner.addresses[-1][1]
            self.base[family] = f"http://{fmt.format(host)}:{port}"

    def url(self, family: int, path: str) -> str:
        return self.base[family] + path


@pytest.fixture
async def echo() -> AsyncIterator[EchoServers]:
    servers = EchoServers()
    await servers.start()
    try:
        yield servers
    finally:
        await servers.runner.cleanup()


async def test_plain_and_json_replies(echo: EchoServers) -> None:
    v4, v6 = socket.AF_INET, socket.AF_INET6
    assert await discover([echo.url(v4, "/ip")], v4, 2.0) == "127.0.0.1"
    assert await discover([echo.url(v4, "/json")], v4, 2.0) == "127.0.0.1"
    assert await discover([echo.url(v6, "/ip")], v6, 2.0) == "::1"
    assert await discover([echo.url(v6, "/json")], v6, 2.0) == "::1"


async def test_wrong_family_reply_is_skipped(echo: EchoServers) -> None:
    v4 = socket.AF_INET
    urls = [echo.url(v4, "/fixed6"), echo.url(v4, "/fixed4")]
    got = await discover(urls, v4, 2.0, rng=random.Random(1))
    assert got == "198.51.100.7"


async def test_falls_through_failures_in_random_order(echo: EchoServers) -> None:
    v4 = socket.AF_INET
    bad = ["/down", "/html", "/huge", "/fixed6"]
    urls = [echo.url(v4, p) for p in bad] + [echo.url(v4, "/fixed4")]
    orders = set()
    for seed in range(6):
        echo.hits.clear()
        assert await discover(urls, v4, 2.0, rng=random.Random(seed)) == "198.51.100.7"
        orders.add(tuple(echo.hits))
        assert echo.hits[-1] == "/fixed4"
    assert len(orders) > 1  # the order is shuffled


async def test_all_fail_names_every_url(echo: EchoServers) -> None:
    v4 = socket.AF_INET
    urls = [echo.url(v4, p) for p in ("/down", "/html", "/huge", "/fixed6", "/slow")]
    refused = "http://127.0.0.1:9/"  # discard port: connection refused
    with pytest.raises(PkdnsError) as info:
        await discover([*urls, refused], v4, 0.5)
    message = str(info.value)
    assert info.value.exit_code == 1
    assert message.startswith("cannot discover the external IPv4 address: ")
    for url in [*urls, refused]:
        assert url in message
    assert "HTTP 503" in message and "timed out" in message
    assert "is not an IPv4 address" in message and "longer than 512 bytes" in message


async def test_no_urls() -> None:
    with pytest.raises(PkdnsError, match="no IP-echo URLs"):
        await discover([], socket.AF_INET, 1.0)


@pytest.mark.parametrize(
    ("body", "family", "want"),
    [
        (b"203.0.113.5\n", socket.AF_INET, "203.0.113.5"),
        (b"  2001:DB8::5 ", socket.AF_INET6, "2001:db8::5"),
        (b'{"ip": "203.0.113.5"}', socket.AF_INET, "203.0.113.5"),
    ],
)
def test_parse_reply(body: bytes, family: int, want: str) -> None:
    assert parse_reply(body, family) == want


@pytest.mark.parametrize(
    "body", [b"", b"hello", b"{not json", b'{"ipx": 1}', b"[1]", b"203.0.113.5 extra"]
)
def test_parse_reply_rejects(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_reply(body, socket.AF_INET)


async def test_literal_of_the_other_family_is_a_clear_failure(echo: EchoServers) -> None:
    with pytest.raises(PkdnsError, match=r"127\.0\.0\.1 is an IPv4 address, not reachable"):
        await discover([echo.url(socket.AF_INET, "/ip")], socket.AF_INET6, 1.0)
    with pytest.raises(PkdnsError, match=r"::1 is an IPv6 address"):
        await discover([echo.url(socket.AF_INET6, "/ip")], socket.AF_INET, 1.0)
