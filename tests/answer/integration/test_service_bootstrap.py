"""PkarrService resolves bootstrap host names through the configured upstream (pkdns#24).

A real knotd on loopback serves ``bootstrap.test A 127.0.0.1``; the daemon's bootstrap is
``bootstrap.test:PORT`` (a loopback testnet node), and the system resolver is rigged to fail
and record any lookup, so joining proves the name went through the upstream.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from pkdns.app import Daemon
from pkdns.config import Config, DhtConfig, DnsConfig, HttpConfig
from pkdns.configfile import parse
from pkdns.dht.testnet import Testnet
from pkdns.errors import ConfigError, DhtError
from tests.support.knot import knot_server

ZONE = """$ORIGIN bootstrap.test.
$TTL 300
@ SOA ns host 1 3600 600 86400 60
@ NS ns
@ A 127.0.0.1
ns A 127.0.0.1
"""


@pytest.fixture
def system_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every name given to the system resolver; ``*.test`` names fail there."""
    seen: list[str] = []
    real = socket.getaddrinfo

    def fake(host: Any, *args: Any, **kw: Any) -> Any:
        seen.append(str(host))
        if str(host).endswith(".test"):
            raise socket.gaierror(socket.EAI_NONAME, "system resolver must not see this")
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return seen


def _config(tmp: Path, upstream: tuple[str, int], bootstrap: tuple[str, int]) -> Config:
    return Config(
        state_dir=str(tmp / "state"),
        dns=DnsConfig(listen=(("127.0.0.1", 0),), upstream=(upstream,), rate_limit=0),
        dht=DhtConfig(port=0, bind="127.0.0.1", bootstrap=(bootstrap,), request_timeout=0.5),
        http=HttpConfig(enabled=False),
    )


async def test_bootstrap_name_goes_to_the_upstream_not_the_system(
        tmp_path: Path, testnet: Testnet, system_lookups: list[str]) -> None:
    port = testnet.nodes[0].address[1]
    with knot_server(tmp_path, {"bootstrap.test.": ZONE}) as knot:
        d = Daemon(_config(tmp_path, (knot.host, knot.port), ("bootstrap.test", port)))
        await d.start()
        try:
            assert await d.pkarr.resolve_host("bootstrap.test", port) == [("127.0.0.1", port)]
            await asyncio.wait_for(d.pkarr.bootstrapped.wait(), 10)
            assert d.pkarr.node.routing_table_size() >= 5
        finally:
            await d.stop()
    assert not [h for h in system_lookups if "bootstrap.test" in h]


async def test_unresolvable_or_literal_bootstrap_hosts(tmp_path: Path,
                                                       system_lookups: list[str]) -> None:
    with knot_server(tmp_path, {"bootstrap.test.": ZONE}) as knot:
        d = Daemon(_config(tmp_path, (knot.host, knot.port), ("127.0.0.1", 9)))
        svc = d.pkarr
        assert await svc.resolve_host("192.0.2.1", 6881) == [("192.0.2.1", 6881)]
        assert await svc.resolve_host("::1", 6881) == []           # the DHT socket is IPv4
        assert await svc.resolve_host("localhost", 7) == [("127.0.0.1", 7)]
        with pytest.raises(DhtError, match="nope.bootstrap.test: NXDOMAIN"):
            await svc.resolve_host("nope.bootstrap.test", 1)
    assert not system_lookups


def test_ns_port_option_reaches_the_answerer(tmp_path: Path) -> None:
    cfg = _config(tmp_path, ("127.0.0.1", 9), ("127.0.0.1", 9))
    assert Daemon(cfg).pkarr.handler.ns_port == 53
    cfg = parse("[pkarr]\nns_port = 5300\n[dns]\nupstream = ['127.0.0.1:9']\n")
    assert Daemon(cfg).pkarr.handler.ns_port == 5300
    with pytest.raises(ConfigError, match="ns_port.*must be 1..65535"):
        parse("[pkarr]\nns_port = 70000\n")
