"""The pkarr client's rules on a scripted DHT and relays: what counts, newest wins, rounds,
absence, an unreachable DHT, the join hook, and what a publish's answers mean."""

from __future__ import annotations

import asyncio

import pytest

from pkdns.dht.item import MutableItem
from pkdns.dht.put import PutResult
from pkdns.errors import DhtError
from pkdns.pkarr.client import DHT, PkarrClient, dht_published, to_item
from pkdns.pkarr.keys import Keypair, PublicKey
from pkdns.pkarr.relay_client import RelayClientError
from pkdns.pkarr.resolving import MAX_ROUNDS
from pkdns.pkarr.signed_packet import SignedPacket
from tests.support.clock import FakeClock
from tests.support.pkarr_factory import keypair, packet
from tests.support.pkarr_fakes import FakeDht, FnRelay, Script, item_of

KP = keypair(21)
KEY = KP.public_key
CLOCK = FakeClock()


def pkt(offset_s: float = 0.0, ip: str = "192.0.2.1", kp: Keypair = KP) -> SignedPacket:
    return packet(kp, [f"@ 300 IN A {ip}"], ts=CLOCK.wall_us() + int(offset_s * 1e6))


def relay_with(p: SignedPacket | None, url: str = "http://relay.test") -> FnRelay:
    async def answer(key: PublicKey) -> SignedPacket | None:
        return p

    return FnRelay(answer, url)


async def test_the_most_recent_packet_wins_over_the_dht_and_the_relays() -> None:
    old, mid, new = pkt(0, "192.0.2.1"), pkt(1, "192.0.2.2"), pkt(2, "192.0.2.3")
    dht = FakeDht(lambda k: Script(items=[(0.0, item_of(old)), (0.02, item_of(mid))]))
    client = PkarrClient(dht, [relay_with(new, "http://a.test"), relay_with(old)], clock=CLOCK)
    seen = []
    resolving = client.resolve(KEY, timeout=1.0)
    async for p in resolving:
        seen.append(p)
    await resolving.cancel()
    result = resolving.result
    assert result.best == new and result.source == "http://a.test" and result.finished
    assert seen[-1] == new
    assert all(b.more_recent_than(a) for a, b in zip(seen, seen[1:], strict=False))
    dht_only = await PkarrClient(dht, clock=CLOCK).resolve_most_recent(KEY, timeout=1.0)
    assert dht_only.best == mid and dht_only.source == DHT


async def test_packets_from_the_future_wrong_keys_and_bad_values_do_not_count() -> None:
    ahead, ok = pkt(2 * 3600), pkt(0)
    forged = MutableItem(KEY.raw, ok.timestamp + 5, ok.packet, bytes(64))
    dht = FakeDht(lambda k: Script(items=[(0.0, item_of(ahead)), (0.0, forged),
                                          (0.0, item_of(ok))]))
    stranger = relay_with(pkt(10, kp=keypair(22)))      # a relay answering with another key
    result = await PkarrClient(dht, [stranger], clock=CLOCK).resolve_most_recent(
        KEY, timeout=1.0)
    assert result.best == ok and result.future == 1
    assert result.invalid == 1 and result.newest_invalid_seq == ok.timestamp + 5
    near = pkt(3599)                                    # under an hour ahead is fine
    dht = FakeDht(lambda k: Script(items=[(0.0, item_of(near))]))
    assert (await PkarrClient(dht, clock=CLOCK).resolve_most_recent(
        KEY, timeout=1.0)).best == near


async def test_absence_is_the_dhts_word_or_without_a_dht_a_relays() -> None:
    none = relay_with(None)
    absent = FakeDht(lambda k: Script(responded=8, absent=True))
    silent = FakeDht(lambda k: Script(responded=0))
    proven = await PkarrClient(absent, [none], clock=CLOCK).resolve_most_recent(KEY, timeout=1.0)
    assert proven.absent and proven.dht_absent and proven.relays_absent == 1
    unproven = await PkarrClient(silent, [none], clock=CLOCK).resolve_most_recent(
        KEY, timeout=0.3)
    assert not unproven.absent and unproven.relays_absent == 1
    relays_only = await PkarrClient(None, [none], clock=CLOCK).resolve_most_recent(
        KEY, timeout=1.0)
    assert relays_only.absent and not relays_only.dht_used


async def test_failing_relays_are_reported_and_do_not_stop_the_others() -> None:
    p = pkt()

    async def down(key: PublicKey) -> SignedPacket | None:
        raise RelayClientError("http://down.test", "timed out")

    async def broken(key: PublicKey) -> SignedPacket | None:
        raise ConnectionResetError()

    relays = [FnRelay(down, "http://down.test"), FnRelay(broken, "http://broken.test"),
              relay_with(p)]
    result = await PkarrClient(None, relays, clock=CLOCK).resolve_most_recent(KEY, timeout=1.0)
    assert result.best == p
    assert result.errors == ["relay http://down.test: timed out",
                             "relay http://broken.test: ConnectionResetError"]


async def test_rounds_follow_a_silent_round_until_a_packet_or_the_deadline() -> None:
    p = pkt()
    rounds = [Script(responded=0, queried=8, end_after=0.25), Script(items=[(0.0, item_of(p))])]
    dht = FakeDht(lambda k: rounds.pop(0) if rounds else Script(responded=0))
    result = await PkarrClient(dht, clock=CLOCK).resolve_most_recent(KEY, timeout=1.0)
    assert result.best == p and len(dht.calls) == 2 and len(result.rounds) == 2
    quick = FakeDht(lambda k: Script(responded=0, queried=8))    # ended at once: no one to ask
    await PkarrClient(quick, clock=CLOCK).resolve_most_recent(KEY, timeout=1.0)
    assert len(quick.calls) == 1
    # the command line's rounds: until the deadline, however short each one
    every = FakeDht(lambda k: Script(responded=0, queried=8))
    resolving = PkarrClient(every, clock=CLOCK).resolve(KEY, timeout=0.3, rounds=None,
                                                        round_min=0.0)
    await resolving.collect()
    assert len(every.calls) > MAX_ROUNDS


