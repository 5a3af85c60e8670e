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
    parse_hostport,
    parse_ip_hostport,
)
from pkdns.configcheck import problems
from pkdns.errors import ConfigError

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


def _validate(cfg: Config, src: _Source) -> None:
    """The first problem :func:`pkdns.configcheck.problems` finds, as an error naming its
    line."""
    for section, key, msg, nth in problems(cfg):
        raise src.error(section, key, msg, nth)
