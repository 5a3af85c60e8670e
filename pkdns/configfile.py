"""Reading ``config.toml``: TOML -> :class:`pkdns.config.Config`, with errors that name the
file, the line and the dotted key (``/etc/pkdns.toml:12: dns.listen: bad address ...``).

Unknown keys are errors, not warnings: pkdns's own sample once shipped with a commented
``[dht]`` header, so its keys landed silently in ``[dns]`` and were ignored. We refuse instead.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import typing
from pathlib import Path
from typing import Any

from pkdns.config import (
    DEFAULT_ALLOW,
    DNS_PORT,
    CacheConfig,
    Config,
    DhtConfig,
    DnsConfig,
    GatewayConfig,
    HostPort,
    HttpConfig,
    LogConfig,
    PkarrConfig,
    RepublishConfig,
    StateConfig,
    ZoneConfig,
    format_hostport,
    parse_hostport,
    parse_ip_hostport,
)
from pkdns.errors import ConfigError, PkdnsError
from pkdns.pkarr.keys import PublicKey

_CHOICES = {
    ("log", "level"): ("debug", "info", "warning", "error"),
    ("log", "format"): ("auto", "json", "console"),
    ("dht", "mode"): ("client", "server"),
}
# Addresses we bind or send to must be IP literals; bootstrap nodes may be host names.
_IP_ONLY = {("dns", "listen"), ("dns", "upstream"), ("http", "listen")}
# DNS addresses may leave out the port: it is 53 there, as in resolv.conf.
_PORT_53 = {("dns", "listen"), ("dns", "upstream")}
_NETWORKS = {("dns", "allow"), ("dns", "forwarders"), ("http", "trusted_proxies"),
             ("http", "admin_allow")}


class _Source:
    """The file being read, to name lines in errors."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, section: str | None, key: str, nth: int = 0) -> int | None:
        """Best-effort line number of ``key`` in the ``nth`` ``[section]`` (or top level)."""
        current: str | None = None
        seen = -1
        for no, line in enumerate(self.lines, 1):
            s = line.strip()
            head = re.fullmatch(r"\[\[?\s*([\w.]+)\s*\]\]?(\s*#.*)?", s)
            if head:
                current = head.group(1)
                seen += current == section
                continue
            if current == section and (section is None or seen == nth) and re.match(
                    rf"{re.escape(key)}\s*=", s):
                return no
        return None

    def error(self, section: str | None, key: str, msg: str, nth: int = 0) -> ConfigError:
        name = f"{section}.{key}" if section else key
        line = self.line_of(section, key, nth)
        where = f"{self.path}:{line}" if line else self.path
        return ConfigError(f"{where}: {name}: {msg}")


class _Field:
    """One option being converted: where it is, so every error can name it."""

    def __init__(self, src: _Source, section: str | None, key: str, nth: int = 0) -> None:
        self.src, self.section, self.key, self.nth = src, section, key, nth

    def fail(self, msg: str) -> ConfigError:
        return self.src.error(self.section, self.key, msg, self.nth)


