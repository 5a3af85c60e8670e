"""Fixtures (imported by tests/conftest.py): a real pkdns HTTP server on 127.0.0.1 (port 0)
in front of fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from pkdns.config import HttpConfig
from pkdns.metrics import Metrics
from pkdns.server.http import HttpServer, build_app
from pkdns.server.relay_api import RelayApi
from pkdns.server.status import DaemonStatus, StatusPage
from tests.support.clock import FakeClock
from tests.support.http_fakes import FakeDns, FakePublisher, FakeStore, SwitchLimiter


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


class FakeDhtInfo:
    def routing_table_size(self) -> int:
        return 42

    def estimated_network_size(self) -> int:
        return 1234

    def health_snapshot(self) -> dict[str, object]:
        return {"reachable": False, "asked": 12, "answered": 0, "answered_ratio": 0.0,
                "unanswered_in_a_row": 12, "last_reply_age": None, "last_found_age": None}


@dataclass
class StatusRig:
    url: str
    store: FakeStore
    clock: FakeClock


@pytest.fixture
async def status_site(fake_clock: FakeClock) -> AsyncIterator[StatusRig]:
    """Status page + relay API over a fake store, like the daemon wires them."""
    cfg = HttpConfig(listen=(("127.0.0.1", 0),))
    store, metrics = FakeStore(), Metrics()
    api = RelayApi(store, FakePublisher(), SwitchLimiter(), fake_clock, 300, 86400, metrics)
    status = DaemonStatus(fake_clock, fake_clock.monotonic() - 3725.0, "client",
                          dns_listeners=["127.0.0.1:5300"], dht=FakeDhtInfo(),
                          cache_stats=lambda: {"entries": 3, "bytes": 900}, packets_held=lambda: 1)
    page = StatusPage(status.snapshot, api)
    server = HttpServer(build_app(cfg, metrics, None, [page.register, api.register]), cfg.listen)
    host, port = (await server.start())[0]
    status.http_listeners = [f"{host}:{port}"]
    try:
        yield StatusRig(f"http://{host}:{port}", store, fake_clock)
    finally:
        await server.stop()
