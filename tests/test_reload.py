"""Reload planning: live options apply, socket/size options wait for a restart."""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.message
import dns.rrset

from pkdns import reload
from pkdns.app import Daemon
from pkdns.config import Config, ZoneConfig
from pkdns.configfile import parse
from pkdns.lifecycle import Service
from pkdns.pkarr.keys import Keypair, write_seed_file
from tests.support.clock import FakeClock


def service_daemon(cfg: Config, reread: Callable[[], Config] | None = None) -> Daemon:
    """A daemon as ``pkdns serve`` builds it (state keeper, republisher, SIGHUP), not started."""
    return Daemon(cfg, FakeClock(), Service(reread, env={}))


LIVE = frozenset({"log.level", "dns.upstream", "republish.*", "zones"})


def test_nothing_changed() -> None:
    p = reload.plan(Config(), Config(), LIVE)
    assert not p.changed and p.live == () and p.restart == ()


def test_live_and_restart_options_are_split() -> None:
    new = parse("state_dir = '/srv/pkdns'\n"
                "[log]\nlevel = 'debug'\n"
                "[dns]\nupstream = ['9.9.9.9:53']\nlisten = ['127.0.0.1:5353']\n"
                "[dht]\nport = 7000\n[republish]\npopular = false\n"
                "[[zones]]\nseed = 's'\nzone = 'z'\n")
    p = reload.plan(Config(), new, LIVE)
    assert p.live == ("dns.upstream", "log.level", "republish.popular", "zones")
    assert p.restart == ("dht.port", "dns.listen", "state_dir")
    eff = reload.effective(Config(), new, LIVE)
    assert eff.dns.upstream == (("9.9.9.9", 53),) and eff.log.level == "debug"
    assert eff.zones == (ZoneConfig("s", "z"),) and not eff.republish.popular
    assert eff.dns.listen == Config().dns.listen      # kept until a restart
    assert eff.dht.port == 6881 and eff.state_dir == "/var/lib/pkdns"
    assert reload.plan(eff, new, LIVE).live == ()


def test_every_live_name_is_a_real_option(tmp_path: Path) -> None:
    names = set()
    for f in dataclasses.fields(Config):
        default = Config().__getattribute__(f.name)
        if dataclasses.is_dataclass(default):
            names |= {f"{f.name}.{g.name}" for g in dataclasses.fields(default)}
            names.add(f"{f.name}.*")
        else:
            names.add(f.name)
    live = reload.options(service_daemon(Config(state_dir=str(tmp_path))).parts)
    assert live <= names
    assert {"dns.upstream", "dns.allow", "cache.serve_stale", "log.level", "zones"} <= live


async def test_reload_applies_serve_stale_to_the_answer_cache(tmp_path: Path) -> None:
    """``cache.serve_stale`` is live (WireCache.live): a SIGHUP that turns it off must reach the
    cache, whose entries otherwise keep a stale window the new configuration refuses."""
    from pkdns.dns.cache import STALE_UNTIL
    from pkdns.dns.reply import inspect_reply

    cfg = Config(state_dir=str(tmp_path))
    off = dataclasses.replace(cfg, cache=dataclasses.replace(cfg.cache, serve_stale=False))
    daemon = service_daemon(cfg, lambda: off)
    ops = daemon.ops
    assert ops is not None
    q = dns.message.make_query("a.example.test", "A")
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("a.example.test.", 60, "IN", "A", "192.0.2.1"))
    info = inspect_reply(r.to_wire())
    before = daemon.cache.store(b"k1", info, 100.0)
    assert before[STALE_UNTIL] == 100.0 + 60 + cfg.cache.stale_max_age
    assert await ops.reload()
    after = daemon.cache.store(b"k2", info, 100.0)
    assert after[STALE_UNTIL] == 100.0 + 60
    await ops.close()


# --- every live option reaches the part that uses it -------------------------------------------

_SKIP = object()
_VALUES = (type(None), bool, int, float, str, bytes, enum.Enum, ipaddress.IPv4Network,
           ipaddress.IPv6Network, ipaddress.IPv4Address, ipaddress.IPv6Address)


def _value(v: Any) -> Any:
    """``v`` as a comparable value, or _SKIP when it is an object to walk into (or neither).
    A whole :class:`Config` is skipped: parts keep the sections they read, so a part still
    holding the old one is seen in its sections and values."""
    if isinstance(v, _VALUES):
        return v
    if isinstance(v, (tuple, list, frozenset, set)):
        items = [_value(x) for x in v]
        if any(i is _SKIP for i in items):
            return _SKIP
        return frozenset(items) if isinstance(v, (set, frozenset)) else tuple(items)
    if isinstance(v, dict):
        pairs = [(_value(k), _value(x)) for k, x in v.items()]
        if any(a is _SKIP or b is _SKIP for a, b in pairs):
            return _SKIP
        return frozenset(pairs)
    if dataclasses.is_dataclass(v) and type(v).__module__ == "pkdns.config" \
            and not isinstance(v, Config):
        return v
    return _SKIP


