"""Configuration: TOML file + command-line flags -> frozen dataclasses.

Every option has a default here; ``config.example.toml`` documents the same values (a test
asserts the example parses to exactly these defaults). Unknown keys and bad values raise
:class:`ConfigError` naming the key, the file and the line.

Addresses are ``host:port`` strings (``[v6]:port`` for IPv6); they are parsed to
``(host, port)`` tuples here so the rest of the code never splits strings.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pkdns.errors import ConfigError

HostPort = tuple[str, int]

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
DEFAULT_IP_ECHO_V4 = (
    "https://ipv4.icanhazip.com", "https://v4.ident.me", "https://api.ipify.org",
)
DEFAULT_IP_ECHO_V6 = ("https://ipv6.icanhazip.com", "https://v6.ident.me", "https://api6.ipify.org")


def parse_hostport(text: str, default_port: int | None = None) -> HostPort:
    """``1.2.3.4:53``, ``[::1]:53``, ``name:53`` (or bare host with ``default_port``)."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.%\w]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", text.strip())
    if not m:
        raise ValueError(f"not HOST:PORT: {text!r}")
    host = m.group(1) or m.group(3)
    port_s = m.group(2) or m.group(4)
    if port_s is None:
        if default_port is None:
            raise ValueError(f"missing port in {text!r}")
        port = default_port
    else:
        port = int(port_s)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return (host, port)


def format_hostport(addr: HostPort) -> str:
    """Inverse of :func:`parse_hostport`."""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"           # debug | info | warning | error
    format: str = "auto"          # auto | json | console


@dataclass(frozen=True, slots=True)
class DnsConfig:
    listen: tuple[HostPort, ...] = (("127.0.0.1", 53), ("::1", 53))
    upstream: tuple[HostPort, ...] = (("1.1.1.1", 53), ("8.8.8.8", 53))
    upstream_timeout: float = 1.0         # seconds per attempt, then the next upstream
    query_deadline: float = 3.0           # total budget per query, then SERVFAIL
    max_inflight: int = 2048              # forwarded queries in flight
    udp_payload_max: int = 1232           # our EDNS buffer size cap (DNS flag day 2020)
    tcp_idle_timeout: float = 10.0        # RFC 7766 §6.2.3
    tcp_initial_timeout: float = 5.0      # first byte of a new connection
    tcp_max_connections: int = 512
    tcp_max_per_ip: int = 32
    allow: tuple[str, ...] = DEFAULT_ALLOW   # ACL: everyone else gets REFUSED
    rate_limit: float = 200.0             # queries per second per client IP (0 disables)
    rate_limit_burst: float = 400.0
    any_minimal: bool = True              # RFC 8482: answer ANY with one RRset / HINFO


@dataclass(frozen=True, slots=True)
class CacheConfig:
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
    tld_suffix: str = "key"               # "" disables <key>.<suffix>
    min_ttl: int = 60
    max_ttl: int = 86400
    stale_max_age: int = 86400
    negative_ttl: int = 60
    relays: tuple[str, ...] = ()
    lookup_timeout: float = 2.5           # SERVFAIL before the client's 3 s
    first_answer_window: float = 0.15     # wait this long after the first packet for newer ones
    max_concurrent_lookups: int = 64
    dht_rate_limit: float = 5.0           # cold DHT lookups per second per client IP
    dht_rate_limit_burst: float = 25.0
    packet_cache_size: int = 10000        # signed packets kept
    max_recursion_depth: int = 8          # CNAME/NS hops


@dataclass(frozen=True, slots=True)
class DhtConfig:
    port: int = 6881
    bind: str = "0.0.0.0"
    mode: str = "client"                  # client (BEP 43 read-only) | server
    bootstrap: tuple[HostPort, ...] = tuple(parse_hostport(b) for b in DEFAULT_BOOTSTRAP)
    request_timeout: float = 2.0
    max_stored_items: int = 10000
    max_stored_bytes: int = 16 * 1024 * 1024
    request_rate_limit: float = 20.0      # incoming KRPC queries per second per IP


@dataclass(frozen=True, slots=True)
class HttpConfig:
    enabled: bool = True
    listen: tuple[HostPort, ...] = (("127.0.0.1", 6881),)
    trusted_proxies: tuple[str, ...] = ()
    relay_rate_limit: float = 2.0         # relay PUT/GET-from-network per second per IP
    relay_rate_limit_burst: float = 10.0


@dataclass(frozen=True, slots=True)
class RepublishConfig:
    popular: bool = True                  # re-put packets clients keep asking for
    popular_min_queries: int = 3
    popular_budget_per_hour: int = 100
    republish_after: int = 3600           # re-put a packet this long after we last saw it put
    ip_echo_v4: tuple[str, ...] = DEFAULT_IP_ECHO_V4
    ip_echo_v6: tuple[str, ...] = DEFAULT_IP_ECHO_V6


@dataclass(frozen=True, slots=True)
class ZoneConfig:
    seed: str
    zone: str
    interval: int = 3600


