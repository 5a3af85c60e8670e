"""Per-IP token buckets for incoming KRPC queries (reliability.md D8). Pure: pass ``now``.

libtorrent bans an IP that sends 50 packets in 10 s; we simply drop queries over the rate,
so a flood from one address costs us a dict lookup and no reply (no amplification). The map
of tracked IPs is bounded; the least recently seen IP is forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict


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
