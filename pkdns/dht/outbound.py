"""What the node sends: one paced, retransmitted query, and the loop that drives a lookup.

Split from :mod:`pkdns.dht.node` (which owns the socket, the incoming side and the routing
table's membership) along the outbound seam: :class:`Asker` turns one query into one reply or
a timeout (per-destination pacing so no libtorrent node bans us, resends on a lossy link,
round-trip smoothing, the asked/answered counters); :func:`drive` runs a pure lookup as
``next_requests -> send -> feed back -> wait for the next wake-up`` (the sans-IO shape of
aioquic's ``transmit()``); :func:`put_all` sends a BEP 44 ``put`` to each chosen node.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from pkdns.clock import Clock
from pkdns.dht.health import DhtHealth
from pkdns.dht.item import MutableItem
from pkdns.dht.krpc import Address, ErrorMessage, Query
from pkdns.dht.lookup import IterativeLookup, PutMutable
from pkdns.dht.pacing import SendPacer
from pkdns.dht.resend import Resends
from pkdns.dht.routing import ip_key
from pkdns.dht.rtt import RttEstimator
from pkdns.dht.transport import KrpcProtocol, Reply

Ask = Callable[[Address, Query], Awaitable[Reply | None]]


RESEND_SHARE = 0.75
"""Resends may go out while a destination has had fewer than this share of its pacing budget."""
ANSWERED_SHARE = 0.25
"""A lookup that already has its answer (it goes on only for a newer packet) may send while a
destination has had fewer than this share of its budget (its resends: this share of
RESEND_SHARE). The rest is kept for lookups still without one: in a small swarm every lookup
asks the same few dozen nodes, and continuations running out their deadline had spent the
budget that the next keys' first answers needed (kernel lab, 100 keys at 50 % loss)."""


class Skipped:
    """What :meth:`Asker.try_ask` returns for a query pacing kept from being sent."""


SKIPPED = Skipped()
Answered = Callable[[], bool]
"""Has the lookup a query is for already found its answer? (asked at every send and resend)"""
TryAsk = Callable[[Address, Query, Answered], Awaitable[Reply | Skipped | None]]


def _unanswered() -> bool:
    return False


class Asker:
    """Sends queries for one node; ``on_failed``/``on_seen`` report to its routing table."""

    def __init__(self, protocol: Callable[[], KrpcProtocol], clock: Clock, health: DhtHealth,
                 pacer: SendPacer, request_timeout: float, retransmit: float,
                 on_failed: Callable[[Address], None],
                 on_seen: Callable[[bytes, Address, float], None],
                 rtt: RttEstimator | None = None) -> None:
        self._protocol = protocol
        self._clock = clock
        self._health = health
        self._pacer = pacer
        self.request_timeout = request_timeout
        self.resends = Resends(retransmit, request_timeout)
        """When unanswered queries are sent again (:mod:`pkdns.dht.resend`)."""
        self._rtt = rtt if rtt is not None else RttEstimator()
        """The node's round trips (shared with its lookups): has ``addr`` answered us before?
        (its silence is then more likely loss); a join's answered hellos are samples too."""
        self._on_failed, self._on_seen = on_failed, on_seen
        self.paced = 0
        """Queries not sent because that destination had had enough from us (SendPacer)."""

    def pace(self, addr: Address, reserve: int = 0) -> bool:
        """May we send to ``addr`` now? (SendPacer; a skip is no fault of the node.)"""
        allowed = self._pacer.allow(ip_key(*addr), self._clock.monotonic(), reserve)
        self.paced += not allowed
        return allowed

    def _reserve(self, share: float) -> int:
        """The part of a destination's budget kept from a send that may use only ``share``."""
        return self._pacer.limit - int(self._pacer.limit * share)

    def may_send(self, addr: Address, answered: bool = False) -> bool:
        """May a first copy go out? A lookup that has its answer gets ANSWERED_SHARE."""
        return self.pace(addr, self._reserve(ANSWERED_SHARE) if answered else 0)

    def may_resend(self, addr: Address, answered: bool = False) -> bool:
        """May a copy of an unanswered query go out again? While the node has had fewer than
        RESEND_SHARE of its budget: resends never take a node's last first sends (those find
        new nodes), but on a lossy link a copy to a close node is worth a first send to a far
        one (kernel lab, 50 % loss: resends held to a quarter of the budget left most of it
        to first sends, and the lookups missed keys an unpaced daemon found)."""
        share = RESEND_SHARE * (ANSWERED_SHARE if answered else 1.0)
        return self.pace(addr, self._reserve(share))

    async def paced_request(self, addr: Address, query: Query, wait: float) -> Reply | None:
        """One datagram out when pacing allows, counted for the health verdict (join's). Its
        answer is a round-trip sample for the resend gap and the lookups' soft timeout: a
        cold command's first lookup queries go out right after the join, and would otherwise
        wait the unmeasured RETRANSMIT before their copies (kernel lab, 30 % loss: a quarter
        second for every lost datagram of the first round) and hold their slots for the
        default soft timeout (:meth:`RttEstimator.soft_timeout`)."""
        if not self.pace(addr):
            return None
        sent = self._clock.monotonic()
        self._health.sent(sent)
        reply = await self._protocol().request(addr, query, wait)
        if reply is not None:
            now = self._clock.monotonic()
            self._health.replied(now)
            # a sample for the gap; hellos stay out of the loss estimate (known=False)
            self.resends.answered(known=False, rtt=now - sent, first_copy=True)
            self._rtt.hello(addr, now - sent)
        return reply

    async def ask(self, addr: Address, query: Query) -> Reply | None:
        """Send one query; None on timeout (counted against the node) or when paced."""
        reply = await self.try_ask(addr, query)
        return None if isinstance(reply, Skipped) else reply

    async def try_ask(self, addr: Address, query: Query,
                      answered: Answered = _unanswered) -> Reply | Skipped | None:
        """:meth:`ask`, telling a query pacing kept back (:data:`SKIPPED`) from a timeout;
        ``answered()`` (asked at each copy) lowers its priority (:data:`ANSWERED_SHARE`)."""
        if not self.may_send(addr, answered()):
            return SKIPPED
        known = self._rtt.node(addr) is not None
        copies: dict[bytes, float] = {}   # tid -> when that copy went out

        def sent_copy(tid: bytes) -> None:  # a tid reused (transport full) keeps its first time
            copies.setdefault(tid, self._clock.monotonic())

        self._health.sent(self._clock.monotonic())
        reply = await self._protocol().request(
            addr, query, self.request_timeout, self.resends.offsets(known),
            lambda: self.may_resend(addr, answered()), sent_copy)
        now = self._clock.monotonic()
        if reply is None:
            self.resends.unanswered(known)
            self._on_failed(addr)
            return None
        self._health.replied(now)
        first = next(iter(copies), reply.tid)
        self.resends.answered(known, now - copies.get(reply.tid, now), reply.tid == first)
        if not isinstance(reply, ErrorMessage):
            self._on_seen(reply.id, addr, now)
        return reply


