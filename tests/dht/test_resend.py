"""The resend schedule (pkdns.dht.resend): copies to nodes never heard from only on a lossy
link, the gap from the round trips of the copies answered."""

from __future__ import annotations

from typing import cast

import pytest

from pkdns.dht.health import DhtHealth
from pkdns.dht.krpc import Query
from pkdns.dht.outbound import Asker
from pkdns.dht.pacing import SendPacer
from pkdns.dht.resend import LOSSY, MIN_GAP, RETRANSMIT, SAMPLES, Resends
from pkdns.dht.rtt import RttEstimator
from pkdns.dht.transport import KrpcProtocol
from tests.support.clock import FakeClock


def test_a_fresh_node_resends_to_every_node() -> None:
    """Nothing measured yet (a cold command): copies go to nodes never heard from too."""
    r = Resends(RETRANSMIT, 2.0)
    assert r.offsets(known=False) == r.offsets(known=True) == [0.25, 0.75, 1.75]
    assert Resends(0.0, 2.0).offsets(known=True) == []


def test_copies_to_unknown_nodes_stop_once_known_nodes_answer_first_copies() -> None:
    """Mainline: known nodes answer the first copy, so silence from a node never heard from
    is mostly a node that is gone: no copies for it; known nodes keep theirs."""
    r = Resends(RETRANSMIT, 2.0)
    for _ in range(40):
        r.answered(known=True, rtt=0.05, first_copy=True)
    assert r.loss < LOSSY
    assert r.offsets(known=False) == []
    assert r.offsets(known=True)
    for _ in range(40):                              # now half the round trips fail
        r.answered(known=True, rtt=0.05, first_copy=False)
        r.unanswered(known=True)
    assert r.loss >= LOSSY and r.offsets(known=False)


def test_only_known_nodes_move_the_loss_estimate() -> None:
    """A node never heard from that stays silent is probably gone, not a lost datagram."""
    r = Resends(RETRANSMIT, 2.0)
    before = r.loss
    for _ in range(20):
        r.unanswered(known=False)
        r.answered(known=False, rtt=0.05, first_copy=False)
    assert r.loss == before


def test_the_gap_follows_the_median_round_trip_of_answered_copies() -> None:
    """Each copy has its own tid, so an answer to a resend is a sample too (no Karn's rule):
    a gap shorter than the round trip still learns it. The median, so Mainline's rare
    multi-second answers do not stretch it."""
    r = Resends(RETRANSMIT, 2.0)
    assert r.gap() == RETRANSMIT and r.rtt is None          # nothing measured yet
    r.answered(known=True, rtt=0.15, first_copy=False)     # the copy's answer counts
    assert r.gap() == pytest.approx(0.6)
    for _ in range(40):
        r.answered(known=True, rtt=0.2, first_copy=True)
    r.answered(known=True, rtt=1.9, first_copy=True)        # a straggler
    assert r.gap() == pytest.approx(0.8)


def test_a_fast_link_resends_after_the_floor_not_the_initial_gap() -> None:
    """LAN or loopback: answers in milliseconds; a lost datagram costs MIN_GAP, not 0.25 s."""
    r = Resends(RETRANSMIT, 2.0)
    r.answered(known=True, rtt=0.001, first_copy=True)
    assert r.gap() == MIN_GAP
    assert r.offsets(known=True)[:2] == pytest.approx([MIN_GAP, 3 * MIN_GAP])
    small = Resends(0.05, 2.0)                             # a setting under the floor is kept
    small.answered(known=True, rtt=0.001, first_copy=True)
    assert small.gap() == 0.05


def test_samples_older_than_the_window_are_forgotten() -> None:
    """The route changed (the node moved, the link got slower): the gap follows."""
    r = Resends(RETRANSMIT, 2.0)
    for _ in range(SAMPLES):
        r.answered(known=True, rtt=0.01, first_copy=True)
    for _ in range(SAMPLES // 2 + 1):
        r.answered(known=True, rtt=0.3, first_copy=True)
    assert r.gap() == pytest.approx(1.2)


class _Protocol:
    def __init__(self) -> None:
        self.resend: list[list[float]] = []

    async def request(self, addr: object, query: object, timeout: float,
                      resend: list[float], may_resend: object, on_copy: object) -> None:
        self.resend.append(list(resend))
        return None


async def test_the_asker_sends_copies_by_what_the_node_knows(fake_clock: FakeClock) -> None:
    """Through the node's Asker: once loss measures low, a node never heard from gets its
    query once, a known node with copies."""
    proto = _Protocol()
    rtt = RttEstimator()
    rtt.observe(("192.0.2.1", 1), 0.05)
    asker = Asker(lambda: cast(KrpcProtocol, proto), fake_clock, DhtHealth(0.0), SendPacer(0),
                  2.0, RETRANSMIT, lambda a: None, lambda i, a, t: None, rtt)
    for _ in range(40):
        asker.resends.answered(known=True, rtt=0.05, first_copy=True)
    q = Query(tid=b"", method="get", id=b"\0" * 20, target=b"\1" * 20)
    await asker.ask(("192.0.2.1", 1), q)
    await asker.ask(("192.0.2.2", 1), q)
    assert proto.resend[0] and proto.resend[1] == []
