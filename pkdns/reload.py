"""SIGHUP: which configuration changes apply to the running daemon and which need a restart.

Reload re-reads the config file (and the flags given at start, which still win) and keeps the
answer cache, the packet cache and the DHT routing table. Options that only steer decisions per
query or per publish apply at once; options that own a socket or size a structure (listen
addresses, the DHT port, cache budgets, the state dir) are reported as needing a restart and
keep their old value until then — never half-applied.

Unlike dnsmasq (SIGHUP clears the cache and does not re-read its config) and unbound (full
reload, cache flushed), a pkdns reload keeps every cache (both checked on
dnsmasq 2.90 and unbound 1.17.1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from pkdns.config import Config


class Live(Protocol):
    """A part of the daemon that applies options without a restart.

    ``live`` declares the dotted option names it applies (``section.*`` for a whole section);
    :meth:`reconfigure` applies them, given the running (``old``) and the new configuration.
    The union of the parts' declarations is what a reload applies (:func:`options`), so the
    list of live options and the code applying them cannot drift apart;
    ``tests/test_reload.py`` checks every declared option against a daemon built afresh.
    """

    @property
    def live(self) -> tuple[str, ...]: ...

    def reconfigure(self, old: Config, cfg: Config) -> None: ...


def options(parts: Iterable[Live]) -> frozenset[str]:
    """Every option the ``parts`` apply live."""
    return frozenset(name for part in parts for name in part.live)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What changed between two configurations."""

    live: tuple[str, ...]
    restart: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.live or self.restart)


def _flatten(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for g in dataclasses.fields(value):
                out[f"{f.name}.{g.name}"] = getattr(value, g.name)
        else:
            out[f.name] = value
    return out


def _is_live(name: str, live: frozenset[str]) -> bool:
    return name in live or f"{name.partition('.')[0]}.*" in live


def plan(old: Config, new: Config, live: frozenset[str]) -> ReloadPlan:
    """Split the changed options into ``live`` ones and ones that need a restart."""
    a, b = _flatten(old), _flatten(new)
    changed = sorted(k for k in a if a[k] != b[k])
    return ReloadPlan(tuple(k for k in changed if _is_live(k, live)),
                      tuple(k for k in changed if not _is_live(k, live)))


def effective(old: Config, new: Config, live: frozenset[str]) -> Config:
    """``new`` with every restart-only option kept at its running (old) value."""
    p = plan(old, new, live)
    out = new
    for name in p.restart:
        section, _, key = name.partition(".")
        if key:
            part = dataclasses.replace(getattr(out, section), **{key: getattr(
                getattr(old, section), key)})
            out = dataclasses.replace(out, **{section: part})
        else:
            out = dataclasses.replace(out, **{section: getattr(old, section)})
    return out
