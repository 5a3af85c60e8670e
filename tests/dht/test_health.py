"""DHT reachability (pkdns/dht/health.py): silent for long enough and many enough queries is
unreachable, one reply is reachable again; and a real node whose every query goes nowhere
says so (as on a host whose firewall drops UDP)."""

from __future__ import annotations

import socket

from pkdns.dht.health import DhtHealth
from pkdns.dht.node import DhtNode


def test_silence_needs_both_many_queries_and_time() -> None:
    h = DhtHealth(100.0)
    for i in range(20):
        h.sent(100.0 + i * 0.1)
    assert h.reachable(101.9)               # 20 unanswered, but only 1.9 s
    assert not h.reachable(103.1)
    snap = h.snapshot(103.1)
    assert (snap.asked, snap.answered, snap.answered_ratio) == (20, 0, 0.0)
    assert snap.last_reply_age is None and snap.unanswered_in_a_row == 20
    h.replied(104.0)
    assert h.reachable(104.0) and h.snapshot(104.0).unanswered_in_a_row == 0
    h2 = DhtHealth(0.0)
    h2.sent(0.0)
    assert h2.reachable(100.0)              # one lost query is not a blocked network


def test_ratio_and_last_found_over_the_window() -> None:
    h = DhtHealth(0.0, window=60.0)
    for t in range(10):
        h.sent(float(t))
    for t in range(5):
        h.replied(float(t) + 0.1)
    h.found(4.5)
    snap = h.snapshot(10.0)
    assert snap.answered_ratio == 0.5 and snap.last_found_age == 5.5
    assert h.snapshot(70.0).asked == 0      # outside the window
    assert snap.as_dict()["reachable"] is True


async def test_a_node_that_hears_nothing_reports_unreachable() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:  # black holes
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        node = DhtNode(mode="client", request_timeout=0.5)
        await node.start("127.0.0.1", 0)
        try:
            assert node.reachable()
            # two bootstrap hosts, five hellos each in 3.5 s
            assert not await node.join([a.getsockname(), b.getsockname()], timeout=3.5)
            assert not node.reachable()
            snap = node.health_snapshot()
            assert snap["reachable"] is False and snap["answered"] == 0
            assert isinstance(snap["asked"], int) and snap["asked"] >= 8
        finally:
            await node.close()
