"""Reload planning: live options apply, socket/size options wait for a restart."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dns.message
import dns.rrset

from pkdns import reload
from pkdns.config import Config, ZoneConfig
from pkdns.configfile import parse


def test_nothing_changed() -> None:
    p = reload.plan(Config(), Config())
    assert not p.changed and p.live == () and p.restart == ()


def test_live_and_restart_options_are_split() -> None:
    new = parse("state_dir = '/srv/pkdns'\n"
                "[log]\nlevel = 'debug'\n"
                "[dns]\nupstream = ['9.9.9.9:53']\nlisten = ['127.0.0.1:5353']\n"
                "[dht]\nport = 7000\n[republish]\npopular = false\n"
                "[[zones]]\nseed = 's'\nzone = 'z'\n")
    p = reload.plan(Config(), new)
    assert p.live == ("dns.upstream", "log.level", "republish.popular", "zones")
    assert p.restart == ("dht.port", "dns.listen", "state_dir")
    eff = reload.effective(Config(), new)
    assert eff.dns.upstream == (("9.9.9.9", 53),) and eff.log.level == "debug"
    assert eff.zones == (ZoneConfig("s", "z"),) and not eff.republish.popular
    assert eff.dns.listen == Config().dns.listen      # kept until a restart
    assert eff.dht.port == 6881 and eff.state_dir == "/var/lib/pkdns"
    assert reload.plan(eff, new).live == ()


def test_every_live_name_is_a_real_option() -> None:
    names = set()
    for f in dataclasses.fields(Config):
        default = Config().__getattribute__(f.name)
        if dataclasses.is_dataclass(default):
            names |= {f"{f.name}.{g.name}" for g in dataclasses.fields(default)}
            names.add(f"{f.name}.*")
        else:
            names.add(f.name)
    assert reload.LIVE <= names


async def test_reload_applies_serve_stale_to_the_answer_cache(tmp_path: Path) -> None:
    """``cache.serve_stale`` is live (reload.LIVE): a SIGHUP that turns it off must reach the
    cache, whose entries otherwise keep a stale window the new configuration refuses."""
    from pkdns.app import Daemon
    from pkdns.dns.cache import STALE_UNTIL
    from pkdns.dns.reply import inspect_reply
    from pkdns.lifecycle import Operations

    cfg = Config(state_dir=str(tmp_path))
    off = dataclasses.replace(cfg, cache=dataclasses.replace(cfg.cache, serve_stale=False))
    daemon = Daemon(cfg)
    ops = Operations(daemon, lambda: off, env={})
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