@dataclass(frozen=True, slots=True)
class Config:
    state_dir: str = "/var/lib/pkdns"
    testnet: bool = False
    log: LogConfig = field(default_factory=LogConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    pkarr: PkarrConfig = field(default_factory=PkarrConfig)
    dht: DhtConfig = field(default_factory=DhtConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    republish: RepublishConfig = field(default_factory=RepublishConfig)
    zones: tuple[ZoneConfig, ...] = ()


_CHOICES = {
    ("log", "level"): ("debug", "info", "warning", "error"),
    ("log", "format"): ("auto", "json", "console"),
    ("dht", "mode"): ("client", "server"),
}


class _Source:
    """The file being read, to name lines in errors."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, section: str | None, key: str) -> int | None:
        """Best-effort line number of ``key`` (in ``[section]`` when given)."""
        current: str | None = None
        for no, line in enumerate(self.lines, 1):
            s = line.strip()
            head = re.fullmatch(r"\[\[?\s*([\w.]+)\s*\]\]?", s)
            if head:
                current = head.group(1)
                continue
            if current == section and re.match(rf"{re.escape(key)}\s*=", s):
                return no
        return None

    def error(self, section: str | None, key: str, msg: str) -> ConfigError:
        name = f"{section}.{key}" if section else key
        line = self.line_of(section, key)
        where = f"{self.path}:{line}" if line else self.path
        return ConfigError(f"{where}: {name}: {msg}")


def _convert(value: Any, hint: Any, src: _Source, section: str | None, key: str) -> Any:
    """Check/convert one TOML value against a dataclass field type."""
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise src.error(section, key, f"expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise src.error(section, key, f"expected a non-negative integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise src.error(section, key, f"expected a non-negative number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise src.error(section, key, f"expected a string, got {value!r}")
        choices = _CHOICES.get((section or "", key))
        if choices and value not in choices:
            raise src.error(section, key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value
    if origin is tuple:
        return _convert_tuple(value, hint, src, section, key)
    raise src.error(section, key, "unsupported option type")  # pragma: no cover


def _convert_tuple(value: Any, hint: Any, src: _Source, section: str | None, key: str) -> Any:
    if not isinstance(value, list):
        raise src.error(section, key, f"expected a list, got {value!r}")
    item_hint = typing.get_args(hint)[0]
    if item_hint == HostPort:
        out = []
        for item in value:
            if not isinstance(item, str):
                raise src.error(section, key, f"expected \"HOST:PORT\" strings, got {item!r}")
            try:
                out.append(parse_hostport(item))
            except ValueError as exc:
                raise src.error(section, key, str(exc)) from None
        return tuple(out)
    if not all(isinstance(v, str) for v in value):
        raise src.error(section, key, f"expected a list of strings, got {value!r}")
    if key in ("allow", "trusted_proxies"):
        for v in value:
            try:
                ipaddress.ip_network(v, strict=False)
            except ValueError:
                raise src.error(section, key, f"not an IP network: {v!r}") from None
    return tuple(value)


def _build(cls: Any, table: dict[str, Any], src: _Source, section: str | None) -> Any:
    """Build dataclass ``cls`` from a TOML table, rejecting unknown keys."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            raise src.error(section, key, f"unknown option (known: {', '.join(sorted(fields))})")
        kwargs[key] = _convert(value, hints[key], src, section, key)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{src.path}: [{section}]: {exc}") from None


_SECTIONS: dict[str, Any] = {
    "log": LogConfig, "dns": DnsConfig, "cache": CacheConfig, "pkarr": PkarrConfig,
    "dht": DhtConfig, "http": HttpConfig, "republish": RepublishConfig,
}


def parse(text: str, path: str = "<config>") -> Config:
    """Parse TOML text into a validated :class:`Config`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    src = _Source(path, text)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise src.error(None, key, "expected a [table]")
            kwargs[key] = _build(_SECTIONS[key], value, src, key)
        elif key == "zones":
            if not isinstance(value, list) or not all(isinstance(z, dict) for z in value):
                raise src.error(None, key, "expected [[zones]] tables")
            kwargs[key] = tuple(_build(ZoneConfig, z, src, "zones") for z in value)
        elif key == "state_dir":
            kwargs[key] = _convert(value, str, src, None, key)
        else:
            known = ", ".join(sorted([*_SECTIONS, "zones", "state_dir"]))
            raise src.error(None, key, f"unknown option (known: {known})")
    cfg = Config(**kwargs)
    validate(cfg, path)
    return cfg


def load(path: str | Path) -> Config:
    """Read and parse a config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: config is not UTF-8 text") from None
    return parse(text, str(p))


def validate(cfg: Config, path: str = "<config>") -> None:
    """Cross-field checks that a type alone cannot express."""
    checks = [
        (cfg.cache.min_ttl <= cfg.cache.max_ttl, "cache.min_ttl", "must be <= cache.max_ttl"),
        (cfg.pkarr.min_ttl <= cfg.pkarr.max_ttl, "pkarr.min_ttl", "must be <= pkarr.max_ttl"),
        (512 <= cfg.dns.udp_payload_max <= 65535, "dns.udp_payload_max", "must be 512..65535"),
        (cfg.dht.port <= 65535, "dht.port", "must be 0..65535"),
        (bool(cfg.dns.upstream) or cfg.testnet, "dns.upstream", "needs at least one server"),
        (re.fullmatch(r"([a-z0-9-]{1,63})?", cfg.pkarr.tld_suffix) is not None,
         "pkarr.tld_suffix", "must be one lowercase DNS label or \"\""),
        (cfg.dns.query_deadline > 0, "dns.query_deadline", "must be > 0"),
    ]
    for ok, name, msg in checks:
        if not ok:
            section, _, key = name.rpartition(".")
            src = _Source(path, "")
            raise src.error(section, key, msg)
    for z in cfg.zones:
        if z.interval < 60:
            raise ConfigError(f"{path}: zones.interval: must be >= 60 seconds (zone {z.zone})")


T = typing.TypeVar("T")


def replace(cfg: T, **changes: Any) -> T:
    """``dataclasses.replace`` that ignores ``None`` values (unset CLI flags)."""
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[type-var]


__all__ = [
    "CacheConfig", "Config", "DhtConfig", "DnsConfig", "HostPort", "HttpConfig", "LogConfig",
    "PkarrConfig", "RepublishConfig", "ZoneConfig", "format_hostport", "load", "parse",
    "parse_hostport", "replace", "validate",
]
