"""The relay client against pkdns's relay API and against scripted legacy (v3.8) relays."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from pkdns.errors import PkdnsError
from pkdns.pkarr import relay_client as rc
from pkdns.pkarr.client import PkarrClient, Published
from pkdns.pkarr.relay_client import RelayClient, RelayClientError
from pkdns.server.relay_api import Fetched
from tests.support.http_rig import RelayRig
from tests.support.pkarr_factory import TS, keypair, packet

KP = keypair(5)
OLD = packet(KP, ["@ 300 IN A 192.0.2.1"], TS)
NEW = packet(KP, ["@ 300 IN A 192.0.2.2"], TS + 2_000_000)


async def test_get_and_put_against_pkdns_relay(relay: RelayRig) -> None:
    client = RelayClient(relay.url + "/")
    try:
        assert (await client.get(KP.public_key)).packet is None
        assert await client.put(OLD) == 7
        assert (await client.get(KP.public_key)).packet == OLD
        assert (await client.get(KP.public_key, newer_than=OLD)).status == 304
        assert (await client.get(KP.public_key, newer_than=OLD)).packet is None
        with pytest.raises(RelayClientError) as err:
            await client.put(NEW, if_match=1)
        assert err.value.status == 412
        assert await client.put(NEW, if_match=OLD.timestamp) == 7
        with pytest.raises(RelayClientError) as err:
            await client.put(OLD)
        assert err.value.status == 409 and "more recent" in str(err.value)
        got = await client.get(KP.public_key, newer_than=OLD)
        assert got.packet == NEW
    finally:
        await client.close()


async def test_policies_and_error_statuses(relay: RelayRig) -> None:
    client = RelayClient(relay.url)
    raw = KP.public_key.raw
    try:
        relay.store.network[raw] = Fetched(NEW)
        assert (await client.get(KP.public_key, policy="CacheOnly")).packet is None
        assert (await client.get(KP.public_key, policy="NetworkOnly")).packet == NEW
        relay.store.network[raw] = Fetched(None, invalid_seq=99)
        assert (await client.get(KP.public_key)).invalid_seq == 99
        relay.store.network[raw] = Fetched(None, responded=False)
        with pytest.raises(RelayClientError) as err:
            await client.get(KP.public_key)
        assert err.value.status == 503
        relay.publisher.result = Published(0, error="timeout")
        with pytest.raises(RelayClientError, match="HTTP 500: no DHT node stored"):
            await client.put(NEW)
        with pytest.raises(PkdnsError, match="unknown relay policy"):
            await client.get(KP.public_key, policy="Sometimes")
    finally:
        await client.close()


Script = Callable[[web.Request], web.Response]


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[str, list[web.Request], list[Script]]]:
    """A relay whose answers the test scripts; records every request."""
    seen: list[web.Request] = []
    script: list[Script] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        seen.append(request)
        return script[min(len(seen), len(script)) - 1](request)

    app = web.Application()
    app.router.add_route("*", "/{key}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen, script
    finally:
        await runner.cleanup()


async def test_v3_relay_empty_body_on_ims_is_retried_without_cache(
        scripted: tuple[str, list[web.Request], list[Script]]) -> None:
    url, seen, script = scripted
    script += [lambda r: web.Response(status=200),
               lambda r: web.Response(body=NEW.relay_payload())]
    client = RelayClient(url)
    try:
        got = await client.get(KP.public_key, newer_than=OLD)
    finally:
        await client.close()
    assert got.packet == NEW
    assert "Cache-Control" not in seen[0].headers
    assert seen[1].headers["Cache-Control"] == rc.NO_CACHE
    assert seen[1].headers["If-Modified-Since"] == rc.http_date(OLD.timestamp)


async def test_unrequested_304_is_retried_once(
        scripted: tuple[str, list[web.Request], list[Script]]) -> None:
    url, seen, script = scripted
    script += [lambda r: web.Response(status=304)]
    client = RelayClient(url)
    try:
        got = await client.get(KP.public_key)
    finally:
        await client.close()
    assert (got.packet, got.status, len(seen)) == (None, 304, 2)


async def test_v3_put_without_stored_header_counts_one(
        scripted: tuple[str, list[web.Request], list[Script]]) -> None:
    url, seen, script = scripted
    script += [lambda r: web.Response(status=200)]
    client = RelayClient(url)
    try:
        assert await client.put(NEW) == 1
    finally:
        await client.close()
    assert seen[0].method == "PUT" and seen[0].path == f"/{KP.public_key.z32}"


@pytest.mark.parametrize(("response", "message"), [
    (lambda r: web.Response(body=b"\x00" * 1105), "larger than 1104"),
    (lambda r: web.Response(body=packet(keypair(6), ["@ 60 IN A 192.0.2.3"]).relay_payload()),
     "invalid packet"),
    (lambda r: web.Response(body=NEW.relay_payload()[:-1] + b"\x01"), "invalid packet"),
    (lambda r: web.Response(status=429, text="slow down\nplease"), "HTTP 429: slow down"),
])
async def test_bad_relay_answers_raise(scripted: tuple[str, list[web.Request], list[Script]],
                                       response: Script, message: str) -> None:
    url, _, script = scripted
    script.append(response)
    client = RelayClient(url)
    try:
        with pytest.raises(RelayClientError, match=message):
            await client.get(KP.public_key)
    finally:
        await client.close()


async def test_unreachable_relay_next_to_a_live_one(relay: RelayRig) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = RelayClient(f"http://127.0.0.1:{s.getsockname()[1]}", timeout=2)
    live = RelayClient(relay.url)
    try:
        with pytest.raises(RelayClientError):
            await dead.get(KP.public_key)
        client = PkarrClient(None, [live, dead])       # the pkarr client over real relays
        publication = await client.publish(NEW)
        assert publication.relays[0] == (live.url, Published(7))
        dead_answer = publication.relays[1][1]
        assert dead_answer.stored == 0 and dead_answer.error is not None
        assert dead_answer.error.startswith(f"relay {dead.url}: ")
        found = await PkarrClient(None, [dead, live]).resolve_most_recent(KP.public_key,
                                                                          timeout=5.0)
        assert found.best == NEW and found.source == live.url and len(found.errors) == 1
    finally:
        await live.close()
        await dead.close()
    with pytest.raises(PkdnsError, match="must start with http"):
        RelayClient("relay.example")