def _convert(value: Any, hint: Any, f: _Field) -> Any:
    """Check/convert one TOML value against a dataclass field type."""
    if hint is bool:
        if not isinstance(value, bool):
            raise f.fail(f"expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise f.fail(f"expected a non-negative integer, got {value!r}")
        return value
    if hint is float:
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or value < 0):
            raise f.fail(f"expected a non-negative number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise f.fail(f"expected a string, got {value!r}")
        choices = _CHOICES.get((f.section or "", f.key))
        if choices and value not in choices:
            raise f.fail(f"must be one of {', '.join(choices)}, got {value!r}")
        return value
    if typing.get_origin(hint) is tuple:
        return _convert_tuple(value, hint, f)
    raise f.fail("unsupported option type")  # pragma: no cover


def _convert_tuple(value: Any, hint: Any, f: _Field) -> Any:
    if not isinstance(value, list):
        raise f.fail(f"expected a list, got {value!r}")
    if typing.get_args(hint)[0] == HostPort:
        return tuple(_convert_hostport(item, f) for item in value)
    if not all(isinstance(v, str) for v in value):
        raise f.fail(f"expected a list of strings, got {value!r}")
    if (f.section, f.key) in _NETWORKS:
        for v in value:
            try:
                ipaddress.ip_network(v, strict=False)
            except ValueError:
                raise f.fail(f"not an IP network: {v!r}") from None
    return tuple(value)


def _convert_hostport(item: Any, f: _Field) -> HostPort:
    if not isinstance(item, str):
        raise f.fail(f"expected \"HOST:PORT\" strings, got {item!r}")
    parse = parse_ip_hostport if (f.section, f.key) in _IP_ONLY else parse_hostport
    default_port = DNS_PORT if (f.section, f.key) in _PORT_53 else None
    try:
        host, port = parse(item, default_port)
    except ValueError as exc:
        raise f.fail(f"bad address {item!r}: {exc}") from None
    return (host, port)


def _build(cls: Any, table: dict[str, Any], src: _Source, section: str, nth: int = 0) -> Any:
    """Build dataclass ``cls`` from a TOML table, rejecting unknown and missing keys."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            raise src.error(section, key, f"unknown option (known: {', '.join(sorted(fields))})",
                            nth)
        kwargs[key] = _convert(value, hints[key], _Field(src, section, key, nth))
    for name, fld in fields.items():
        required = fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING
        if required and name not in kwargs:
            where = f"{src.path}:{_header_line(src, section, nth) or '?'}"
            raise ConfigError(f"{where}: {section}.{name}: required option missing")
    return cls(**kwargs)


def _header_line(src: _Source, section: str, nth: int) -> int | None:
    seen = -1
    for no, line in enumerate(src.lines, 1):
        if re.fullmatch(rf"\[\[?\s*{re.escape(section)}\s*\]\]?(\s*#.*)?", line.strip()):
            seen += 1
            if seen == nth:
                return no
    return None


_SECTIONS: dict[str, Any] = {
    "log": LogConfig, "dns": DnsConfig, "cache": CacheConfig, "pkarr": PkarrConfig,
    "dht": DhtConfig, "http": HttpConfig, "republish": RepublishConfig, "state": StateConfig,
    "gateway": GatewayConfig,
}
_TOP_LEVEL: dict[str, Any] = {"state_dir": str, "testnet": bool}


def parse(text: str, path: str = "<config>") -> Config:
    """Parse TOML text into a validated :class:`Config`."""
    import tomllib  # only with a config file: every command imports this module

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
            kwargs[key] = tuple(_build(ZoneConfig, z, src, "zones", i)
                                for i, z in enumerate(value))
        elif key in _TOP_LEVEL:
            kwargs[key] = _convert(value, _TOP_LEVEL[key], _Field(src, None, key))
        else:
            raise _unknown_top_level(src, key, value)
    cfg = Config(**kwargs)
    _validate(cfg, src)
    return cfg


def _unknown_top_level(src: _Source, key: str, value: Any) -> ConfigError:
    """An unknown top-level key, or an unknown ``[section]`` named by its header's line."""
    known = ", ".join(sorted([*_SECTIONS, "zones", *_TOP_LEVEL]))
    if not isinstance(value, dict):
        return src.error(None, key, f"unknown option (known: {known})")
    line = _header_line(src, key, 0)
    where = f"{src.path}:{line}" if line else src.path
    return ConfigError(f"{where}: [{key}]: unknown section (known: {', '.join(sorted(_SECTIONS))}"
                       ", [[zones]])")


def load(path: str | Path) -> Config:
    """Read and parse a config file; relative paths (state_dir, zones) are relative to it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: config is not UTF-8 text") from None
    cfg = parse(text, str(p))
    base = p.parent.absolute()
    zones = tuple(dataclasses.replace(z, seed=str(base / z.seed), zone=str(base / z.zone))
                  for z in cfg.zones)
    # Every path in the file is relative to the file, state_dir too (it once followed the
    # working directory while zone paths followed the file).
    return dataclasses.replace(cfg, zones=zones, state_dir=str(base / cfg.state_dir))


def validate(cfg: Config, path: str = "<config>") -> None:
    """Cross-field checks on a finished Config (e.g. after CLI flags were applied)."""
    _validate(cfg, _Source(path, ""))


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
        (_is_ip(cfg.dht.bind), "dht.bind", f"not an IP address: {cfg.dht.bind!r}"),
        (bool(cfg.dns.upstream) or cfg.testnet, "dns.upstream", "needs at least one server"),
        *((all(_is_ip(h) for h, _ in _get(cfg, name)), name, "host names are not allowed here")
          for name in ("dns.listen", "dns.upstream", "http.listen")),
        (all(p > 0 for _, p in cfg.dns.upstream), "dns.upstream", "port 0 is not a server"),
        (re.fullmatch(r"([a-z0-9-]{1,63})?", cfg.pkarr.tld_suffix) is not None,
         "pkarr.tld_suffix", "must be one lowercase DNS label or \"\""),
        (cfg.state_dir != "", "state_dir", "must not be empty"),
        *_gateway_checks(cfg),
    ]


def _check_rebind_allow(cfg: Config, src: _Source) -> None:
    """``pkarr.rebind_allow`` holds public keys, ``dns.rebind_allow`` domain names."""
    for entry in cfg.pkarr.rebind_allow:
        try:
            PublicKey.parse(entry)
        except PkdnsError as exc:
            raise src.error("pkarr", "rebind_allow", str(exc)) from None
    for entry in cfg.dns.rebind_allow:
        if not re.fullmatch(r"\.?([a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}\.?", entry.lower()):
            raise src.error("dns", "rebind_allow", f"not a domain name: {entry!r}")


# The networks an ACL may name without opening a listener to the whole internet.
_WIDEST = {4: 8, 6: 16}     # prefix lengths: 0.0.0.0/0, ::/0 and the like are "no ACL"


def _gateway_checks(cfg: Config) -> list[tuple[bool, str, str]]:
    """A gateway on a public address must have an ACL (it relays anyone's TLS otherwise)."""
    g = cfg.gateway
    public = [format_hostport(a) for a in (*g.listen, *g.http_listen) if _public(a[0])]
    wide = [n for n in g.allow if _wide(ipaddress.ip_network(n, strict=False))]
    return [
        (all(_is_ip(a) for a in g.answer), "gateway.answer", "must be IP addresses"),
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


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _validate(cfg: Config, src: _Source) -> None:
    for ok, name, msg in _checks(cfg):
        if not ok:
            section, _, key = name.rpartition(".")
            raise src.error(section or None, key, msg)
    _check_rebind_allow(cfg, src)
    for i, z in enumerate(cfg.zones):
        if z.interval < 60:
            raise src.error("zones", "interval", f"must be >= 60 seconds (zone {z.zone})", i)
        for key in ("seed", "zone"):
            if not getattr(z, key):
                raise src.error("zones", key, "must be a file path", i)


