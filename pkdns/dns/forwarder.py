"""Asking the ICANN upstreams: the forwarder's entry points, settings and counters.

The rules (RFC 5452 hygiene, retransmit and failover, error rcodes, TCP on TC, health, near
misses, 0x20) are the pure :class:`~pkdns.dns.exchange.Exchange`'s, in its module; the sockets,
timers and clock around it are :mod:`pkdns.dns.driver`'s. The forwarder holds what its
exchanges share (:class:`~pkdns.dns.upstreams.Policy`: upstreams, health, IDs and case,
settings a reload changes) and counts what went wrong in ``pkdns_upstream_failures`` and
``pkdns_upstream_spoofing`` (the latter also logged, at most once a second per upstream).

Two entry points share the machinery: :meth:`Forwarder.start` (a cache miss, coalesced one
level up in :mod:`pkdns.dns.fetch`; :meth:`Forwarder.exchange` is it as a coroutine) and
:meth:`Forwarder.query_server` (NS delegation: a caller's complete query to one server).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from pkdns import log
from pkdns.clock import SYSTEM_CLOCK, Clock
from pkdns.config import Config, HostPort, format_hostport
from pkdns.dns import wire
from pkdns.dns.driver import Driver, Run
from pkdns.dns.exchange import Exchange
from pkdns.dns.health import Health
from pkdns.dns.upstreams import Entropy, Policy
from pkdns.errors import UpstreamError
from pkdns.metrics import Metrics

_log = log.get("forwarder")
_SPOOF_LOG_EVERY = 1.0            # seconds between spoofing log lines per upstream


class Forwarder:
    """Sends questions to the configured upstreams; see the module docstring.

    ``upstreams``, ``attempt_timeout``, ``use_0x20`` and ``nearmiss_max`` may be set at any
    time (a reload); exchanges started afterwards use the new values.
    """

    def __init__(self, upstreams: tuple[HostPort, ...], attempt_timeout: float,
                 metrics: Metrics | None = None, rng: random.Random | None = None,
                 use_0x20: bool = True, nearmiss_max: int = 1,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.metrics = metrics
        self.clock = clock
        self.now: Callable[[], float] = clock.monotonic
        self.health = Health()
        self.entropy = Entropy(rng)
        self.policy = Policy(upstreams, attempt_timeout, self.health, self.entropy, self,
                             use_0x20, nearmiss_max)
        self.driver = Driver(self.now, self)
        self._spoof_logged: dict[HostPort, tuple[float, int]] = {}

    live = ("dns.upstream", "dns.upstream_timeout", "dns.upstream_0x20",
            "dns.upstream_nearmiss_max")
    """Options applied on reload (:class:`pkdns.reload.Live`)."""

    def reconfigure(self, old: Config, cfg: Config) -> None:
        """Exchanges started from now on use the new upstreams and attempt rules."""
        dns = cfg.dns
        self.upstreams, self.attempt_timeout = dns.upstream, dns.upstream_timeout
        self.use_0x20, self.nearmiss_max = dns.upstream_0x20, dns.upstream_nearmiss_max

    @property
    def upstreams(self) -> tuple[HostPort, ...]:
        return self.policy.upstreams

    @upstreams.setter
    def upstreams(self, value: tuple[HostPort, ...]) -> None:
        self.policy.set_upstreams(value)

    @property
    def attempt_timeout(self) -> float:
        return self.policy.attempt_timeout

    @attempt_timeout.setter
    def attempt_timeout(self, value: float) -> None:
        self.policy.attempt_timeout = value

    @property
    def use_0x20(self) -> bool:
        return self.policy.use_0x20

    @use_0x20.setter
    def use_0x20(self, value: bool) -> None:
        self.policy.use_0x20 = value

    @property
    def nearmiss_max(self) -> int:
        return self.policy.nearmiss_max

    @nearmiss_max.setter
    def nearmiss_max(self, value: int) -> None:
        self.policy.nearmiss_max = value

    @property
    def sent(self) -> int:
        """Datagrams sent upstream so far."""
        return self.driver.sent

    @property
    def preferred(self) -> int:
        """The upstream the next exchange tries first (the one that answered last)."""
        return self.policy.preferred

    @preferred.setter
    def preferred(self, value: int) -> None:
        self.policy.preferred = value

    def start(self, question: bytes, do: bool, cd: bool, budget: float,
              on_done: Callable[[bytes | None], None]) -> Run:
        """Begin an exchange for ``question`` (lowercased wire qname + qtype + qclass) that
        ends within ``budget`` seconds.

        ``on_done(reply)`` is called exactly once, from the event loop: a usable reply, the
        last error-rcode reply when every upstream answered with one, or None.
        ``.cancel()`` on the result stops it without a call.
        """
        now = self.now()
        return self.driver.run(Exchange(self.policy, question, do, cd, now + budget), now, on_done)

    async def exchange(self, question: bytes, do: bool, cd: bool, budget: float) -> bytes:
        """:meth:`start` as a coroutine; raises UpstreamError when no upstream answered."""
        now = self.now()
        reply = await self.driver.wait(Exchange(self.policy, question, do, cd, now + budget), now)
        if reply is None:
            raise UpstreamError("no upstream answered in time")
        return reply

    async def query_server(self, addr: HostPort, packet: bytes, timeout: float) -> bytes:
        """Send a complete query to one server (NS delegation) and return its reply.

        The same exchange as for the upstreams, with ``addr`` the only server: ``packet``
        goes out as it is (its ID, flags, case and EDNS), a reply in any case is taken, TC=1
        or near misses go to TCP with a fresh ID, all within ``timeout``. The server's
        health is this call's alone (a delegated server is not an upstream).
        """
        name_end = wire.skip_name(packet, 12)
        question = packet[12:name_end].lower() + packet[name_end:name_end + 4]
        policy = Policy((addr,), timeout, Health(), self.entropy, self, False,
                        self.policy.nearmiss_max)
        policy.fresh_udp = policy.edns_fallback = False
        now = self.now()
        reply = await self.driver.wait(Exchange(policy, question, False, False, now + timeout,
                                          packet), now)
        if reply is None:
            raise UpstreamError(f"no reply from {format_hostport(addr)} in time")
        return reply

    # ------------------------------------------------- the exchange's Report

    def fail(self, addr: HostPort, reason: str) -> None:
        """Count one failed attempt (or an unwanted datagram) against ``addr``."""
        if self.metrics is not None:
            self.metrics.upstream_failures.labels(format_hostport(addr), reason).inc()

    def spoof_suspected(self, addr: HostPort, question: bytes, why: str, misses: int,
                        now: float) -> None:
        """An attempt to ``addr`` was dropped as spoofed (``why``: "nearmiss", "case").
        Counted always; logged at most once a second per upstream, with the count since."""
        if self.metrics is not None:
            self.metrics.upstream_spoofing.labels(format_hostport(addr), why).inc()
        last, count = self._spoof_logged.get(addr, (-_SPOOF_LOG_EVERY, 0))
        if now - last < _SPOOF_LOG_EVERY:
            self._spoof_logged[addr] = (last, count + 1)
            return
        self._spoof_logged[addr] = (now, 0)
        _log.warning("upstream_spoofing_suspected", upstream=format_hostport(addr),
                     qname=wire.name_text(question[:-4]), reason=why, near_misses=misses,
                     dropped_since_last_log=count + 1)
