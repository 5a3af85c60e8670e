"""The node-wide budget of cold pkarr lookups. Pure: pass ``now``.

:class:`LookupBudget`: cold lookups (each one is tens of KRPC queries to strangers) are a cost
to the DHT and to our node's standing with its peers, so the budget belongs to the node, not to
a client address: behind a router every LAN client has the router's address, and as the OS
resolver every program has 127.0.0.1. What does not fit waits briefly, and the waiting room is
shared fairly between clients, so one client asking for many keys cannot starve the others.
:mod:`pkdns.answer.gate` owns its timer and clock.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Admission(enum.Enum):
    """What :meth:`LookupBudget.request` decided."""

    START = "start"        # start the lookup now; call finished() when it ends
    QUEUED = "queued"      # it comes out of release() later (to start, or given up)
    REFUSED = "refused"    # this client already has its share of the waiting room


_WHOLE = 1.0 - 1e-9   # a token refilled to the computed due time, despite float rounding
QUEUE_WAIT = 1.0
"""Longest a lookup waits for the budget: with ``pkarr.lookup_timeout`` (2.5 s) after it the
client still hears from us within the 5 s stub resolvers wait before retrying."""


class LookupBudget(Generic[T]):
    """Node-wide: ``rate`` lookups per second (burst ``burst``; 0: no rate limit) and at most
    ``concurrency`` at once. A lookup that cannot start waits in its client's queue; queues are
    served in turn, one lookup each (round robin), so every client gets an equal share of
    whatever the budget allows. A client may have ``per_client`` lookups waiting (a forwarder,
    being many clients, may fill the whole room); past that: REFUSED. A lookup that could not
    start within ``max_wait`` seconds comes out of :meth:`release` as given up.
    """

    def __init__(self, rate: float, burst: float, concurrency: int, per_client: int,
                 max_wait: float = QUEUE_WAIT, room: int | None = None) -> None:
        self.rate, self.burst = rate, max(burst, 1.0)
        self.concurrency, self.per_client, self.max_wait = concurrency, per_client, max_wait
        self.room = room if room is not None else 4 * concurrency
        self.running = 0
        self.waiting = 0
        self._tokens = self.burst
        self._last: float | None = None
        self._queues: OrderedDict[str, deque[tuple[float, T]]] = OrderedDict()

    def request(self, client: str, item: T, now: float, shared: bool = False) -> Admission:
        """A cold lookup for ``client``: start it now, queue ``item``, or refuse."""
        self._refill(now)
        if not self._queues and self._can_start():
            self._take()
            return Admission.START
        queue = self._queues.get(client)
        limit = self.room if shared else self.per_client
        if self.waiting >= self.room or (queue is not None and len(queue) >= limit):
            return Admission.REFUSED
        if queue is None:
            queue = self._queues[client] = deque()
        queue.append((now + self.max_wait, item))
        self.waiting += 1
        return Admission.QUEUED

    def take(self, now: float) -> bool:
        """Start a background lookup (a stale packet's refresh) only if nobody waits and the
        budget allows it now; it never queues."""
        self._refill(now)
        if self._queues or not self._can_start():
            return False
        self._take()
        return True

    def finished(self) -> None:
        """A started lookup ended: its place is free (call :meth:`release` next)."""
        self.running = max(0, self.running - 1)

    def release(self, now: float) -> tuple[list[T], list[T]]:
        """``(start, given_up)``: waiting items that may start now, one per client in turn,
        and items that waited past ``max_wait``."""
        self._refill(now)
        start: list[T] = []
        while self._queues and self._can_start():
            client, queue = next(iter(self._queues.items()))
            start.append(queue.popleft()[1])
            self._take()
            del self._queues[client]
            if queue:
                self._queues[client] = queue        # to the back of the line
        given_up: list[T] = []
        for client in list(self._queues):
            queue = self._queues[client]
            while queue and queue[0][0] <= now:
                given_up.append(queue.popleft()[1])
            if not queue:
                del self._queues[client]
        self.waiting -= len(start) + len(given_up)
        return start, given_up

    def next_release(self, now: float) -> float | None:
        """When :meth:`release` next has something to do (None: nobody waits, or only a
        :meth:`finished` can free a place, besides the deadlines)."""
        if not self._queues:
            return None
        deadline = min(q[0][0] for q in self._queues.values())
        if self.running >= self.concurrency or not self.rate:
            return deadline
        self._refill(now)
        return min(deadline, now + max(0.0, (1.0 - self._tokens) / self.rate))

    def _can_start(self) -> bool:
        return self.running < self.concurrency and (not self.rate or self._tokens >= _WHOLE)

    def _take(self) -> None:
        self.running += 1
        if self.rate:
            self._tokens -= 1.0

    def _refill(self, now: float) -> None:
        if self._last is not None and self.rate:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
