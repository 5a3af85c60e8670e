"""Fixtures: a real pkdns HTTP server on 127.0.0.1 (port 0) in front of fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from pkdns.config import HttpConfig
from pkdns.metrics import Metrics
from pkdns.server.http import HttpServer, build_app
from pkdns.server.relay_api import RelayApi
from tests.http.fakes import FakeDns, FakePublisher, FakeStore, SwitchLimiter
from tests.support.clock import FakeClock


@pytest.fixture
def fake_dns() -> FakeDns:
    return FakeDns()


@pytest.fixture
async def doh_url(fake_dns: FakeDns) -> AsyncIterator[str]:
    """Base URL of a server with DoH + metrics over the fake resolver; 127.0.0.9 is trusted."""
    cfg = HttpConfig(listen=(("127.0.0.1", 0),), trusted_proxies=("127.0.0.9/32", "10.0.0.0/8"))
    server = HttpServer(build_app(cfg, Metrics(), fake_dns), cfg.listen)
    host, port = (await server.start())[0]
    try:
        yield f"http://{host}:{port}"
    finally:
        await server.stop()


@dataclass
class RelayRig:
    """A real HTTP server running the relay API over fakes."""

    url: str
    store: FakeStore
    publisher: FakePublisher
    limiter: SwitchLimiter
    metrics: Metrics


@pytest.fixture
async def relay(fake_clock: FakeClock) -> AsyncIterator[RelayRig]:
    cfg = HttpConfig(listen=(("127.0.0.1", 0),))
    store, publisher, limiter, metrics = FakeStore(), FakePublisher(), SwitchLimiter(), Metrics()
    api = RelayApi(store, publisher, limiter, fake_clock, 300, 86400, metrics)
    server = HttpServer(build_app(cfg, metrics, None, [api.register]), cfg.listen)
    host, port = (await server.start())[0]
    try:
        yield RelayRig(f"http://{host}:{port}", store, publisher, limiter, metrics)
    finally:
        await server.stop()
