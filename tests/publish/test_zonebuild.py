"""Zone builder: seed + zone file (+ DynDNS variables via a fake and a real loopback IP echo)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from aiohttp import web

from pkdns.config import RepublishConfig, ZoneConfig
from pkdns.errors import PkdnsError, UsageError
from pkdns.publish.zonebuild import ZoneBuilder, check_zone
from tests.support import pkarr_factory as pf

TS = 1_700_000_000_000_000


def _zone(tmp_path: Path, text: str) -> ZoneConfig:
    (tmp_path / "seed").write_text(pf.keypair(3).seed.hex())
    (tmp_path / "seed").chmod(0o600)
    (tmp_path / "zone").write_text(text)
    return ZoneConfig(seed=str(tmp_path / "seed"), zone=str(tmp_path / "zone"))


async def test_plain_zone(tmp_path: Path) -> None:
    async def never(urls: Sequence[str], family: int, timeout: float) -> str:
        raise AssertionError("no variables, no lookup")

    packet = await ZoneBuilder(RepublishConfig(), never)(
        _zone(tmp_path, "@ IN A 192.0.2.1\nwww 60 IN TXT hi\n"), TS)
    assert packet.public_key == pf.keypair(3).public_key and packet.timestamp == TS
    assert sorted(str(rr.rtype) for rr in packet.records) == ["1", "16"]


async def test_dyndns_variables(tmp_path: Path) -> None:
    asked: list[int] = []

    async def fake(urls: Sequence[str], family: int, timeout: float) -> str:
        asked.append(family)
        return "203.0.113.7" if family == socket.AF_INET else "2001:db8::7"

    zone = _zone(tmp_path, "@ IN A {external_ipv4}\n@ IN AAAA {external_ipv6}\n")
    packet = await ZoneBuilder(RepublishConfig(), fake)(zone, TS)
    assert asked == [socket.AF_INET, socket.AF_INET6]
    assert {rr.rdata.toZone() for rr in packet.records} == {"203.0.113.7", "2001:db8::7"}


async def test_changed_compares_with_the_address_the_zone_was_signed_with(tmp_path: Path
                                                                         ) -> None:
    now = {"v4": "203.0.113.7"}
    asked: list[int] = []

    async def fake(urls: Sequence[str], family: int, timeout: float) -> str:
        asked.append(family)
        return now["v4"]

    builder = ZoneBuilder(RepublishConfig(), fake)
    zone = _zone(tmp_path, "home IN A {external_ipv4}\n")
    assert await builder.changed(zone) is None           # not signed yet: nothing to compare
    await builder(zone, TS)
    assert await builder.changed(zone) is False
    now["v4"] = "203.0.113.8"
    assert await builder.changed(zone) is True
    packet = await builder(zone, TS + 1)
    assert [rr.rdata.toZone() for rr in packet.records] == ["203.0.113.8"]
    assert await builder.changed(zone) is False
    asked.clear()
    Path(zone.zone).write_text("@ IN A 192.0.2.1\n")     # variables gone: no lookup
    assert await builder.changed(zone) is None and asked == []


async def test_errors_name_the_file(tmp_path: Path) -> None:
    builder = ZoneBuilder(RepublishConfig())
    zone = _zone(tmp_path, "@ IN BOGUS x\n")
    with pytest.raises(UsageError, match=r"zone:1"):
        await builder(zone, TS)
    with pytest.raises(UsageError, match="cannot read zone file"):
        await builder(ZoneConfig(seed=zone.seed, zone=str(tmp_path / "missing")), TS)
    with pytest.raises(UsageError, match="seed"):
        await builder(ZoneConfig(seed=str(tmp_path / "zone"), zone=zone.zone), TS)


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    """A real IP-echo HTTP service on loopback."""
    async def reply(request: web.Request) -> web.Response:
        return web.Response(text="198.51.100.9\n")

    app = web.Application()
    app.router.add_get("/", reply)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def test_real_ip_echo_on_loopback(tmp_path: Path, echo: str) -> None:
    cfg = RepublishConfig(ip_echo_v4=(echo,), ip_echo_timeout=2.0)
    packet = await ZoneBuilder(cfg)(_zone(tmp_path, "dyn IN A {external_ipv4}\n"), TS)
    assert [rr.rdata.toZone() for rr in packet.records] == ["198.51.100.9"]
    dead = RepublishConfig(ip_echo_v4=("http://127.0.0.1:9/",), ip_echo_timeout=1.0)
    with pytest.raises(PkdnsError, match="external IPv4"):
        await ZoneBuilder(dead)(_zone(tmp_path, "dyn IN A {external_ipv4}\n"), TS)


def test_check_zone_accepts_variables_without_the_network(tmp_path: Path) -> None:
    """``--check`` must not ask IP-echo services; a zone using the variables still passes."""
    check_zone(_zone(tmp_path, "@ IN A {external_ipv4}\nv6 IN AAAA {external_ipv6}\n"))


@pytest.mark.parametrize(("text", "fragment"), [
    ("@ IN A 192.0.2.1\nwww IN BOGUS x\n", "zone:2: "),
    ("@ IN A {external_ipv6}\n", "zone:1: "),
    ("".join(f"t{i} IN TXT {'x' * 200}\n" for i in range(6)), "zone: "),
])
def test_check_zone_names_file_and_line(tmp_path: Path, text: str, fragment: str) -> None:
    zone = _zone(tmp_path, text)
    with pytest.raises(UsageError) as info:
        check_zone(zone)
    assert f"{tmp_path}/{fragment}" in str(info.value)


def test_zone_errors_name_the_field_and_the_known_variables(tmp_path: Path) -> None:
    """dnspython says "Text input is malformed" for both of these; the user needs more."""
    with pytest.raises(UsageError) as info:
        check_zone(_zone(tmp_path, "@ IN A 192.0.2.1\nhome IN A {external_ipv5}\n"))
    assert str(info.value) == (
        f"{tmp_path}/zone:2: unknown variable {{external_ipv5}} (known: {{external_ipv4}}, "
        "{external_ipv6}): 'home IN A {external_ipv5}'")
    with pytest.raises(UsageError) as info:
        check_zone(_zone(tmp_path, "@ IN A 192.0.2.1\n\nwww IN A 192.0.2\n"))
    assert str(info.value) == (
        f"{tmp_path}/zone:3: A record: '192.0.2' is not an IPv4 address: 'www IN A 192.0.2'")


def test_check_zone_bad_seed(tmp_path: Path) -> None:
    zone = _zone(tmp_path, "@ IN A 192.0.2.1\n")
    (tmp_path / "seed").write_text("not a seed")
    with pytest.raises(UsageError, match=rf"^{tmp_path}/seed: "):
        check_zone(zone)
    with pytest.raises(UsageError, match="cannot read seed file"):
        check_zone(ZoneConfig(seed=str(tmp_path / "missing"), zone=zone.zone))


async def test_the_daemon_refuses_a_seed_every_user_may_read(tmp_path: Path) -> None:
    """Like ssh with a private key: --check and the republisher refuse; group access stays
    allowed (mode 0640 with a service group is the documented way to share the seed)."""
    zone = _zone(tmp_path, "@ IN A 192.0.2.1\n")
    for mode, how in ((0o644, "readable"), (0o602, "writable")):
        (tmp_path / "seed").chmod(mode)
        with pytest.raises(UsageError) as info:
            check_zone(zone)
        assert str(info.value) == (f"{tmp_path}/seed: seed file is {how} by every user (mode "
                                   f"{mode:04o}); it is the private key: chmod 600 {tmp_path}/seed")
        with pytest.raises(UsageError, match="by every user"):
            await ZoneBuilder(RepublishConfig())(zone, TS)
    (tmp_path / "seed").chmod(0o640)
    check_zone(zone)
