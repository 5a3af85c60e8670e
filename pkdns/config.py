"""Configuration: TOML file + command-line flags -> frozen dataclasses.

Every option has a default here; ``config.example.toml`` documents the same values (a test
asserts the example parses to exactly these defaults). Unknown keys and bad values raise
:class:`ConfigError` naming the key, the file and the line (the TOML reader lives in
:mod:`pkdns.configfile`, which imports this module: ``configfile.parse``/``load``/``validate``).

Addresses are ``host:port`` strings (``[v6]:port`` for IPv6); they are parsed to
``(host, port)`` tuples (by :mod:`pkdns.hostport`, re-exported here) so the rest of the code
never splits strings.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from pkdns.hostport import (
    DNS_PORT,
    HostPort,
    format_hostport,
    parse_hostport,
    parse_ip_hostport,
)

DEFAULT_BOOTSTRAP = (
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "dht.libtorrent.org:25401",
    "router.utorrent.com:6881",
)
DEFAULT_ALLOW = (
    "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
    "169.254.0.0/16", "100.64.0.0/10", "fc00::/7", "fe80::/10",
)
DEFAULT_FORWARDERS = ("127.0.0.0/8", "::1/128")   # loopback: the host's own programs
DEFAULT_IP_ECHO_V4 = (
    "https://ipv4.icanhazip.com", "https://v4.ident.me", "https://api.ipify.org",
)
DEFAULT_IP_ECHO_V6 = ("https://ipv6.icanhazip.com", "https://v6.ident.me", "https://api6.ipify.org")


@dataclass(frozen=True, slots=True)
class LogConfig:
    """``[log]``: structlog level and renderer (``auto``: console on a TTY, JSON lines else)."""

    level: str = "info"           # debug | info | warning | error
    format: str = "auto"          # auto | json | console


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """``[dns]``: the listeners, the ICANN upstreams and the abuse limits in front of both
    (ACL, per-IP rate limit, TCP connection caps)."""

    listen: tuple[HostPort, ...] = (("127.0.0.1", 53), ("::1", 53))
    upstream: tuple[HostPort, ...] = (("1.1.1.1", 53), ("8.8.8.8", 53))
    upstream_timeout: float = 1.0         # seconds per attempt, then the next upstream
    query_deadline: float = 3.0           # total budget per query, then SERVFAIL
    upstream_0x20: bool = True            # random letter case in upstream queries (0x20)
    upstream_nearmiss_max: int = 1        # wrong-ID replies per upstream query before retrying
    max_inflight: int = 1024              # forwarded queries in flight (BIND: 1000 clients)
    udp_payload_max: int = 1232           # our EDNS buffer size cap (DNS flag day 2020)
    tcp_idle_timeout: float = 10.0        # RFC 7766 §6.2.3
    tcp_initial_timeout: float = 5.0      # accept -> first complete query of a connection
    tcp_max_connections: int = 256        # then the oldest idle one is evicted
    tcp_max_per_ip: int = 32
    allow: tuple[str, ...] = DEFAULT_ALLOW   # ACL: everyone else gets REFUSED
    rate_limit: float = 100.0             # queries/s per client IP, 0 disables (as pkdns 0.7)
    rate_limit_burst: float = 200.0
    forwarders: tuple[str, ...] = DEFAULT_FORWARDERS  # many clients in one: not rate limited
    any_minimal: bool = True              # RFC 8482: ANY -> TC=1 over UDP, HINFO over TCP/DoH
    rebind_protection: bool = False       # drop private/loopback addresses from ICANN answers
    rebind_allow: tuple[str, ...] = ()    # ICANN domains exempt from it (e.g. "lan")


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """``[cache]``: the wire-format answer cache: byte budget, TTL clamps, negative caching
    (RFC 2308) and serving stale answers when upstreams fail or are slow (RFC 8767)."""

    max_bytes: int = 32 * 1024 * 1024     # wire bytes of cached answers
    min_ttl: int = 0
    max_ttl: int = 86400
    negative_max_ttl: int = 3600          # RFC 2308 §5
    serve_stale: bool = True              # RFC 8767
    stale_max_age: int = 86400            # how long past expiry an answer may be served
    stale_answer_ttl: int = 30            # RFC 8767 §4
    stale_client_timeout: float = 1.8     # answer stale if upstream is slower than this


@dataclass(frozen=True, slots=True)
class PkarrConfig:
    """``[pkarr]``: public-key names: freshness of signed packets, DHT lookup deadlines and
    limits (one lookup per key, bounded per client), relays, CNAME/NS recursion budget."""

    tld_suffix: str = "key"               # "" disables <key>.<suffix>
    min_ttl: int = 60
    max_ttl: int = 86400
    stale_max_age: int = 86400
    negative_ttl: int = 60
    relays: tuple[str, ...] = ()
    lookup_timeout: float = 2.5           # SERVFAIL before the client's 3 s
    first_answer_window: float = 0.15     # wait this long after the first packet for newer ones
    max_concurrent_lookups: int = 64
    dht_rate_limit: float = 20.0          # cold DHT lookups per second, the whole node
    dht_rate_limit_burst: float = 100.0
    dht_queue_per_client: int = 32        # lookups one client may have waiting (fair share)
    packet_cache_size: int = 10000        # signed packets kept
    max_recursion_depth: int = 8          # CNAME/NS hops
    ns_port: int = 53                     # port asked on servers a pkarr zone delegates to (NS)
    rebind_protection: bool = True        # drop private/loopback addresses from key answers
    rebind_allow: tuple[str, ...] = ()    # keys exempt from it (besides our own [[zones]])


@dataclass(frozen=True, slots=True)
class DhtConfig:
    """``[dht]``: the embedded Mainline node: socket, BEP 43 read-only vs server mode,
    bootstrap nodes, and the storage and rate limits that apply in server mode."""

    port: int = 6881
    bind: str = "0.0.0.0"
    mode: str = "client"                  # client (BEP 43 read-only) | server
    bootstrap: tuple[HostPort, ...] = tuple(parse_hostport(b) for b in DEFAULT_BOOTSTRAP)
    request_timeout: float = 2.0
    max_stored_items: int = 10000
    max_stored_bytes: int = 16 * 1024 * 1024
    request_rate_limit: float = 20.0      # incoming KRPC queries per second per IP
    pace_limit: int = 40                  # our queries to one node per 10 s (0: unpaced)


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """``[http]``: DoH, the pkarr relay API, metrics and status page on one listener; which
    proxies may name the client (X-Forwarded-For), and the relay's DHT rate limit."""

    enabled: bool = True
    listen: tuple[HostPort, ...] = (("127.0.0.1", 6881),)
    trusted_proxies: tuple[str, ...] = ()
    admin_allow: tuple[str, ...] = DEFAULT_ALLOW   # who may read /, /api/* and /metrics
    relay_rate_limit: float = 2.0         # relay PUTs and GETs that reach the DHT, /s per IP
    relay_rate_limit_burst: float = 10.0


