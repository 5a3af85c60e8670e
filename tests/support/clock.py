"""A fake clock tests advance by hand (no sleeps), and an event loop in virtual time."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sized
from typing import Any, TypeVar

T = TypeVar("T")


class FakeClock:
    """Monotonic and wall time that only move when told to."""

    def __init__(self, start: float = 1000.0, wall_us: int = 1_700_000_000_000_000) -> None:
        self.now = start
        self._wall_us = wall_us

    def monotonic(self) -> float:
        return self.now

    def wall_us(self) -> int:
        return self._wall_us + int((self.now - 1000.0) * 1_000_000)

    def advance(self, seconds: float) -> None:
        self.now += seconds


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer whenever nothing is ready to run.

    ``asyncio.sleep`` and every wait's timeout then take no real time, and ``loop.time()``
    says exactly when each step happened: a test of a resend schedule asserts the schedule
    itself, not how late a loaded machine ran it. Only for code whose every wait is a loop
    timer or a future another task sets (no threads, no sockets: time would jump past a
    datagram in flight).
    """

    def __init__(self) -> None:
        super().__init__()
        self._virtual = 0.0

    def time(self) -> float:
        return self._virtual

    def _run_once(self) -> None:
        ready: Sized = getattr(self, "_ready")  # noqa: B009  (asyncio's own queues)
        timers: list[asyncio.TimerHandle] = getattr(self, "_scheduled")  # noqa: B009
        if not len(ready) and timers:
            self._virtual = max(self._virtual, timers[0].when())
        getattr(super(), "_run_once")()  # noqa: B009


def run_in_virtual_time(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end on a fresh :class:`VirtualTimeLoop`."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.close()
