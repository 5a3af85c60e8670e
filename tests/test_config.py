"""Configuration parsing: the documented example, defaults, flags and every bad-config path."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import pytest

from pkdns import config, configcheck, configfile
from pkdns.cli import build_parser
from pkdns.cmd import serve
from pkdns.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"


def test_empty_config_is_defaults() -> None:
    assert configfile.parse("") == config.Config()


def test_example_parses_to_exactly_the_defaults() -> None:
    assert configfile.load(EXAMPLE) == config.Config()


def _uncommented_zones_block(text: str) -> str:
    """The example's commented ``[[zones]]`` block, with the ``# `` removed."""
    lines = text.splitlines()
    start = lines.index("# [[zones]]")
    return "\n".join(line.removeprefix("# ") for line in lines[start:] if line.startswith("# "))


def test_every_option_is_documented_in_the_example() -> None:
    text = EXAMPLE.read_text()
    data = tomllib.loads(text)
    for f in dataclasses.fields(config.Config):
        if f.name == "zones":
            continue
        assert f.name in data, f"{f.name} missing from config.example.toml"
        if dataclasses.is_dataclass(f.default_factory):
            fields = {g.name for g in dataclasses.fields(f.default_factory)}
            assert fields == set(data[f.name]), f"[{f.name}] differs from {f.default_factory}"
    zones = tomllib.loads(_uncommented_zones_block(text))["zones"]
    assert {g.name for g in dataclasses.fields(config.ZoneConfig)} == set(zones[0])


def test_example_zone_block_enables_a_zone(tmp_path: Path) -> None:
    text = EXAMPLE.read_text() + "\n" + _uncommented_zones_block(EXAMPLE.read_text()) + "\n"
    (tmp_path / "pkdns.toml").write_text(text)
    cfg = configfile.load(tmp_path / "pkdns.toml")
    assert cfg.zones == (config.ZoneConfig(seed=str(tmp_path / "seed.txt"),
                                           zone=str(tmp_path / "pkarr.zone"), interval=3600),)


