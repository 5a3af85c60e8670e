"""Per-client token buckets: one stranger cannot take the resolver from the others.

Each client IP (IPv6 keyed on its /64, since one host owns a whole /64) gets ``burst`` tokens,
refilled at ``rate`` per second. Over the limit, UDP drops the query but lets every second one
through as an empty TC=1 reply ("slip 2", as BIND RRL and kresd), so a real client behind a
spoofed flood can still retry over TCP; TCP and DoH answer REFUSED (their source cannot be
spoofed). The table is bounded: when it is full, buckets that have refilled are forgotten.

Some addresses are many clients, not one (``dns.forwarders``): loopback is the host itself (the
OS stub resolver, systemd-resolved, a dnsmasq on the same router: every program on the machine
arrives from 127.0.0.1), and a router or resolver that forwards to us sends every client it
serves from its own address. A per-client limit on them throttles everyone at once, and their
address cannot be spoofed from outside (the kernel drops loopback sources arriving on other
interfaces), so they are not limited here; the node-wide DHT budget still applies to them.
Pure: callers pass ``now``.
"""

from __future__ import annotations

import ipaddress
from enum import Enum

from pkdns.dns.acl import Acl

MAX_CLIENTS = 100_000


class Verdict(Enum):
    """What to do with one query."""

    PASS = "pass"
    DROP = "drop"
    SLIP = "slip"        # answer with an empty TC=1 reply (UDP only)


class RateLimiter:
    """Token bucket per client key; ``rate`` 0 disables it; ``shared`` networks (forwarders,
    loopback) are not limited."""

    def __init__(self, rate: float, burst: float, max_clients: int = MAX_CLIENTS,
                 shared: tuple[str, ...] = ()) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.max_clients = max_clients
        self.shared = Acl(shared)
        self._buckets: dict[str, list[float]] = {}     # key -> [tokens, last update, limited]

    def check(self, ip: str, now: float) -> Verdict:
        """Take one token for ``ip``; over the limit, alternate DROP and SLIP."""
        if not self.rate or self.shared.allowed(ip):
            return Verdict.PASS
        key = _key(ip)
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_clients:
                self._prune(now)
            b = self._buckets[key] = [self.burst, now, 0.0]
        tokens = min(self.burst, b[0] + (now - b[1]) * self.rate)
        b[1] = now
        if tokens >= 1.0:
            b[0] = tokens - 1.0
            return Verdict.PASS
        b[0] = tokens
        b[2] += 1
        return Verdict.SLIP if b[2] % 2 == 0 else Verdict.DROP

    def refill_in(self, ip: str, now: float) -> float:
        """Seconds until ``ip`` has a whole token again (0: it has one now). The UDP listener
        uses it to drop that address's datagrams before reading them into Python."""
        b = self._buckets.get(_key(ip))
        if b is None or not self.rate:
            return 0.0
        tokens = b[0] + (now - b[1]) * self.rate
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        """Forget full buckets (they behave exactly like new ones); else the oldest half."""
        full = [k for k, b in self._buckets.items()
                if b[0] + (now - b[1]) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_clients:
            for k in list(self._buckets)[: self.max_clients // 2]:
                del self._buckets[k]


def _key(ip: str) -> str:
    if ":" not in ip:
        return ip
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    try:
        net = ipaddress.IPv6Network((ip.split("%", 1)[0], 64), strict=False)
    except ValueError:
        return ip
    return str(net.network_address)
