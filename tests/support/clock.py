"""A fake clock tests advance by hand (no sleeps)."""

from __future__ import annotations


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