def test_absolute_zone_paths_stay(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("[[zones]]\nseed = '/k/seed'\nzone = '/k/zone'\n")
    assert configfile.load(tmp_path / "c.toml").zones[0].seed == "/k/seed"


def test_hostport_forms() -> None:
    assert config.parse_hostport("127.0.0.1:53") == ("127.0.0.1", 53)
    assert config.parse_hostport("[::1]:5353") == ("::1", 5353)
    assert config.parse_hostport("router.bittorrent.com:6881") == ("router.bittorrent.com", 6881)
    assert config.parse_hostport("10.0.0.1", default_port=53) == ("10.0.0.1", 53)
    assert config.format_hostport(("::1", 53)) == "[::1]:53"
    assert config.format_hostport(("1.2.3.4", 53)) == "1.2.3.4:53"
    for bad in ("127.0.0.1", "127.0.0.1:70000", "[::1", "a:b:c", ""):
        with pytest.raises(ValueError):
            config.parse_hostport(bad)


def test_values_are_converted() -> None:
    cfg = configfile.parse(
        "state_dir = '/tmp/s'\ntestnet = true\n"
        "[dns]\nlisten = ['0.0.0.0:5353', '[::]:5353']\nupstream_timeout = 2\n"
        "[dht]\nbootstrap = ['127.0.0.1:7000']\n"
        "[[zones]]\nseed = 'a'\nzone = 'b'\n[[zones]]\nseed = 'c'\nzone = 'd'\ninterval = 60\n")
    assert cfg.state_dir == "/tmp/s" and cfg.testnet
    assert cfg.dns.listen == (("0.0.0.0", 5353), ("::", 5353))
    assert cfg.dns.upstream_timeout == 2.0 and isinstance(cfg.dns.upstream_timeout, float)
    assert cfg.dht.bootstrap == (("127.0.0.1", 7000),)
    assert [z.interval for z in cfg.zones] == [3600, 60]


BAD = [
    ("[dns]\nlisten = 5\n", "2: dns.listen: expected a list"),
    ("[dns]\nlisten = ['nope']\n", "2: dns.listen: bad address 'nope': 'nope' is not an IP"),
    ("[http]\nlisten = ['127.0.0.1']\n", "2: http.listen: bad address '127.0.0.1': missing port"),
    ("[dns]\nlisten = ['5353']\n", "2: dns.listen: bad address '5353': '5353' is a port alone"),
    ("[dns]\nupstream = ['::1:53']\n", "2: dns.upstream: bad address '::1:53': not HOST:PORT"),
    ("state_dir = '/s'\n[cahce]\nmax_ttl = 5\n", "2: [cahce]: unknown section (known: cache,"),
    ("[dns]\nlisten = [53]\n", "2: dns.listen: expected \"HOST:PORT\" strings"),
    ("[dns]\nlisten = ['localhost:53']\n", "2: dns.listen: bad address 'localhost:53'"),
    ("[dns]\nupstream = ['dns.google:53']\n", "2: dns.upstream: bad address"),
    ("[dns]\nupstream = ['1.1.1.1:0']\n", "2: dns.upstream: port 0 is not a server"),
    ("[dns]\nupstream = []\n", "2: dns.upstream: needs at least one server"),
    ("[http]\nlisten = ['[::1]:99999']\n", "2: http.listen: bad address"),
    ("[dns]\nbogus = 1\n", "2: dns.bogus: unknown option"),
    ("nosuch = 1\n", "1: nosuch: unknown option"),
    ("dns = 1\n", "1: dns: expected a [table]"),
    ("zones = 1\n", "1: zones: expected [[zones]] tables"),
    ("state_dir = 5\n", "1: state_dir: expected a string"),
    ("state_dir = ''\n", "1: state_dir: must not be empty"),
    ("testnet = 'yes'\n", "1: testnet: expected true/false"),
    ("[dht]\nmode = 'turbo'\n", "2: dht.mode: must be one of client, server"),
    ("[log]\nlevel = 'loud'\n", "2: log.level: must be one of debug"),
    ("[log]\nformat = 'xml'\n", "2: log.format: must be one of auto, json, console"),
    ("[cache]\nmax_ttl = -1\n", "2: cache.max_ttl: expected a non-negative integer"),
    ("[cache]\nmax_ttl = 1.5\n", "2: cache.max_ttl: expected a non-negative integer"),
    ("[cache]\nmax_ttl = true\n", "2: cache.max_ttl: expected a non-negative integer"),
    ("[dns]\nrate_limit = 'fast'\n", "2: dns.rate_limit: expected a non-negative number"),
    ("[dns]\nrate_limit = nan\n", "2: dns.rate_limit: expected a non-negative number"),
    ("[dns]\nrate_limit = inf\n", "2: dns.rate_limit: expected a non-negative number"),
    ("[dns]\nrate_limit = true\n", "2: dns.rate_limit: expected a non-negative number"),
    ("[dns]\nupstream_timeout = 0\n", "2: dns.upstream_timeout: must be > 0"),
    ("[dns]\nquery_deadline = 0\n", "2: dns.query_deadline: must be > 0"),
    ("[pkarr]\nlookup_timeout = 0\n", "2: pkarr.lookup_timeout: must be > 0"),
    ("[http]\nenabled = 'yes'\n", "2: http.enabled: expected true/false"),
    ("[dns]\nallow = ['10.0.0.0/33']\n", "2: dns.allow: not an IP network"),
    ("[dns]\nallow = [10]\n", "2: dns.allow: expected a list of strings"),
    ("[http]\ntrusted_proxies = ['proxy']\n", "2: http.trusted_proxies: not an IP network"),
    ("[dns\n", "invalid TOML"),
    ("[cache]\nmin_ttl = 10\nmax_ttl = 5\n", "2: cache.min_ttl: must be <= cache.max_ttl"),
    ("[pkarr]\nmin_ttl = 10\nmax_ttl = 5\n", "2: pkarr.min_ttl: must be <= pkarr.max_ttl"),
    ("[pkarr]\ntld_suffix = 'Two.Labels'\n", "2: pkarr.tld_suffix: must be one lowercase"),
    ("[dns]\nudp_payload_max = 100\n", "2: dns.udp_payload_max: must be 512..65535"),
    ("[dht]\nport = 70000\n", "2: dht.port: must be 0..65535"),
    ("[dht]\nbind = 'anywhere'\n", "2: dht.bind: not an IP address"),
    ("[republish]\nmin_stored = 0\n", "2: republish.min_stored: must be >= 1"),
    ("[state]\nmax_packets = 10000000\n", "2: state.max_packets: must be 1..1000000"),
    ("[state]\nsave_every = 1\n", "2: state.save_every: unknown option"),
    ("[[zones]]\nseed = 's'\n", "1: zones.zone: required option missing"),
    ("[[zones]]\nseed = 's'\nzone = 'z'\ninterval = 5\n", "4: zones.interval: must be >= 60"),
    ("[[zones]]\nseed = ''\nzone = 'z'\n", "2: zones.seed: must be a file path"),
    ("[[zones]]\nseed = 's'\nzone = 'z'\nttl = 5\n", "4: zones.ttl: unknown option"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD)
def test_bad_config_names_file_line_and_key(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        configfile.parse(text, "/etc/pkdns.toml")
    assert f"/etc/pkdns.toml:{fragment}" in str(info.value) or (
        fragment == "invalid TOML" and "/etc/pkdns.toml: invalid TOML" in str(info.value))
    assert "\n" not in str(info.value)


def test_error_names_line_in_the_right_section() -> None:
    with pytest.raises(ConfigError, match=r"^/x.toml:4: dns.bogus"):
        configfile.parse("[http]\nenabled = true\n[dns]\nbogus = 1\n", "/x.toml")
    with pytest.raises(ConfigError, match=r"^/x.toml:4: dns.enabled: unknown option"):
        configfile.parse("[http]\nenabled = true\n[dns]\nenabled = 1\n", "/x.toml")
    with pytest.raises(ConfigError, match=r"^/x.toml:5: dns.bogus"):
        configfile.parse("[log] # comment\nlevel = 'info'\n\n[dns]\nbogus = 1\n", "/x.toml")


def test_error_names_the_line_of_the_second_zone() -> None:
    text = ("[[zones]]\nseed = 'a'\nzone = 'b'\ninterval = 60\n"
            "[[zones]]\nseed = 'c'\nzone = 'd'\ninterval = 59\n")
    with pytest.raises(ConfigError, match=r"^/x.toml:8: zones.interval: must be >= 60"):
        configfile.parse(text, "/x.toml")


def test_unreadable_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        configfile.load(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="bin.toml: config is not UTF-8"):
        configfile.load(tmp_path / "bin.toml")


def _serve_args(*argv: str) -> config.Config:
    return serve.build_config(build_parser().parse_args(["serve", *argv]))


def test_flags_override_the_file(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("[dns]\nlisten = ['127.0.0.1:53']\n[dht]\nport = 7000\n")
    cfg = _serve_args("--config", str(tmp_path / "c.toml"), "--listen", "127.0.0.2:5353",
                      "--dht-port", "0", "--no-http", "--state-dir", str(tmp_path), "-v",
                      "--bootstrap", "127.0.0.1:1", "--tld-suffix", "")
    assert cfg.dns.listen == (("127.0.0.2", 5353),)
    assert cfg.dht.port == 0 and cfg.dht.bootstrap == (("127.0.0.1", 1),)
    assert not cfg.http.enabled and cfg.log.level == "debug"
    assert cfg.state_dir == str(tmp_path) and cfg.pkarr.tld_suffix == ""


def _pkdns(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pkdns", *argv], capture_output=True,
                          text=True, timeout=30, check=False)


def test_serve_check_accepts_the_example() -> None:
    proc = _pkdns("serve", "--check", "--config", str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == [f"{EXAMPLE}: configuration OK"]


def test_serve_check_rejects_a_bad_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[dns]\n\nlisten = ['127.0.0.1:99999']\n")
    proc = _pkdns("serve", "--check", "--config", str(bad))
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(rf"pkdns: error: {re.escape(str(bad))}:3: dns.listen: bad address .*",
                        lines[0])


def test_serve_check_missing_file_is_exit_2() -> None:
    proc = _pkdns("--check", "--config", "/nonexistent/pkdns.toml")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "pkdns: error: /nonexistent/pkdns.toml: cannot read config: No such file or directory")


@pytest.mark.parametrize(("flag", "value"), [
    ("--upstream", "example.com:53"),
    ("--listen", "foo.invalid:53"),
    ("--http", "localhost:6881"),
])
def test_address_flags_must_be_ip_literals_like_the_file(flag: str, value: str) -> None:
    """A name would be a blocking getaddrinfo per forwarded query (or at bind): refused."""
    proc = _pkdns("serve", "--check", flag, value)
    assert proc.returncode == 2, proc.stdout
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"argument {flag}: bad address {value!r}" in lines[0]
    assert "is not an IP address" in lines[0]


def test_ip_literal_flags_are_accepted() -> None:
    cfg = _serve_args("--upstream", "9.9.9.9:53", "--upstream", "[2620:fe::fe]:53",
                      "--listen", "[::1]:5353", "--http", "127.0.0.1:8053")
    assert cfg.dns.upstream == (("9.9.9.9", 53), ("2620:fe::fe", 53))
    assert cfg.dns.listen == (("::1", 5353),) and cfg.http.listen == (("127.0.0.1", 8053),)


@pytest.mark.parametrize("key", ["listen", "upstream"])
def test_validate_refuses_host_names_set_in_code(key: str) -> None:
    cfg = config.replace(config.Config(), dns=config.replace(
        config.DnsConfig(), **{key: (("dns.example", 53),)}))
    with pytest.raises(ConfigError, match=rf"^<x>: dns.{key}: host names are not allowed"):
        configfile.validate(cfg, "<x>")


def _zone_config(tmp_path: Path, zone_text: str, seed_text: str = "00" * 32 + "\n") -> Path:
    (tmp_path / "seed.txt").write_text(seed_text)
    (tmp_path / "seed.txt").chmod(0o600)
    (tmp_path / "pkarr.zone").write_text(zone_text)
    conf = tmp_path / "pkdns.toml"
    conf.write_text("[[zones]]\nseed = 'seed.txt'\nzone = 'pkarr.zone'\n")
    return conf


def test_serve_check_validates_zones_offline(tmp_path: Path) -> None:
    """systemd's ExecReload runs --check: a zone with DynDNS variables passes, unfetched."""
    conf = _zone_config(tmp_path, "@ IN A {external_ipv4}\n@ IN AAAA {external_ipv6}\n")
    proc = _pkdns("serve", "--check", "--config", str(conf))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{conf}: configuration OK"


@pytest.mark.parametrize(("zone", "seed", "fragment"), [
    ("@ IN A 192.0.2.1\nwww IN CNAME\n", None, "pkarr.zone:2: "),
    ("@ IN A {external_ipv6}\n", None, "pkarr.zone:1: "),
    ("@ IN A 192.0.2.1\n", "xyz\n", "seed.txt: "),
    ("@ IN A 192.0.2.1\n", "", "seed.txt: "),
])
def test_serve_check_refuses_bad_zone_or_seed(tmp_path: Path, zone: str, seed: str | None,
                                              fragment: str) -> None:
    conf = (_zone_config(tmp_path, zone) if seed is None
            else _zone_config(tmp_path, zone, seed))
    proc = _pkdns("serve", "--check", "--config", str(conf))
    assert proc.returncode == 2, proc.stdout
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"pkdns: error: {tmp_path}/{fragment}"), lines[0]


def test_serve_check_refuses_a_missing_zone_file(tmp_path: Path) -> None:
    conf = _zone_config(tmp_path, "")
    (tmp_path / "pkarr.zone").unlink()
    proc = _pkdns("serve", "--check", "--config", str(conf))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"pkdns: error: {tmp_path}/pkarr.zone: cannot read zone "
                                   "file: No such file or directory")


ZERO_OR_TINY = [
    ("[dns]\ntcp_max_per_ip = 0\n", "2: dns.tcp_max_per_ip: must be >= 1"),
    ("[dns]\nmax_inflight = 0\n", "2: dns.max_inflight: must be >= 1"),
    ("[dns]\ntcp_idle_timeout = 0\n", "2: dns.tcp_idle_timeout: must be > 0"),
    ("[dns]\ntcp_initial_timeout = 0.0\n", "2: dns.tcp_initial_timeout: must be > 0"),
    ("[dns]\ntcp_max_connections = 0\n", "2: dns.tcp_max_connections: must be >= 1"),
    ("[dns]\nrate_limit_burst = 0.5\n", "2: dns.rate_limit_burst: must be >= 1"),
    ("[dns]\nupstream_timeout = 5\n", "2: dns.upstream_timeout: must be <= dns.query_deadline"),
    ("[pkarr]\npacket_cache_size = 0\n", "2: pkarr.packet_cache_size: must be >= 1"),
    ("[pkarr]\nmax_concurrent_lookups = 0\n", "2: pkarr.max_concurrent_lookups: must be >= 1"),
    ("[pkarr]\nnegative_ttl = 0\n", "2: pkarr.negative_ttl: must be >= 1"),
    ("[pkarr]\nmin_ttl = 0\n", "2: pkarr.min_ttl: must be >= 1"),
    ("[pkarr]\nmax_recursion_depth = 0\n", "2: pkarr.max_recursion_depth: must be >= 1"),
    ("[pkarr]\nns_port = 0\n", "2: pkarr.ns_port: must be 1..65535"),
    ("[pkarr]\nfirst_answer_window = 3\n",
     "2: pkarr.first_answer_window: must be < pkarr.lookup_timeout"),
    ("[cache]\nmax_bytes = 0\n", "2: cache.max_bytes: must be >= 65536"),
    ("[cache]\nstale_answer_ttl = 0\n", "2: cache.stale_answer_ttl: must be >= 1"),
    ("[cache]\nstale_client_timeout = 0\n", "2: cache.stale_client_timeout: must be > 0"),
    ("[dht]\nmax_stored_bytes = 100\n", "2: dht.max_stored_bytes: must be >= 4096"),
    ("[dht]\nrequest_timeout = 0\n", "2: dht.request_timeout: must be > 0"),
    ("[http]\nrelay_rate_limit_burst = 0\n", "2: http.relay_rate_limit_burst: must be >= 1"),
    ("[republish]\nretry_after = 0\n", "2: republish.retry_after: must be >= 10"),
    ("[republish]\nrepublish_after = 1\n", "2: republish.republish_after: must be >= 60"),
    ("[republish]\npopular_budget_per_hour = 0\n",
     "2: republish.popular_budget_per_hour: must be >= 1"),
    ("[state]\nsave_interval = 1\n", "2: state.save_interval: must be 0 (only at shutdown)"),
    ("[state]\nmax_nodes = 0\n", "2: state.max_nodes: must be >= 1"),
    ("[state]\nmax_packets = 0\n", "2: state.max_packets: must be 1..1000000"),
]


@pytest.mark.parametrize(("text", "fragment"), ZERO_OR_TINY)
def test_zero_and_nonsense_numbers_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        configfile.parse(text, "/etc/pkdns.toml")
    assert str(info.value).startswith(f"/etc/pkdns.toml:{fragment}")


def _numeric_options() -> list[str]:
    out = []
    for f in dataclasses.fields(config.Config):
        if dataclasses.is_dataclass(f.default_factory):
            hints = typing.get_type_hints(f.default_factory)
            out += [f"{f.name}.{k}" for k, t in hints.items() if t in (int, float)]
    return out


def _floor_text(name: str, value: float) -> str:
    section, _, key = name.partition(".")
    number = value if isinstance(getattr(getattr(config.Config(), section), key), float) else int(
        value)
    return f"# comment\n[{section}]\n{key} = {number!r}\n"


@pytest.mark.parametrize("name", [*configcheck.POSITIVE, *configcheck.AT_LEAST,
                                  *configcheck.RANGES])
def test_every_floor_is_enforced_with_file_line_and_key(name: str) -> None:
    low = configcheck.AT_LEAST.get(name, configcheck.RANGES.get(name, (0, 0))[0])
    below = low - 1 if low >= 1 else 0
    with pytest.raises(ConfigError, match=rf"^/p.toml:3: {re.escape(name)}: must be "):
        configfile.parse(_floor_text(name, below), "/p.toml")


def test_every_numeric_option_has_a_floor_or_a_meaning_for_zero() -> None:
    tables = [set(configcheck.POSITIVE), set(configcheck.AT_LEAST), set(configcheck.RANGES),
              set(configcheck.ZERO_MEANS)]
    for name in _numeric_options():
        assert sum(name in t for t in tables) == 1, name
    assert set().union(*tables) == set(_numeric_options())


@pytest.mark.parametrize("name", sorted(configcheck.ZERO_MEANS))
def test_zero_is_accepted_where_it_has_a_meaning(name: str) -> None:
    cfg = configfile.parse(_floor_text(name, 0))
    section, _, key = name.partition(".")
    assert getattr(getattr(cfg, section), key) == 0


def test_dns_addresses_default_to_port_53() -> None:
    """``--upstream 127.0.0.1`` (and the same in the file) is port 53, as in resolv.conf."""
    cfg = _serve_args("--upstream", "127.0.0.1", "--listen", "[::1]", "--listen", "127.0.0.2")
    assert cfg.dns.upstream == (("127.0.0.1", 53),)
    assert cfg.dns.listen == (("::1", 53), ("127.0.0.2", 53))
    cfg = configfile.parse("[dns]\nupstream = ['9.9.9.9', '[2620:fe::fe]']\n")
    assert cfg.dns.upstream == (("9.9.9.9", 53), ("2620:fe::fe", 53))


@pytest.mark.parametrize(("flag", "value", "hint"), [
    ("--listen", "5353", "'5353' is a port alone: give HOST:PORT, e.g. 127.0.0.1:5353"),
    ("--upstream", "::1:53", "an IPv6 address with a port is written in brackets: [::1]:53"),
    ("--upstream", "2620:fe::fe", "an IPv6 address is written in brackets: [2620:fe::fe]:53"),
    ("--http", "127.0.0.1", "missing port in '127.0.0.1'"),
])
def test_address_flag_errors_say_what_was_meant(flag: str, value: str, hint: str) -> None:
    proc = _pkdns("serve", "--check", flag, value)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert hint in line, line


def test_relative_paths_in_the_file_follow_the_file(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """state_dir once followed the working directory while zone paths followed the file."""
    (tmp_path / "etc").mkdir()
    conf = tmp_path / "etc" / "c.toml"
    conf.write_text("state_dir = 'state'\n[[zones]]\nseed = 'k/seed'\nzone = 'k/zone'\n")
    monkeypatch.chdir("/")
    cfg = configfile.load(conf)
    assert cfg.state_dir == str(tmp_path / "etc" / "state")
    assert cfg.zones[0].seed == str(tmp_path / "etc" / "k" / "seed")
    assert configfile.load(conf).state_dir == serve.build_config(
        build_parser().parse_args(["serve", "--config", str(conf)])).state_dir
    flag = _serve_args("--config", str(conf), "--state-dir", "here")
    assert flag.state_dir == "here"            # a flag: relative to the working directory
    absolute = tmp_path / "abs.toml"
    absolute.write_text("state_dir = '/var/lib/pkdns'\n")
    assert configfile.load(absolute).state_dir == "/var/lib/pkdns"


def test_the_pace_limit_reaches_the_dht_node() -> None:
    """``dht.pace_limit`` defaults to the node's own (libtorrent's ban threshold minus room for
    replies) and is what the daemon's node paces by; 0 turns pacing off."""
    from pkdns.app import Daemon
    from pkdns.dht.pacing import PACE_LIMIT

    assert config.DhtConfig().pace_limit == PACE_LIMIT
    for limit in (2, 0):
        cfg = config.Config(dht=config.DhtConfig(pace_limit=limit))
        asker = Daemon(cfg).pkarr.node._asker
        allowed = [asker.pace(("192.0.2.1", 6881)) for _ in range(5)]
        assert allowed == ([True, True, False, False, False] if limit else [True] * 5)