@dataclass(frozen=True, slots=True)
class RepublishConfig:
    """``[republish]``: keeping packets on the DHT (nodes forget items after ~2 h): popular
    keys of others within an hourly budget, our own ``[[zones]]`` with their DynDNS lookups."""

    popular: bool = True                  # re-put packets clients keep asking for
    popular_min_queries: int = 3
    popular_budget_per_hour: int = 100
    republish_after: int = 3600           # re-put a packet this long after we last saw it put
    ip_echo_v4: tuple[str, ...] = DEFAULT_IP_ECHO_V4
    ip_echo_v6: tuple[str, ...] = DEFAULT_IP_ECHO_V6
    ip_echo_timeout: float = 5.0          # seconds per external-IP service
    ip_check_interval: int = 30           # DynDNS: ask for the address this often, republish
                                          # a zone at once when it changed (0: at interval)
    retry_after: int = 300                # a failed zone publish is retried this much later
    min_stored: int = 1                   # a put counts as published when this many nodes stored it


@dataclass(frozen=True, slots=True)
class StateConfig:
    """``[state]``: what survives a restart (routing table, last verified packets) so the
    first answers after a start come from disk instead of a cold DHT."""

    save_interval: int = 300              # seconds between state saves (and one at shutdown)
    max_nodes: int = 1000                 # DHT routing-table nodes kept for the next start
    max_packets: int = 10000              # last verified signed packets kept
    packet_max_age: int = 172800          # drop saved packets not seen for this long


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """``[gateway]``: the verifying HTTPS gateway for ``<name>.<key>.key`` (docs/gateway.md):
    DNS points names whose packet has a TLSA record for port 443 at it; it checks the origin
    against that record and relays. Off by default. ``answer`` empty: the hosts of ``listen``."""

    enabled: bool = False
    listen: tuple[HostPort, ...] = (("127.0.0.1", 443),)
    http_listen: tuple[HostPort, ...] = (("127.0.0.1", 80),)
    answer: tuple[str, ...] = ()
    allow: tuple[str, ...] = DEFAULT_ALLOW   # who may connect (as dns.allow)
    origin_port: int = 443                # where origins are reached (their TLSA is for 443)
    origin_timeout: float = 5.0           # connect + TLS handshake to one origin address
    handshake_timeout: float = 10.0       # browser TLS handshake
    idle_timeout: float = 120.0           # a relayed connection with no bytes either way
    max_connections: int = 1024


@dataclass(frozen=True, slots=True)
class ZoneConfig:
    """One ``[[zones]]`` entry: a seed file and a zone file the daemon signs and publishes
    every ``interval`` seconds (paths relative to the config file become absolute)."""

    seed: str
    zone: str
    interval: int = 3600


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration, immutable: a reload builds a new one and the daemon applies
    the differences (see :mod:`pkdns.reload`)."""

    state_dir: str = "/var/lib/pkdns"
    testnet: bool = False
    log: LogConfig = field(default_factory=LogConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    pkarr: PkarrConfig = field(default_factory=PkarrConfig)
    dht: DhtConfig = field(default_factory=DhtConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    republish: RepublishConfig = field(default_factory=RepublishConfig)
    state: StateConfig = field(default_factory=StateConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    zones: tuple[ZoneConfig, ...] = ()


class _Dataclass(typing.Protocol):
    """Any dataclass instance (what ``dataclasses.replace`` accepts)."""

    __dataclass_fields__: typing.ClassVar[dict[str, dataclasses.Field[Any]]]


D = typing.TypeVar("D", bound=_Dataclass)


def replace(cfg: D, **changes: Any) -> D:
    """``dataclasses.replace`` that ignores ``None`` values (unset CLI flags)."""
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})


__all__ = [
    "DNS_PORT", "CacheConfig", "Config", "DhtConfig", "DnsConfig", "GatewayConfig", "HostPort",
    "HttpConfig", "LogConfig", "PkarrConfig", "RepublishConfig", "StateConfig", "ZoneConfig",
    "format_hostport", "parse_hostport", "parse_ip_hostport", "replace",
]
