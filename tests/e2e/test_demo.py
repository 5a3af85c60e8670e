"""``pkdns --testnet``: the offline demo the README's "run" command starts.

Black box: the installed ``pkdns`` runs as a subprocess (as the unprivileged user ``nobody``
when the tests run as root, which proves the demo needs no root and no writable /var/lib), and
every ``dig``/``kdig``/``curl`` line it prints is run for real, exactly as printed, and must
show the demo record it is about. The pure config adaptation is tested in-process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import socket
import subprocess
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from pkdns.config import Config, DnsConfig, HttpConfig, RepublishConfig, ZoneConfig
from pkdns.configfile import parse
from pkdns.demo import (
    DEMO_LISTEN,
    DEMO_ZONE,
    demo_config,
    demo_http_listen,
    demo_packet,
    what_leaves,
)
from pkdns.demo_icann import NOTE
from pkdns.demo_icann import answer as stand_in_answer
from pkdns.pkarr.keys import Keypair
from tests.e2e.demoproc import run_demo

AS_NOBODY = ("setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups")
BOOT = [("127.0.0.1", 40001), ("127.0.0.1", 40002)]

# What each printed line must show, keyed by a regex over the line itself.
EXPECT = [
    (r"^dig \S+ -p \d+ [a-z0-9]{52}$", [r"status: NOERROR", r"\sA\s+127\.0\.0\.1"]),
    (r" AAAA ", [r"status: NOERROR", r"\sAAAA\s+::1"]),
    (r" TXT _demo\.", [r"status: NOERROR", r'"hello from the pkdns testnet"']),
    (r" HTTPS ", [r"status: NOERROR", r'1 \. alpn="?h2"?']),
    (r"^kdig .* \+tcp www\.", [r"status: NOERROR", r"CNAME", r"\(TCP\)", r"127\.0\.0\.1"]),
    (r" www\.[a-z0-9]{52}\.key$", [r"status: NOERROR", r"[a-z0-9]{52}\.key\.", r"127\.0\.0\.1"]),
    (r" example\.com$", [r"status: NOERROR", r"\sA\s+192\.0\.2\.1"]),   # the ICANN stand-in
    (r"^curl .*/dns-query\?dns=", [r"NOERROR", r"IN A 127\.0\.0\.1"]),
    (r"^curl .*/api/resolve/", [r"127\.0\.0\.1"]),
]


def _prefix() -> tuple[str, ...]:
    return AS_NOBODY if os.geteuid() == 0 else ()


def _run(line: str) -> str:
    cmd = ["bash", "-c", line] if "|" in line else shlex.split(line)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    return out.stdout + out.stderr


@pytest.mark.slow
def test_every_printed_line_answers_with_the_demo_records(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    with run_demo(tmp_path, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                  prefix=_prefix()) as demo:
        assert re.fullmatch(r"[a-z0-9]{52}", demo.key)
        checked = set()
        for line in demo.tries:
            if not line.startswith(("dig ", "kdig ", "curl ")):
                continue
            rules = [want for pattern, want in EXPECT if re.search(pattern, line)]
            assert len(rules) == 1, f"no single expectation for the printed line {line!r}"
            output = _run(line)
            for want in rules[0]:
                assert re.search(want, output), f"{line!r} printed {output!r}"
            checked.add(line.split()[0] + " " + next(p for p, _ in EXPECT
                                                     if re.search(p, line)))
        assert len([c for c in checked if not c.startswith("curl")]) == 7
        assert "nothing leaves this machine" in demo.text()
        http_up = any(e.get("event") == "http_listening" for e in demo.events())
        assert http_up == any(c.startswith("curl") for c in checked)
        events = demo.events()
        assert any(e.get("event") == "demo_key_published" and e.get("stored", 0) > 0
                   for e in events)
        code = demo.interrupt()
    assert code == 0, demo.text()
    assert any(e.get("event") == "stopped" for e in demo.events())


@pytest.mark.slow
def test_the_demo_port_held_by_mdns_falls_back_to_a_free_port(tmp_path: Path) -> None:
    """avahi-daemon holds 0.0.0.0:5353 (SO_REUSEADDR); the demo must still start."""
    with contextlib.ExitStack() as stack:
        mdns = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        mdns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):   # already held by a real mDNS daemon: as good
            mdns.bind(("0.0.0.0", 5353))
        demo = stack.enter_context(run_demo(tmp_path, "--no-http"))
        first = demo.tries[0]
        assert re.fullmatch(r"dig @127\.0\.0\.1 -p \d+ [a-z0-9]{52}", first)
        assert " -p 5353 " not in first
        assert re.search(r"\sA\s+127\.0\.0\.1", _run(first))
        assert any(e.get("event") == "demo_port_in_use" for e in demo.events())


def _hold_http_port(stack: contextlib.ExitStack) -> None:
    """Listen on 127.0.0.1:6881 as a running pkdns's HTTP face does (or find it held)."""
    holder = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with contextlib.suppress(OSError):   # already held by something else: as good
        holder.bind(("127.0.0.1", 6881))
        holder.listen()


@pytest.mark.slow
def test_the_http_port_held_by_a_running_pkdns_falls_back_to_a_free_port(tmp_path: Path
                                                                           ) -> None:
    with contextlib.ExitStack() as stack:
        _hold_http_port(stack)
        demo = stack.enter_context(run_demo(tmp_path, "--listen", "127.0.0.1:0"))
        status = next(ln for ln in demo.text().splitlines() if ln.startswith("status page: "))
        assert re.fullmatch(r"status page: http://127\.0\.0\.1:\d+/", status)
        assert ":6881/" not in status
        curls = [ln for ln in demo.tries if ln.startswith("curl ")]
        assert len(curls) == 2 and all(":6881/" not in ln for ln in curls)
        resolve = next(ln for ln in curls if "/api/resolve/" in ln)
        assert re.search(r"127\.0\.0\.1", _run(resolve))
        assert any(e.get("event") == "demo_http_port_in_use" for e in demo.events())


