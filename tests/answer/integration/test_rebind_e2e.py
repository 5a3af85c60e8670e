"""DNS rebinding end to end: packets on a real loopback DHT (the testnet), the whole daemon with
its republisher, dig and kdig as clients; and the ICANN option against knot as the upstream.

A stranger's key publishing each address of the attack trial gets none of them served (with
and without ``.key``); the daemon's own ``[[zones]]`` key and an allowlisted key publishing the
same addresses are served as published; ``/metrics`` counts what was removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pkdns.app import Daemon
from pkdns.clock import SYSTEM_CLOCK
from pkdns.config import (
    Config,
    DhtConfig,
    DnsConfig,
    HttpConfig,
    PkarrConfig,
    ZoneConfig,
)
from pkdns.configfile import parse
from pkdns.dht.testnet import Testnet
from pkdns.dns.reply import ReplyInfo
from pkdns.errors import ConfigError
from pkdns.lifecycle import Service
from pkdns.pkarr.keys import Keypair, write_seed_file
from pkdns.pkarr.signed_packet import SignedPacket
from pkdns.pkarr.zone import parse_zone
from tests.support.knot import knot_server
from tests.support.pkarr_factory import keypair
from tests.support.pkarr_fakes import item_of

DIG, KDIG = shutil.which("dig") or "dig", shutil.which("kdig") or "kdig"
ATTACK = ["0.0.0.0", "10.0.0.1", "100.64.0.1", "127.0.0.1", "169.254.1.1", "172.16.0.1",
          "192.168.1.1", "::", "::1", "::ffff:127.0.0.1", "fc00::1", "fe80::1"]
NAMES = [(f"a{i}", "AAAA" if ":" in a else "A", a) for i, a in enumerate(ATTACK)]
ZONE = "$TTL 300\n" + "".join(f"{n} IN {t} {a}\nall IN {t} {a}\n" for n, t, a in NAMES)


def _norm(addr: str) -> str:
    return str(ipaddress.ip_address(addr))


async def run(*cmd: str) -> str:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return out.decode()


def answers(out: str) -> list[str]:
    """The A/AAAA RDATA of every answer line dig/kdig printed (normalized addresses)."""
    found = re.findall(r"\sIN\s+(?:A|AAAA)\s+(\S+)\s*$", out, re.MULTILINE)
    return [_norm(a) for a in found]


async def publish(net: Testnet, kp: Keypair) -> None:
    p = SignedPacket.sign(kp, parse_zone(ZONE, kp.public_key), SYSTEM_CLOCK.wall_us())
    assert (await net.nodes[-1].put_mutable(item_of(p))).stored > 0


@contextlib.asynccontextmanager
async def daemon(cfg: Config) -> AsyncIterator[Daemon]:
    d = Daemon(cfg, service=Service(env={}))
    assert d.ops is not None
    await d.start()
    try:
        await asyncio.wait_for(d.pkarr.bootstrapped.wait(), 10)
        yield d
    finally:
        await d.stop()
        await d.ops.close()


async def test_attack_addresses_not_served_own_and_allowed_keys_are(tmp_path: Path,
                                                                    testnet: Testnet) -> None:
    stranger, allowed, own = keypair(141), keypair(142), keypair(143)
    await publish(testnet, stranger)
    await publish(testnet, allowed)
    write_seed_file(tmp_path / "seed.txt", own)
    (tmp_path / "own.zone").write_text(ZONE)
    cfg = Config(
        state_dir=str(tmp_path / "state"),
        dns=DnsConfig(listen=(("127.0.0.1", 0),), upstream=(("127.0.0.1", 9),), rate_limit=0),
        dht=DhtConfig(port=0, bind="127.0.0.1", bootstrap=tuple(testnet.bootstrap),
                      request_timeout=0.5),
        http=HttpConfig(enabled=False),
        pkarr=PkarrConfig(rebind_allow=(allowed.public_key.z32,), dht_rate_limit=0),
        zones=(ZoneConfig(seed=str(tmp_path / "seed.txt"), zone=str(tmp_path / "own.zone")),))
    async with daemon(cfg) as d:
        port = str(d.dns.bound[0][1])
        z = stranger.public_key.z32
        # every name of the stranger's key, bare with dig and with .key with kdig (UDP and TCP)
        bare = await run(DIG, "@127.0.0.1", "-p", port, "+tries=1", "+time=3",
                         *[arg for n, t, _ in NAMES for arg in (f"{n}.{z}", t)])
        assert bare.count("status: NOERROR") == len(NAMES), bare
        assert answers(bare) == [], bare
        suffixed = await run(KDIG, f"@127.0.0.1:{port}", "+tcp", "+retry=0",
                             *[arg for n, t, _ in NAMES for arg in (f"{n}.{z}.key", "-t", t)])
        assert suffixed.count("NOERROR") == len(NAMES), suffixed
        assert answers(suffixed) == [], suffixed
        # the NODATA carries the key zone's SOA, so downstream caches hold it negatively
        soa = await run(DIG, "@127.0.0.1", "-p", port, f"a3.{z}.key", "A", "+tries=1")
        assert re.search(rf"^{z}\.key\.\s+\d+\s+IN\s+SOA\s", soa, re.MULTILINE), soa
        # the allowlisted key and the daemon's own [[zones]] key: served as published
        for kp in (allowed, own):
            k = kp.public_key.z32
            got: list[str] = []
            for _ in range(50):     # the republisher puts the own zone once the node joined
                out = await run(DIG, "@127.0.0.1", "-p", port, "+tries=1", "+time=3",
                                f"all.{k}.key", "A", f"all.{k}", "AAAA")
                got = answers(out)
                if got:
                    break
                await asyncio.sleep(0.2)
            assert sorted(got) == sorted(_norm(a) for a in ATTACK), out
        text = d.metrics.render().decode()
        removed = 2 * len(NAMES)              # each name once bare and once with .key
        assert f'pkdns_rebind_filtered_total{{source="pkarr"}} {removed}.0' in text, text
        assert f'pkdns_rebind_emptied_total{{source="pkarr"}} {removed}.0' in text


ICANN_ZONE = """$ORIGIN rebind.test.
$TTL 300
@ SOA ns.rebind.test. host.rebind.test. 1 3600 600 86400 60
@ NS ns.rebind.test.
ns A 192.0.2.53
evil A 127.0.0.1
evil A 192.168.1.1
evil AAAA ::1
mixed A 10.0.0.1
mixed A 192.0.2.80
web A 192.0.2.10
nas.lan A 192.168.1.20
"""


async def test_icann_option_filters_on_insert(tmp_path: Path) -> None:
    with knot_server(tmp_path, {"rebind.test.": ICANN_ZONE}) as knot:
        cfg = Config(
            state_dir=str(tmp_path / "state"),
            dns=DnsConfig(listen=(("127.0.0.1", 0),), upstream=((knot.host, knot.port),),
                          rate_limit=0, rebind_protection=True,
                          rebind_allow=("lan.rebind.test",)),
            dht=DhtConfig(port=0, bind="127.0.0.1", bootstrap=()),
            http=HttpConfig(enabled=False))
        d = Daemon(cfg)
        guard, calls = d.resolver.fetches.guard, []
        assert guard is not None

        def counting(key: bytes, info: ReplyInfo) -> ReplyInfo:
            calls.append(key)
            return guard(key, info)

        d.resolver.fetches.guard = counting
        await d.start()
        try:
            port = str(d.dns.bound[0][1])
            for _ in range(2):               # miss, then the cached (already filtered) entry
                out = await run(DIG, "@127.0.0.1", "-p", port, "+tries=1", "+time=3",
                                "evil.rebind.test", "A", "evil.rebind.test", "AAAA",
                                "mixed.rebind.test", "A", "web.rebind.test", "A",
                                "nas.lan.rebind.test", "A")
                assert out.count("status: NOERROR") == 5, out
                assert answers(out) == ["192.0.2.80", "192.0.2.10", "192.168.1.20"], out
            # round 1 removes 4 addresses (2 answers emptied); the emptied NODATA has no SOA,
            # so it is not cached and round 2 filters evil's 3 addresses again (mixed was
            # cached filtered: a hit does not filter)
            text = d.metrics.render().decode()
            assert 'pkdns_rebind_filtered_total{source="icann"} 7.0' in text, text
            assert 'pkdns_rebind_emptied_total{source="icann"} 4.0' in text
            assert len(calls) == 5 + 2        # once per upstream reply, never on a cache hit
        finally:
            await d.stop()


async def test_reload_updates_the_exempt_keys(tmp_path: Path) -> None:
    """``zones`` is live: a reload that adds a zone exempts its key at once."""
    own = keypair(144)
    write_seed_file(tmp_path / "seed.txt", own)
    (tmp_path / "own.zone").write_text(ZONE)
    cfg = Config(state_dir=str(tmp_path / "state"))
    more = dataclasses.replace(cfg, zones=(ZoneConfig(str(tmp_path / "seed.txt"),
                                                      str(tmp_path / "own.zone")),))
    d = Daemon(cfg, service=Service(lambda: more, env={}))
    ops = d.ops
    assert ops is not None
    assert own.public_key.z32 not in d.pkarr.handler.exempt
    assert await ops.reload()
    assert own.public_key.z32 in d.pkarr.handler.exempt
    await ops.close()


@pytest.mark.parametrize(("text", "message"), [
    ('[pkarr]\nrebind_allow = ["nokey"]\n', "<config>:2: pkarr.rebind_allow: 'nokey' is not"),
    ('[dns]\nrebind_allow = ["bad domain"]\n',
     "<config>:2: dns.rebind_allow: not a domain name: 'bad domain'"),
])
def test_bad_allowlist_entries_name_the_option(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(text)
    assert str(err.value).startswith(message), err.value


def test_allowlist_entries_parse() -> None:
    z = keypair(145).public_key.z32
    cfg = parse(f'[pkarr]\nrebind_allow = ["pk:{z}"]\n'
                '[dns]\nrebind_protection = true\nrebind_allow = ["lan", "home.arpa."]\n')
    assert cfg.pkarr.rebind_allow == (f"pk:{z}",) and cfg.dns.rebind_protection