async def test_grace_stops_the_dht_soon_after_the_first_packet() -> None:
    first, late = pkt(0), pkt(1)
    dht = FakeDht(lambda k: Script(items=[(0.0, item_of(first)), (0.5, item_of(late))]))
    result = await PkarrClient(dht, clock=CLOCK).resolve_most_recent(KEY, timeout=2.0,
                                                                       grace=0.05)
    assert result.best == first            # the newer packet 0.5 s later was not waited for
    assert dht.streams[0].cancelled


async def test_a_one_shot_stops_once_the_dht_nodes_agree() -> None:
    """``agree``: with the packet in hand and two nodes agreeing on it, the rest of the grace
    (the command line's 1 s) is not waited out; without agreement it is."""
    loop = asyncio.get_running_loop()
    for agreeing, least, most in ((2, 0.0, 0.3), (1, 0.45, 1.0)):
        dht = FakeDht(lambda k, n=agreeing: Script(items=[(0.0, item_of(pkt()))], hang=True,
                                                   agreeing=n))
        began = loop.time()
        result = await PkarrClient(dht, clock=CLOCK).resolve(
            KEY, timeout=2.0, grace=0.5, agree=2).collect()
        assert result.best is not None and least <= loop.time() - began < most, agreeing


async def test_an_unreachable_dht_is_skipped_only_when_relays_can_answer() -> None:
    p = pkt()
    dht = FakeDht(lambda k: Script(items=[(0.0, item_of(p))]))
    dht.up = False
    with_relays = PkarrClient(dht, [relay_with(None)], clock=CLOCK)
    assert (await with_relays.resolve_most_recent(KEY, timeout=1.0)).best is None
    assert dht.calls == []
    alone = PkarrClient(dht, clock=CLOCK)          # the lookups are how it notices it is back
    assert (await alone.resolve_most_recent(KEY, timeout=1.0)).best == p


async def test_a_failed_join_is_the_dhts_failure_while_relays_still_answer() -> None:
    p = pkt()

    async def join() -> None:
        raise DhtError("could not join the DHT: no node answered")

    dht = FakeDht(lambda k: Script(items=[(0.0, item_of(p))]))
    client = PkarrClient(dht, [relay_with(p)], clock=CLOCK, ready=join)
    result = await client.resolve_most_recent(KEY, timeout=1.0)
    assert result.best == p and not result.dht_used and dht.calls == []
    assert result.dht_error == "could not join the DHT: no node answered"
    publication = await client.publish(p)
    assert publication.dht is None and publication.dht_error == result.dht_error
    assert publication.stored and dht.puts == []


async def test_publish_goes_to_the_dht_and_every_relay() -> None:
    p = pkt()
    dht = FakeDht(lambda k: Script())
    relay = relay_with(None)

    async def conflict(key: PublicKey) -> SignedPacket | None:
        return None

    refusing = FnRelay(conflict, "http://409.test")

    async def put_409(packet: SignedPacket, if_match: int | None = None) -> int:
        raise RelayClientError("http://409.test", "HTTP 409: a more recent signed packet",
                               status=409)

    refusing.put = put_409  # type: ignore[method-assign]
    publication = await PkarrClient(dht, [relay, refusing], clock=CLOCK).publish(p)
    assert dht.puts == [to_item(p)] and relay.puts == [p]
    assert publication.dht is not None and publication.dht.stored == 8
    assert publication.stored and publication.conflict
    (url, answer), (url2, refused) = publication.relays
    assert (url, answer.stored) == ("http://relay.test", 1)
    assert url2 == "http://409.test" and refused.conflict and refused.code == 409
    only_dht = await PkarrClient(dht, [relay], clock=CLOCK).publish(p, use_relays=False)
    assert only_dht.relays == () and relay.puts == [p]


async def test_a_dht_put_that_raises_is_the_dhts_answer_and_the_relays_still_count() -> None:
    p = pkt()
    dht = FakeDht(lambda k: Script())
    relay = relay_with(None)

    async def broken(item: MutableItem, *, timeout: float = 5.0) -> PutResult:
        raise DhtError("DHT node not started")

    dht.put_mutable = broken  # type: ignore[method-assign]
    publication = await PkarrClient(dht, [relay], clock=CLOCK).publish(p)
    assert publication.dht is None
    assert publication.dht_error == "DHT put failed: DHT node not started"
    assert relay.puts == [p] and publication.stored


@pytest.mark.parametrize(("result", "stored", "conflict", "error"), [
    (PutResult(stored=3, asked=5), 3, False, None),
    (PutResult(asked=0), 0, False, "no DHT nodes to ask"),
    (PutResult(asked=5, timed_out=5), 0, False, "no DHT node answered"),
    (PutResult(asked=5, error=(302, "Sequence number less than current.")), 0, True,
     "KRPC error 302: Sequence number less than current."),
    (PutResult(asked=5, error=(301, "CAS mismatched, re-read value and try again.")), 0, True,
     "KRPC error 301: CAS mismatched, re-read value and try again."),
    (PutResult(asked=5, error=(205, "message (v field) too big.")), 0, False,
     "KRPC error 205: message (v field) too big."),
])
def test_what_a_dht_put_result_means(result: PutResult, stored: int, conflict: bool,
                                     error: str | None) -> None:
    answer = dht_published(result)
    assert (answer.stored, answer.conflict, answer.error) == (stored, conflict, error)
