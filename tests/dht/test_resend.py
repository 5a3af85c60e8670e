"""The resend schedule (pkdns.dht.resend): copies to nodes never heard from only on a lossy
link, Karn's rule for the round trip."""

from __future__ import annotations

from typing import cast

from pkdns.dht.health import DhtHealth
from pkdns.dht.krpc import Query
from pkdns.dht.outbound import Asker
from pkdns.dht.pacing import SendPacer
from pkdns.dht.resend import LOSSY, RETRANSMIT, Resends
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
        r.answered(known=True, elapsed=0.05, gap=r.gap())
    assert r.loss < LOSSY
    assert r.offsets(known=False) == []
    assert r.offsets(known=True)
    for _ in range(40):                              # now half the round trips fail
        r.answered(known=True, elapsed=0.8, gap=r.gap())
        r.unanswered(known=True)
    assert r.loss >= LOSSY and r.offsets(known=False)


def test_only_known_nodes_move_the_loss_estimate() -> None:
    """A node never heard from that stays silent is probably gone, not a lost datagram."""
    r = Resends(RETRANSMIT, 2.0)
    before = r.loss
    for _ in range(20):
        r.unanswered(known=False)
        r.answered(known=False, elapsed=0.05, gap=r.gap())
    assert r.loss == before


def test_karn_only_answers_before_the_first_copy_move_the_round_trip() -> None:
    r = Resends(RETRANSMIT, 2.0)
    start = r.srtt
    r.answered(known=True, elapsed=0.9, gap=0.25)     # maybe the copy's answer: no sample
    assert r.srtt == start
    for _ in range(50):
        r.answered(known=True, elapsed=0.2, gap=0.25)
    assert abs(r.srtt - 0.2) < 0.01 and r.gap() == max(RETRANSMIT, 4 * r.srtt)


class _Protocol:
    def __init__(self) -> None:
        self.resend: list[list[float]] = []

    async def request(self, addr: object, query: object, timeout: float,
                      resend: list[float], may_resend: object) -> None:
        self.resend.append(list(resend))
        return None


async def test_the_asker_sends_copies_by_what_the_node_knows(fake_clock: FakeClock) -> None:
    """Through the node's Asker: once loss measures low, a node never heard from gets its
    query once, a known node with copies."""
    proto = _Protocol()
    known = {("192.0.2.1", 1)}
    asker = Asker(lambda: cast(KrpcProtocol, proto), fake_clock, DhtHealth(0.0), SendPacer(0),
                  2.0, RETRANSMIT, lambda a: None, lambda i, a, t: None, known.__contains__)
    for _ in range(40):
        asker.resends.answered(known=True, elapsed=0.05, gap=asker.resends.gap())
    q = Query(tid=b"", method="get", id=b"\0" * 20, target=b"\1" * 20)
    await asker.ask(("192.0.2.1", 1), q)
    await asker.ask(("192.0.2.2", 1), q)
    assert proto.resend[0] and proto.resend[1] == []
