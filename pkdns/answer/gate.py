"""The asyncio side of the node-wide DHT lookup budget (:class:`pkdns.answer.budget.LookupBudget`).

:class:`~pkdns.answer.source.PkarrSource` asks :meth:`LookupGate.admit` before a cold lookup.
The gate starts it at once, or keeps it waiting and starts it from a loop timer when the budget
has room (a token, a free place), or gives up on it after the budget's ``max_wait``; refreshes of
stale packets only run when nobody waits. The budget is pure; this module owns the timer and
the clock. ``dns.forwarders`` (loopback, configured routers) count as many clients: they may
fill the whole waiting room instead of one client's share.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

from pkdns.answer.budget import Admission, LookupBudget
from pkdns.clock import Clock
from pkdns.config import PkarrConfig
from pkdns.dns.acl import Acl

T = TypeVar("T")
_LATE = 0.001   # past the budget's own due time, so the token has surely refilled


class LookupGate(Generic[T]):
    """Starts items (``start``) when the budget allows, or hands them to ``give_up``."""

    def __init__(self, cfg: PkarrConfig, clock: Clock, start: Callable[[T], None],
                 give_up: Callable[[T], None], forwarders: tuple[str, ...] = ()) -> None:
        self.budget: LookupBudget[T] = LookupBudget(
            cfg.dht_rate_limit, cfg.dht_rate_limit_burst, cfg.max_concurrent_lookups,
            cfg.dht_queue_per_client)
        self.forwarders = Acl(forwarders)
        self._clock, self._start, self._give_up = clock, start, give_up
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0
        self.closed = False

    def admit(self, client: str, item: T) -> Admission:
        """Start ``item`` now (START), later or never (QUEUED: ``start`` or ``give_up`` will
        be called with it), or not at all (REFUSED: the client's share of the room is full)."""
        now = self._clock.monotonic()
        verdict = self.budget.request(client, item, now, self.forwarders.allowed(client))
        if verdict is Admission.START:
            self._start(item)
        elif verdict is Admission.QUEUED:
            self._arm(now)
        return verdict

    def refresh(self, now: float) -> bool:
        """May a background refresh start now? (It takes a token; call :meth:`finished`.)"""
        return self.budget.take(now)

    def finished(self) -> None:
        """A started item ended: its place goes to the next waiting one."""
        self.budget.finished()
        if self.budget.waiting and not self.closed:
            self._pump()

    def close(self) -> None:
        """Start nothing more (shutdown)."""
        self.closed = True
        self._disarm()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _pump(self) -> None:
        self._timer = None
        now = self._clock.monotonic()
        start, given_up = self.budget.release(now)
        for item in given_up:
            self._give_up(item)
        for item in start:
            self._start(item)
        self._arm(now)

    def _arm(self, now: float) -> None:
        due = self.budget.next_release(now)
        if due is None or self.closed:
            self._disarm()
            return
        if self._timer is not None:
            if self._due <= due:
                return
            self._timer.cancel()
        self._due = due
        self._timer = asyncio.get_running_loop().call_later(max(0.0, due - now) + _LATE,
                                                            self._pump)
