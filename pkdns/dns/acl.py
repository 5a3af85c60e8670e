"""Who may use the resolver: an allow-list of networks, everyone else gets REFUSED.

The default (``dns.allow``) is loopback + RFC 1918 + CGNAT + link-local + ULA, like PowerDNS's
``allow_from``: an open resolver is an amplification tool. Decisions are
memoised per address string because the check runs for every datagram, before any parsing.
"""

from __future__ import annotations

import ipaddress

_MEMO_MAX = 65536


class Acl:
    """``allowed(ip)`` is True when ``ip`` falls inside one of the configured networks."""

    def __init__(self, networks: tuple[str, ...]) -> None:
        self._v4 = [n for n in map(_network, networks) if n.version == 4]
        self._v6 = [n for n in map(_network, networks) if n.version == 6]
        self._memo: dict[str, bool] = {}

    def allowed(self, ip: str) -> bool:
        """Is ``ip`` (textual, maybe with a %scope) allowed? Unparseable addresses are not."""
        ok = self._memo.get(ip)
        if ok is None:
            ok = self._check(ip)
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[ip] = ok
        return ok

    def _check(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        nets = self._v4 if addr.version == 4 else self._v6
        return any(addr in n for n in nets)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text, strict=False)
