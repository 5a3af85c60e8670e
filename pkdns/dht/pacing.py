"""Limits on what others ask of our DHT node and what we send to any one node. Pure: pass
``now``.

Incoming: libtorrent bans an IP that sends 50 packets in 10 s; we simply drop queries over the
rate, so a flood from one address costs us a dict lookup and no reply (no amplification).
Outgoing: the same libtorrent blocker would ban *us* for 5 minutes (``dos_blocker.cpp``), so
:class:`SendPacer` keeps our queries to any one destination under that. The maps of tracked
IPs are bounded; the least recently used IP is forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict, deque


class PerIpLimiter:
    """``rate`` queries per second per IP with a burst of ``burst``."""

    def __init__(self, rate: float, burst: float | None = None, max_ips: int = 4096) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate * 5)
        self.max_ips = max_ips
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, ip: str, now: float) -> bool:
        if self.rate <= 0:
            return True
        tokens, last = self._buckets.pop(ip, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[ip] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self.max_ips:
            self._buckets.popitem(last=False)
        return allowed


PACE_WINDOW = 10.0
PACE_LIMIT = 40
"""Queries per destination per 10 s: libtorrent's blocker bans at 50 packets; the other 10 are
room for our replies to that node's own queries (server mode)."""


class SendPacer:
    """At most ``limit`` queries to one destination in any ``window`` seconds (sliding).

    The caller skips a query that is not allowed (a lookup treats it as a timeout and moves
    on to other nodes): waiting would only stall the lookup behind a node we already asked a
    lot. ``limit=0`` disables pacing.
    """

    def __init__(self, limit: int = PACE_LIMIT, window: float = PACE_WINDOW,
                 max_destinations: int = 4096) -> None:
        self.limit, self.window = limit, window
        self.max_destinations = max_destinations
        self._sent: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, destination: str, now: float, reserve: int = 0) -> bool:
        """Record a send to ``destination`` and return True, or False if it would exceed
        (or leave fewer than ``reserve`` sends: a retransmission leaves some of the budget to
        first sends)."""
        if self.limit <= 0:
            return True
        times = self._sent.pop(destination, None) or deque()
        while times and now - times[0] >= self.window:
            times.popleft()
        allowed = len(times) < self.limit - reserve
        if allowed:
            times.append(now)
        self._sent[destination] = times
        if len(self._sent) > self.max_destinations:
            self._sent.popitem(last=False)
        return allowed
