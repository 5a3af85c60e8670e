"""Shared fixtures: fake clock, test vectors, a DHT testnet, and the HTTP rigs of
tests/support/http_rig.py (tests/server and tests/pkarr use them)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pkdns.dht.testnet import Testnet
from tests.support.clock import FakeClock
from tests.support.http_rig import doh_url, fake_dns, relay, status_site  # noqa: F401  (fixtures)

DATA = Path(__file__).parent / "data"


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


def load_vector(name: str) -> Any:
    """Load ``tests/data/<name>.json``."""
    return json.loads((DATA / f"{name}.json").read_text())


@pytest.fixture
async def testnet() -> AsyncIterator[Testnet]:
    """An 8-node loopback DHT testnet of our own nodes (server mode), closed after the test."""
    net = await Testnet.start(8)
    try:
        yield net
    finally:
        await net.close()
