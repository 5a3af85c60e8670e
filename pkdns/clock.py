"""Time as an injectable dependency.

Pure code takes ``now`` as a parameter; long-lived services take a :class:`Clock`. Monotonic
time drives TTLs, timeouts and rate limits; wall time (µs) is only for pkarr timestamps.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Source of time for services."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    def wall_us(self) -> int:
        """Microseconds since the UNIX epoch."""
        ...


class SystemClock:
    """The real clock.

    ``monotonic`` is the builtin itself, not a method wrapping it: the resolver reads the clock
    several times per query, and the extra Python frame cost more than the clock read.
    """

    monotonic = staticmethod(time.monotonic)

    def wall_us(self) -> int:
        return time.time_ns() // 1000


SYSTEM_CLOCK = SystemClock()