async def drive(lookup: IterativeLookup, query: Query, ask: TryAsk, clock: Clock,
                on_found: Callable[[float], None],
                on_item: Callable[[MutableItem], None] | None = None,
                keep: set[asyncio.Task[None]] | None = None) -> None:
    """Run ``lookup`` to its end, feeding every reply back; each verified item goes to
    ``on_item`` as it arrives (``on_found`` counts it for the health verdict). The queries
    still out at the end are cancelled, or with ``keep`` go on there until answered or timed
    out (what an answer does beyond the lookup, the asker does: a walk's adds the node)."""
    wake = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def one(addr: Address) -> None:
        reply = await ask(addr, query, lookup.answered)
        now = clock.monotonic()
        if isinstance(reply, Skipped):
            lookup.on_skipped(addr, now)
        elif reply is None:
            lookup.on_timeout(addr, now)
        elif isinstance(reply, ErrorMessage):
            lookup.on_error(addr, reply, now)
        else:
            item = lookup.on_response(addr, reply, now)
            if item is not None:
                on_found(now)
                if on_item is not None:
                    on_item(item)
        wake.set()

    try:
        while True:
            now = clock.monotonic()
            for c in lookup.next_requests(now):
                task = asyncio.create_task(one(c.addr))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if lookup.done(now):
                break
            wake.clear()
            delay = max(0.0, lookup.next_wakeup(now) - now)
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
            # that comes as a reply sets ``wake``, and a lookup cut short ran on to its end
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay + 0.001):
                    await wake.wait()
        if on_item is not None and (held := lookup.finish()) is not None:
            on_item(held)  # an item the lookup held back until it had heard enough
    finally:
        if keep is not None:
            for task in tasks:
                keep.add(task)
                task.add_done_callback(keep.discard)
        else:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def put_all(put: PutMutable, item: MutableItem, own_id: bytes, read_only: bool,
                  ask: Ask, clock: Clock) -> None:
    """Send ``put`` (with each node's token) to every node ``put`` chose, all at once."""
    async def one(addr: Address, token: bytes) -> None:
        q = Query(tid=b"", method="put", id=own_id, token=token, k=item.k, v=item.v,
                  sig=item.sig, seq=item.seq, target=item.target, read_only=read_only)
        reply = await ask(addr, q)
        now = clock.monotonic()
        if reply is None:
            put.on_timeout(addr, now)
        elif isinstance(reply, ErrorMessage):
            put.on_error(addr, reply, now)
        else:
            put.on_response(addr, now)

    await asyncio.gather(*(one(a, t) for a, t in put.next_requests(clock.monotonic())))
