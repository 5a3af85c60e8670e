"""The HTTP listener on both wildcards of one port, in either order: its IPv6 socket is
IPv6-only like the DNS listeners', so ``0.0.0.0:P`` and ``[::]:P`` start together and each
family is served."""

from __future__ import annotations

import pytest
from aiohttp import ClientSession, web

from pkdns.server.http import HttpServer
from tests.server.integration.test_dualstack import _free_port


@pytest.mark.parametrize("order", [("0.0.0.0", "::"), ("::", "0.0.0.0")])
async def test_http_on_both_wildcards_in_either_order(order: tuple[str, str]) -> None:
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=request.remote or "")

    app.router.add_get("/", hello)
    port = _free_port()
    server = HttpServer(app, [(host, port) for host in order])
    await server.start()
    try:
        async with ClientSession() as s:
            seen = []
            for url in (f"http://127.0.0.1:{port}/", f"http://[::1]:{port}/"):
                async with s.get(url) as r:
                    seen.append(await r.text())
    finally:
        await server.stop()
    assert seen == ["127.0.0.1", "::1"]
