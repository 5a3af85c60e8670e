"""The relay API's store over a real PkarrSource and a scripted DHT (tests.answer.fakes)."""

from __future__ import annotations

import pytest

from pkdns.answer.source import PkarrSource
from pkdns.config import PkarrConfig
from pkdns.pkarr.client import PkarrClient
from pkdns.server.face import SourceStore
from tests.answer.fakes import source_over
from tests.support.clock import FakeClock
from tests.support.pkarr_factory import keypair, packet
from tests.support.pkarr_fakes import FakeDht, Script, item_of

KP = keypair(14)
CFG = PkarrConfig(lookup_timeout=0.3, first_answer_window=0.03, dht_rate_limit=0)


def _store(dht: FakeDht, clock: FakeClock) -> tuple[SourceStore, PkarrSource]:
    source = source_over(dht, CFG, clock)
    client = PkarrClient(dht, clock=clock)
    return SourceStore(source, client, clock, 60, 86400, CFG.lookup_timeout), source


async def test_network_only_ignores_packets_from_the_far_future() -> None:
    clock = FakeClock()
    ahead = packet(KP, ["@ 300 IN A 192.0.2.1"], clock.wall_us() + 2 * 3600 * 1_000_000)
    now = packet(KP, ["@ 300 IN A 192.0.2.2"], clock.wall_us())
    dht = FakeDht(lambda k: Script(items=[(0.0, item_of(now)), (0.0, item_of(ahead))]))
    store, source = _store(dht, clock)
    fetched = await store.fetch(KP.public_key, None)
    assert fetched.packet == now
    assert [c.packet for c in source.cached()] == [now]


@pytest.mark.parametrize(("responded", "absent", "proof"), [
    (8, True, True), (20, False, False), (0, False, False)])
async def test_network_only_miss_is_404_only_when_the_lookup_proved_absence(
        responded: int, absent: bool, proof: bool) -> None:
    """The relay answers 404 (``responded``) or 503 by the same rule as NXDOMAIN/SERVFAIL:
    the lookup's proof, not how many nodes answered."""
    dht = FakeDht(lambda k: Script(responded=responded, absent=absent))
    store, _ = _store(dht, FakeClock())
    fetched = await store.fetch(KP.public_key, None)
    assert fetched.packet is None and fetched.responded is proof
