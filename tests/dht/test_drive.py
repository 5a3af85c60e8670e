"""The lookup driver (``pkdns.dht.outbound.drive``) stops when its task is cancelled, even when
a reply woke it at that moment.

A resolve cuts its lookup short (the grace after the first packet, or nodes agreeing) by
cancelling the task that drives it. ``asyncio.wait_for`` (Python 3.11) returns the awaited
result instead of raising when the cancellation arrives just as that result is ready, and the
driver then went on until the lookup ended by itself: traced in the kernel lab, a cold
``pkdns resolve`` that had the newest packet after 4 ms printed it after 4.6 s.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from pkdns.dht.ids import make_node_id
from pkdns.dht.krpc import Address, Query, Response
from pkdns.dht.lookup import IterativeLookup
from pkdns.dht.outbound import Answered, Skipped, drive
from pkdns.dht.transport import Reply
from tests.support.clock import FakeClock

RNG = random.Random(5)
TARGET = make_node_id(RNG)
NODES = [(make_node_id(RNG), (f"10.0.{i}.1", 6881)) for i in range(3)]


@pytest.mark.parametrize("turns", range(6))
async def test_a_cancel_that_meets_a_reply_stops_the_lookup(turns: int) -> None:
    """A reply comes in, and ``turns`` loop iterations later the lookup is cancelled: every
    timing must end the driver at once (with ``wait_for``, 0-2 turns did not)."""
    replies: dict[Address, asyncio.Future[Reply | None]] = {}
    ids = dict((addr, nid) for nid, addr in NODES)

    async def ask(addr: Address, query: Query, answered: Answered) -> Reply | Skipped | None:
        replies[addr] = asyncio.get_running_loop().create_future()
        return await replies[addr]

    lookup = IterativeLookup(TARGET, NODES, 0.0, timeout=30.0)
    query = Query(tid=b"", method="find_node", id=make_node_id(RNG), target=TARGET)
    task = asyncio.create_task(drive(lookup, query, ask, FakeClock(0.0), lambda now: None))
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(replies) == 3  # every node asked; the driver waits for a reply
    first = NODES[0][1]
    replies[first].set_result(Response(tid=b"", id=ids[first]))
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait({task}, timeout=1.0)
    assert task.done() and task.cancelled()
