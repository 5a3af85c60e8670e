"""What the exchanges of one forwarder share: the upstreams, their health, the settings, where
query IDs and 0x20 case come from, and where failures are counted.

Pure but for the randomness: :mod:`pkdns.dns.exchange` reads these through :class:`Policy`,
and tests inject a seeded :class:`Entropy` and a recording :class:`Report`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Set as AbstractSet
from typing import Protocol

from pkdns.config import HostPort
from pkdns.dns.health import Health
from pkdns.dns.sockpoll import mix_case, mix_case_with


class Entropy:
    """Query IDs (RFC 5452 §9.1) and 0x20 case from the system CSPRNG; from ``rng`` when one
    is given (tests: reproducible IDs and case)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng
        self._ids = b""
        self._id_at = 0                 # IDs left in _ids: its first _id_at bytes

    def qid(self) -> int:
        """A fresh query ID; the kernel's bytes are read 2 KiB at a time."""
        if self.rng is not None:
            return self.rng.getrandbits(16)
        i = self._id_at
        if i <= 0:
            self._ids, i = os.urandom(2048), 2048
        self._id_at = i - 2
        return (self._ids[i - 2] << 8) | self._ids[i - 1]

    def case(self, question: bytes) -> bytes:
        """``question`` with its letters in random case (:func:`sockpoll.mix_case`)."""
        if self.rng is None:
            return mix_case(question)
        return mix_case_with(question, self.rng.getrandbits(8 * len(question)))


class Report(Protocol):
    """Where an exchange counts what went wrong (metrics and the log; the forwarder)."""

    def fail(self, addr: HostPort, reason: str) -> None:
        """One failed attempt at ``addr`` (or an unwanted datagram from it)."""
        ...

    def spoof_suspected(self, addr: HostPort, question: bytes, why: str, misses: int,
                        now: float) -> None:
        """An attempt at ``addr`` was dropped as spoofed (``why``: "nearmiss", "case")."""
        ...


class Policy:
    """What the exchanges of one forwarder share: the upstreams with their health, the
    settings, where IDs and case come from, and which upstream answered last (``preferred``).

    ``fresh_udp``: after near misses, ask once more on a fresh UDP socket before TCP (off for a
    caller's own packet, whose ID is the caller's). ``edns_fallback``: FORMERR to our OPT
    gets a retry without it (off for a caller's own packet, which we do not rebuild).
    """

    __slots__ = ("upstreams", "servers", "health", "attempt_timeout", "nearmiss_max",
                 "entropy", "use_0x20", "report", "preferred", "fresh_udp", "edns_fallback")

    def __init__(self, upstreams: tuple[HostPort, ...], attempt_timeout: float, health: Health,
                 entropy: Entropy, report: Report, use_0x20: bool = True,
                 nearmiss_max: int = 1) -> None:
        self.upstreams = upstreams
        self.health = health
        self.servers = [health.server(addr) for addr in upstreams]
        self.attempt_timeout = attempt_timeout
        self.nearmiss_max = nearmiss_max    # 0: no limit
        self.entropy, self.report, self.use_0x20 = entropy, report, use_0x20
        self.preferred = 0
        self.fresh_udp = True
        self.edns_fallback = True

    def set_upstreams(self, upstreams: tuple[HostPort, ...]) -> None:
        """A reload's new list (health is kept for the addresses still in it)."""
        if upstreams != self.upstreams:
            self.upstreams = upstreams
            self.servers = [self.health.server(addr) for addr in upstreams]

    def pick(self, tries: int, out: AbstractSet[int], question: bytes, now: float) -> int:
        """The upstream for attempt number ``tries`` at ``question``: round the list from the
        preferred one, skipping those in ``out`` and those down (unless ``question`` may
        probe, :meth:`Health.may_use`); -1 if none is left."""
        n = len(self.upstreams)
        health = self.health
        for k in range(n):
            idx = (self.preferred + tries + k) % n
            if idx not in out and (not health.down
                                   or health.may_use(self.upstreams[idx], question, now)):
                return idx
        return -1