def _fingerprint(root: object) -> dict[str, Any]:
    """Every plain value reachable from ``root`` through pkdns objects, by attribute path."""
    out: dict[str, Any] = {}
    seen: set[int] = set()

    def walk(obj: object, path: str, depth: int) -> None:
        if id(obj) in seen or depth > 8:
            return
        seen.add(id(obj))
        for name in sorted(dir(obj)):
            if name.startswith("__"):
                continue
            try:
                v = getattr(obj, name)
            except Exception:  # properties of parts that are not started
                continue
            if callable(v) or isinstance(v, Config):
                continue
            val = _value(v)
            if val is not _SKIP:
                out[f"{path}.{name}"] = val
            elif isinstance(v, (list, tuple)):
                for i, item in enumerate(v):
                    if type(item).__module__.startswith("pkdns"):
                        walk(item, f"{path}.{name}[{i}]", depth + 1)
            elif type(v).__module__.startswith("pkdns"):
                walk(v, f"{path}.{name}", depth + 1)

    walk(root, "daemon", 0)
    return out


def _changed(cfg: Config, name: str, tmp: Path) -> Config:
    """``cfg`` with option ``name`` set to another valid value."""
    if name == "zones":
        kp_seed = tmp / "seed.txt"
        if not kp_seed.exists():
            write_seed_file(kp_seed, Keypair.random())
        (tmp / "own.zone").write_text("@ 300 IN A 192.0.2.1\n")
        return dataclasses.replace(cfg, zones=(ZoneConfig(str(kp_seed), str(tmp / "own.zone")),))
    section, _, key = name.partition(".")
    part = getattr(cfg, section)
    v = getattr(part, key)
    special: dict[str, Any] = {
        "log.level": "debug", "log.format": "json",
        "dns.upstream": (("192.0.2.53", 53),), "dns.allow": ("10.9.0.0/16",),
        "dns.forwarders": ("10.8.0.0/16",)}
    if name in special:
        new = special[name]
    elif isinstance(v, bool):
        new = not v
    elif isinstance(v, (int, float)):
        new = v * 2 + 1
    elif isinstance(v, tuple) and all(isinstance(x, str) for x in v):
        new = (*v, "https://192.0.2.7/ip")
    else:
        raise AssertionError(f"no other value for {name} ({v!r}): add one here")
    assert new != v, name
    return dataclasses.replace(cfg, **{section: dataclasses.replace(part, **{key: new})})


def _expand(live: frozenset[str]) -> list[str]:
    names = []
    for name in sorted(live):
        section, _, key = name.partition(".")
        if key == "*":
            names += [f"{section}.{f.name}"
                      for f in dataclasses.fields(getattr(Config(), section))]
        else:
            names.append(name)
    return names


async def test_every_live_option_reaches_its_part(tmp_path: Path) -> None:
    """The one check of the reload contract: for every option a part declares live, a daemon
    reloaded to a new value holds what a daemon started with that value holds, wherever the
    value shows (and it must show somewhere: a declared option nobody applies fails here).
    Values that differ between two fresh daemons (node ids, secrets) are not compared."""
    cfg = Config(state_dir=str(tmp_path / "state"), http=dataclasses.replace(
        Config().http, enabled=False))
    base = _fingerprint(service_daemon(cfg))
    steady = {k for k, v in _fingerprint(service_daemon(cfg)).items() if base.get(k) == v}
    live = reload.options(service_daemon(cfg).parts)
    for name in _expand(live):
        new = _changed(cfg, name, tmp_path)
        fresh = _fingerprint(service_daemon(new))
        shows = sorted(k for k in steady if fresh.get(k, _SKIP) != base[k])
        assert shows, f"{name} is declared live but no part holds it"
        daemon = service_daemon(cfg, lambda new=new: new)   # type: ignore[misc]
        assert daemon.ops is not None and await daemon.ops.reload()
        await daemon.ops.close()
        reloaded = _fingerprint(daemon)
        missed = [k for k in shows if reloaded.get(k, _SKIP) != fresh.get(k, _SKIP)]
        assert not missed, f"{name}: reload did not apply it to {missed}"
        assert daemon.cfg == new
