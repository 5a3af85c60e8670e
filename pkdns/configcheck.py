"""Checks on a finished :class:`pkdns.config.Config`: ranges of numeric options and how options
fit together, whether it came from a file, flags or both (:mod:`pkdns.configfile` turns the
first problem into an error naming the file, line and dotted key).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from pkdns.config import DEFAULT_ALLOW, Config, format_hostport
from pkdns.errors import PkdnsError
from pkdns.hostport import is_ip_text
from pkdns.pkarr.keys import PublicKey

Problem = tuple[str | None, str, str, int]
"""Section (None: top level), key, what is wrong, which ``[[zones]]`` table (else 0)."""


def problems(cfg: Config) -> list[Problem]:
    """Everything wrong with ``cfg``, in the order the errors are reported."""
    out: list[Problem] = []
    for ok, name, msg in _checks(cfg):
        if not ok:
            section, _, key = name.rpartition(".")
            out.append((section or None, key, msg, 0))
    return out + _rebind_allow(cfg) + _zones(cfg)


# Floors for numeric options: a zero or tiny value there is a typo, not a choice (a 0 s TCP
# timeout, no room for one forwarded query or one cached packet). The type check already
# refuses negatives; options in none of these tables accept 0 with the meaning ZERO_MEANS
# gives (tests check that every numeric option is in exactly one of them).
POSITIVE = (
    "dns.upstream_timeout", "dns.query_deadline", "dns.tcp_idle_timeout",
    "dns.tcp_initial_timeout", "cache.stale_client_timeout", "pkarr.lookup_timeout",
    "dht.request_timeout", "republish.ip_echo_timeout", "gateway.origin_timeout",
    "gateway.handshake_timeout", "gateway.idle_timeout",
)
AT_LEAST: dict[str, int] = {
    "dns.max_inflight": 1, "dns.tcp_max_connections": 1, "dns.tcp_max_per_ip": 1,
    "dns.rate_limit_burst": 1,
    "cache.max_bytes": 65536,             # one largest (TCP) answer
    "cache.max_ttl": 1, "cache.negative_max_ttl": 1, "cache.stale_answer_ttl": 1,
    "pkarr.min_ttl": 1, "pkarr.max_ttl": 1, "pkarr.negative_ttl": 1,
    "pkarr.max_concurrent_lookups": 1, "pkarr.dht_rate_limit_burst": 1,
    "pkarr.dht_queue_per_client": 1,
    "pkarr.packet_cache_size": 1, "pkarr.max_recursion_depth": 1,
    "dht.max_stored_items": 1,
    "dht.max_stored_bytes": 4096,         # a few BEP 44 items (1000-byte values)
    "http.relay_rate_limit_burst": 1,
    "republish.popular_min_queries": 1, "republish.popular_budget_per_hour": 1,
    "republish.republish_after": 60, "republish.retry_after": 10, "republish.min_stored": 1,
    "state.max_nodes": 1, "state.packet_max_age": 60, "gateway.max_connections": 1,
}
RANGES: dict[str, tuple[int, int]] = {
    "dns.udp_payload_max": (512, 65535), "pkarr.ns_port": (1, 65535),
    "state.max_packets": (1, 1_000_000), "gateway.origin_port": (1, 65535),
}
# Where 0 is allowed, and what it means (config.example.toml says the same).
ZERO_MEANS = {
    "dns.rate_limit": "no limit", "pkarr.dht_rate_limit": "no limit",
    "dns.upstream_nearmiss_max": "no limit",
    "dht.request_rate_limit": "no limit", "http.relay_rate_limit": "no limit",
    "dht.pace_limit": "unpaced",
    "dht.port": "any free port", "cache.min_ttl": "no lower clamp",
    "cache.stale_max_age": "never past expiry", "pkarr.stale_max_age": "never past expiry",
    "pkarr.first_answer_window": "answer with the first packet",
    "state.save_interval": "save only at shutdown",
    "republish.ip_check_interval": "look only when the zone is republished",
}


def _checks(cfg: Config) -> list[tuple[bool, str, str]]:
    out = [(_get(cfg, name) > 0, name, "must be > 0") for name in POSITIVE]
    out += [(_get(cfg, name) >= low, name, f"must be >= {low}") for name, low in AT_LEAST.items()]
    out += [(low <= _get(cfg, name) <= high, name, f"must be {low}..{high}")
            for name, (low, high) in RANGES.items()]
    return out + [
        (cfg.dns.upstream_timeout <= cfg.dns.query_deadline, "dns.upstream_timeout",
         "must be <= dns.query_deadline"),
        (cfg.cache.min_ttl <= cfg.cache.max_ttl, "cache.min_ttl", "must be <= cache.max_ttl"),
        (cfg.pkarr.min_ttl <= cfg.pkarr.max_ttl, "pkarr.min_ttl", "must be <= pkarr.max_ttl"),
        (cfg.pkarr.first_answer_window < cfg.pkarr.lookup_timeout, "pkarr.first_answer_window",
         "must be < pkarr.lookup_timeout"),
        (cfg.dht.port <= 65535, "dht.port", "must be 0..65535"),
        (cfg.state.save_interval == 0 or cfg.state.save_interval >= 10, "state.save_interval",
         "must be 0 (only at shutdown) or >= 10"),
        (cfg.republish.ip_check_interval == 0 or cfg.republish.ip_check_interval >= 10,
         "republish.ip_check_interval", "must be 0 (only at each interval) or >= 10"),
        (is_ip_text(cfg.dht.bind), "dht.bind", f"not an IP address: {cfg.dht.bind!r}"),
        (bool(cfg.dns.upstream) or cfg.testnet, "dns.upstream", "needs at least one server"),
        *((all(is_ip_text(h) for h, _ in _get(cfg, name)), name, "host names are not allowed here")
          for name in ("dns.listen", "dns.upstream", "http.listen")),
        (all(p > 0 for _, p in cfg.dns.upstream), "dns.upstream", "port 0 is not a server"),
        (re.fullmatch(r"([a-z0-9-]{1,63})?", cfg.pkarr.tld_suffix) is not None,
         "pkarr.tld_suffix", "must be one lowercase DNS label or \"\""),
        (cfg.state_dir != "", "state_dir", "must not be empty"),
        *_gateway_checks(cfg),
    ]


def _rebind_allow(cfg: Config) -> list[Problem]:
    """``pkarr.rebind_allow`` holds public keys, ``dns.rebind_allow`` domain names."""
    out: list[Problem] = []
    for entry in cfg.pkarr.rebind_allow:
        try:
            PublicKey.parse(entry)
        except PkdnsError as exc:
            out.append(("pkarr", "rebind_allow", str(exc), 0))
    out += [("dns", "rebind_allow", f"not a domain name: {entry!r}", 0)
            for entry in cfg.dns.rebind_allow
            if not re.fullmatch(r"\.?([a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}\.?", entry.lower())]
    return out


def _zones(cfg: Config) -> list[Problem]:
    out: list[Problem] = []
    for i, z in enumerate(cfg.zones):
        if z.interval < 60:
            out.append(("zones", "interval", f"must be >= 60 seconds (zone {z.zone})", i))
        out += [("zones", key, "must be a file path", i) for key in ("seed", "zone")
                if not getattr(z, key)]
    return out


# The networks an ACL may name without opening a listener to the whole internet.
_WIDEST = {4: 8, 6: 16}     # prefix lengths: 0.0.0.0/0, ::/0 and the like are "no ACL"


def _gateway_checks(cfg: Config) -> list[tuple[bool, str, str]]:
    """A gateway on a public address must have an ACL (it relays anyone's TLS otherwise)."""
    g = cfg.gateway
    public = [format_hostport(a) for a in (*g.listen, *g.http_listen) if _public(a[0])]
    wide = [n for n in g.allow if _wide(ipaddress.ip_network(n, strict=False))]
    return [
        (all(is_ip_text(a) for a in g.answer), "gateway.answer", "must be IP addresses"),
        (not g.enabled or bool(g.answer) or not any(
            ipaddress.ip_address(h).is_unspecified for h, _ in g.listen), "gateway.answer",
         "must name the gateway's address when gateway.listen is 0.0.0.0 or ::"),
        (not g.enabled or not public or not wide, "gateway.allow",
         f"the gateway listens on public address {', '.join(public)} but allow admits "
         f"{', '.join(wide)}: name the networks that may use it"),
        (not g.enabled or cfg.pkarr.tld_suffix == "key", "pkarr.tld_suffix",
         "the gateway needs \"key\" (its CA can only sign .key names)"),
        (not g.enabled or bool(g.listen), "gateway.listen", "needs at least one address"),
    ]


_PRIVATE = tuple(ipaddress.ip_network(n) for n in DEFAULT_ALLOW)


def _public(host: str) -> bool:
    """Unspecified (every interface) or outside the loopback/private/link-local ranges."""
    ip = ipaddress.ip_address(host)
    return ip.is_unspecified or not any(ip in net for net in _PRIVATE if net.version == ip.version)


def _wide(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """A network reaching far beyond private ranges: e.g. 0.0.0.0/0, ::/0, 0.0.0.0/1."""
    private = any(net.version == p.version and net.subnet_of(p) for p in _PRIVATE)  # type: ignore[arg-type]
    return not private and net.prefixlen < _WIDEST[net.version]


def _get(cfg: Config, dotted: str) -> Any:
    section, _, key = dotted.partition(".")
    return getattr(getattr(cfg, section), key)


__all__ = ["AT_LEAST", "POSITIVE", "RANGES", "ZERO_MEANS", "Problem", "problems"]
