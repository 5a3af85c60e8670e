"""Configuration parsing: defaults, flags and every bad-config path."""

from __future__ import annotations

import pytest

from pkdns import config
from pkdns.errors import ConfigError


def test_empty_config_is_defaults() -> None:
    assert config.parse("") == config.Config()


def test_hostport_forms() -> None:
    assert config.parse_hostport("127.0.0.1:53") == ("127.0.0.1", 53)
    assert config.parse_hostport("[::1]:5353") == ("::1", 5353)
    assert config.parse_hostport("router.bittorrent.com:6881") == ("router.bittorrent.com", 6881)
    assert config.format_hostport(("::1", 53)) == "[::1]:53"
    with pytest.raises(ValueError):
        config.parse_hostport("127.0.0.1")
    with pytest.raises(ValueError):
        config.parse_hostport("127.0.0.1:70000")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[dns]\nlisten = 5\n", "dns.listen: expected a list"),
        ("[dns]\nlisten = ['nope']\n", "dns.listen: missing port"),
        ("[dns]\nbogus = 1\n", "dns.bogus: unknown option"),
        ("nosuch = 1\n", "nosuch: unknown option"),
        ("[dht]\nmode = 'turbo'\n", "dht.mode: must be one of client, server"),
        ("[cache]\nmax_ttl = -1\n", "cache.max_ttl: expected a non-negative integer"),
        ("[http]\nenabled = 'yes'\n", "http.enabled: expected true/false"),
        ("[dns]\nallow = ['10.0.0.0/33']\n", "dns.allow: not an IP network"),
        ("[dns\n", "invalid TOML"),
        ("[cache]\nmin_ttl = 10\nmax_ttl = 5\n", "cache.min_ttl: must be <= cache.max_ttl"),
        ("[pkarr]\ntld_suffix = 'Two.Labels'\n", "pkarr.tld_suffix"),
    ],
)
def test_bad_config_names_key(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse(text, "/etc/pkdns.toml")
    assert fragment in str(info.value)
    assert "/etc/pkdns.toml" in str(info.value)


def test_error_names_line() -> None:
    with pytest.raises(ConfigError, match=r"/x.toml:3: dns.bogus"):
        config.parse("[log]\n[dns]\nbogus = 1\n", "/x.toml")