def test_demo_http_listen_falls_back_only_for_the_default_address() -> None:
    with contextlib.ExitStack() as stack:
        _hold_http_port(stack)
        assert demo_http_listen(HttpConfig()) == (("127.0.0.1", 0),)
        explicit = HttpConfig(listen=(("127.0.0.1", 8053),))
        assert demo_http_listen(explicit) == HttpConfig().listen    # kept by demo_config
        assert demo_config(Config(http=explicit), BOOT, "/tmp/x",
                           http_listen=demo_http_listen(explicit)).http.listen == explicit.listen
        assert demo_http_listen(HttpConfig(enabled=False)) == HttpConfig().listen
    held = demo_config(Config(testnet=True), BOOT, "/tmp/x", http_listen=(("127.0.0.1", 0),))
    assert held.http.listen == (("127.0.0.1", 0),)


def test_defaults_are_replaced_by_demo_settings() -> None:
    cfg = demo_config(Config(testnet=True), BOOT, "/tmp/x")
    assert cfg.dns.listen == DEMO_LISTEN == (("127.0.0.1", 5353),)
    assert cfg.state_dir == "/tmp/x"
    assert cfg.dht.bootstrap == tuple(BOOT)
    assert (cfg.dht.bind, cfg.dht.port) == ("127.0.0.1", 0)
    assert cfg.pkarr.relays == ()
    assert cfg.dns.upstream == DnsConfig().upstream      # no stand-in given: kept
    stand_in = demo_config(Config(testnet=True), BOOT, "/tmp/x", icann=("127.0.0.1", 5999))
    assert stand_in.dns.upstream == (("127.0.0.1", 5999),)
    assert what_leaves(stand_in, ("127.0.0.1", 5999)) == []
    assert cfg.http.listen == (("127.0.0.1", 6881),)     # already unprivileged


def test_explicit_settings_are_kept_but_the_testnet_is_the_only_dht() -> None:
    text = ('testnet = true\nstate_dir = "/srv/pkdns"\n[dns]\nlisten = ["127.0.0.1:5454"]\n'
            '[dht]\nport = 7000\nbind = "127.0.0.2"\nbootstrap = ["198.51.100.1:6881"]\n'
            '[pkarr]\nrelays = ["https://relay.example"]\n')
    cfg = demo_config(parse(text), BOOT, "/tmp/x")
    assert cfg.dns.listen == (("127.0.0.1", 5454),)
    assert cfg.state_dir == "/srv/pkdns"
    assert (cfg.dht.bind, cfg.dht.port) == ("127.0.0.2", 7000)
    assert cfg.dht.bootstrap == tuple(BOOT)
    assert cfg.pkarr.relays == ()


def test_demo_zone_has_the_advertised_types() -> None:
    packet = demo_packet(Keypair.from_seed(bytes(32)))
    z = packet.public_key.z32
    types = {(str(rr.rname).rstrip(".").removesuffix(z).rstrip("."), rr.rtype)
             for rr in packet.records}
    assert types == {("", 1), ("", 28), ("", 65), ("www", 5), ("_demo", 16)}
    assert DEMO_ZONE.count("\n") == len(packet.records)


def test_explicit_upstreams_are_kept_and_the_banner_says_they_leave(tmp_path: Path) -> None:
    cfg = demo_config(Config(testnet=True, dns=DnsConfig(upstream=(("9.9.9.9", 53),))), BOOT,
                      "/tmp/x", icann=("127.0.0.1", 5999))
    assert cfg.dns.upstream == (("9.9.9.9", 53),)
    assert what_leaves(cfg, ("127.0.0.1", 5999)) == ["ICANN queries to 9.9.9.9:53"]
    seed, zone = tmp_path / "seed", tmp_path / "zone"
    zone.write_text("@ IN A {external_ipv4}\n")
    dyn = dataclasses.replace(cfg, zones=(ZoneConfig(seed=str(seed), zone=str(zone)),),
                              republish=RepublishConfig(ip_echo_v4=("https://v4.example",)))
    assert what_leaves(dyn, ("127.0.0.1", 5999)) == [
        "ICANN queries to 9.9.9.9:53",
        "IP-echo requests for the [[zones]] DynDNS variables to https://v4.example"]


@pytest.mark.parametrize(("name", "qtype", "rcode", "answer"), [
    ("example.com", "A", "NOERROR", "192.0.2.1"),
    ("WWW.Example.ORG.", "AAAA", "NOERROR", "2001:db8::1"),
    ("example.net", "TXT", "NOERROR", NOTE),
    ("example.com", "MX", "NOERROR", None),
    ("pkdns.example", "A", "NXDOMAIN", None),
])
def test_the_icann_stand_in_answers(name: str, qtype: str, rcode: str,
                                    answer: str | None) -> None:
    reply = dns.message.from_wire(stand_in_answer(dns.message.make_query(name, qtype).to_wire()))
    assert dns.rcode.to_text(reply.rcode()) == rcode
    assert [rd.to_text().strip('"') for rrset in reply.answer for rd in rrset] == (
        [answer] if answer else [])
    if rcode == "NXDOMAIN":
        assert reply.authority[0].rdtype == dns.rdatatype.SOA
    assert stand_in_answer(b"junk") is None
