"""The gateway over real TLS sockets: a verified origin is relayed, anything else is a 502
page (and the origin never receives the request), unknown names get a TLS alert, port 80
redirects. The packet source is a fake (a dict); the pkarr handler, the CA, the TLS on both
sides and the origin server are the real ones."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pkdns.answer.answerer import PkarrAnswerer
from pkdns.answer.packets import SourceResult, Status
from pkdns.clock import SYSTEM_CLOCK
from pkdns.config import Config, GatewayConfig, PkarrConfig
from pkdns.gateway import tlsa
from pkdns.gateway.server import GatewayService
from pkdns.pkarr.keys import PublicKey
from pkdns.pkarr.signed_packet import SignedPacket
from pkdns.pkarr.zone import parse_zone
from tests.gateway.certs import self_signed
from tests.gateway.origin import Origin
from tests.support import pkarr_factory as pf

GOOD, BAD, NO_TLSA, DOWN = (pf.keypair(n) for n in (21, 22, 23, 24))


class DictSource:
    def __init__(self) -> None:
        self.packets: dict[str, SignedPacket] = {}

    def add(self, zone: str, kp: object) -> None:
        packet = SignedPacket.sign(kp, parse_zone(zone, kp.public_key), pf.TS)  # type: ignore[attr-defined]
        self.packets[packet.public_key.z32] = packet

    async def get(self, key: PublicKey, client_ip: str) -> SourceResult:
        packet = self.packets.get(key.z32)
        if packet is None:
            return SourceResult(Status.NOT_FOUND, negative_ttl=60)
        return SourceResult(Status.FOUND, packet)


@dataclass
class Lab:
    gateway: GatewayService
    origin: Origin
    ca_file: Path

    @property
    def port(self) -> int:
        return self.gateway.tls_bound[0][1]

    async def get(self, host: str, path: str = "/") -> bytes:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, ssl=ctx,
                                                       server_hostname=host)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                     .encode())
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return data


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    cert, key = self_signed(tmp_path)
    other, _ = self_signed(tmp_path, "other")
    good = tlsa.record_for(tlsa.cert_der_from_pem(cert.read_bytes(), "c")).text()
    bad = tlsa.record_for(tlsa.cert_der_from_pem(other.read_bytes(), "o")).text()
    origin = await Origin(cert, key).start()
    source = DictSource()
    source.add(f"@ IN A 127.0.0.1\n_443._tcp IN TLSA {good}\n", GOOD)
    source.add(f"@ IN A 127.0.0.1\n_443._tcp IN TLSA {bad}\n", BAD)
    source.add("@ IN A 127.0.0.1\n", NO_TLSA)
    source.add(f"@ IN A 127.0.0.9\n_443._tcp IN TLSA {good}\n", DOWN)
    g = GatewayConfig(enabled=True, listen=(("127.0.0.1", 0),),
                      http_listen=(("127.0.0.1", 0),), origin_port=origin.port,
                      origin_timeout=20.0, handshake_timeout=30.0)   # 200 at once, loaded CI
    cfg = Config(state_dir=str(tmp_path / "state"), gateway=g)
    # The origin is on loopback: the test keys are exempt from the rebinding filter.
    keys = [kp.public_key.z32 for kp in (GOOD, BAD, NO_TLSA, DOWN)]
    gateway = GatewayService(cfg, source, PkarrAnswerer(source, None, PkarrConfig(),
                                                        own_keys=keys), SYSTEM_CLOCK)
    await gateway.start()
    try:
        yield Lab(gateway, origin, tmp_path / "state" / "gateway-ca.crt")
    finally:
        await gateway.stop()
        await origin.close()


def _z(kp: object) -> str:
    return f"{kp.public_key.z32}.key"  # type: ignore[attr-defined]


async def test_verified_origin_is_relayed(lab: Lab) -> None:
    for path in ("/", "/second"):
        reply = await lab.get(_z(GOOD), path)
        assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(lab.origin.body), reply
    assert [r.split(b" ")[1] for r in lab.origin.requests] == [b"/", b"/second"]
    assert lab.gateway.leaves is not None and lab.gateway.leaves.minted == 1    # cached
    assert lab.gateway.stats.relayed == 2


async def test_mismatch_is_a_502_and_the_origin_never_gets_the_request(lab: Lab) -> None:
    reply = await lab.get(_z(BAD))
    assert reply.startswith(b"HTTP/1.1 502 Bad Gateway"), reply
    assert b"127.0.0.1: its certificate matches no TLSA record of the key" in reply
    assert lab.origin.connections == 1 and lab.origin.requests == []


async def test_missing_tlsa_unknown_key_and_dead_origin_are_502s(lab: Lab) -> None:
    no_tlsa = await lab.get(_z(NO_TLSA))
    assert no_tlsa.startswith(b"HTTP/1.1 502") and b"has no TLSA record at _443._tcp." in no_tlsa
    unknown = await lab.get(_z(pf.keypair(25)))
    assert unknown.startswith(b"HTTP/1.1 502") and b"no signed packet" in unknown
    down = await lab.get(_z(DOWN))
    assert down.startswith(b"HTTP/1.1 502") and b"127.0.0.9: cannot connect" in down
    assert lab.origin.requests == []


async def test_names_outside_key_get_no_certificate(lab: Lab) -> None:
    for host in ("example.com", pf.keypair(21).public_key.z32, None):
        ctx = ssl.create_default_context(cafile=str(lab.ca_file))
        if host is None:
            ctx.check_hostname = False
        # The handshake is aborted before the server's certificate: asyncio closes the
        # connection without flushing OpenSSL's unrecognized_name alert, so clients see EOF.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _, w = await asyncio.open_connection("127.0.0.1", lab.port, ssl=ctx,
                                                 server_hostname=host)
            w.close()
    assert lab.gateway.leaves is not None and lab.gateway.leaves.minted == 0
    assert lab.gateway.stats.unknown_sni == 3


async def test_port_80_redirects_key_names_only(lab: Lab) -> None:
    port = lab.gateway.http_bound[0][1]

    async def ask(host: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /p?q=1 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return data

    moved = await ask(f"{_z(GOOD)}:80")
    assert moved.startswith(b"HTTP/1.1 308") and \
        f"Location: https://{_z(GOOD)}/p?q=1\r\n".encode() in moved
    assert (await ask("example.com")).startswith(b"HTTP/1.1 400")


async def test_acl_closes_other_clients(tmp_path: Path) -> None:
    source = DictSource()
    g = GatewayConfig(enabled=True, listen=(("127.0.0.1", 0),), http_listen=(),
                      allow=("10.0.0.0/8",))
    gateway = GatewayService(Config(state_dir=str(tmp_path), gateway=g), source,
                             PkarrAnswerer(source, None, PkarrConfig()), SYSTEM_CLOCK)
    await gateway.start()
    try:
        ctx = ssl.create_default_context(cafile=str(tmp_path / "gateway-ca.crt"))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _, w = await asyncio.open_connection("127.0.0.1", gateway.tls_bound[0][1],
                                                 ssl=ctx, server_hostname=_z(GOOD))
            w.close()
        assert gateway.stats.handshakes == 0
    finally:
        await gateway.stop()


async def test_200_parallel_page_loads_complete(lab: Lab) -> None:
    replies = await asyncio.gather(*(lab.get(_z(GOOD), f"/{i}") for i in range(200)))
    assert all(r.startswith(b"HTTP/1.1 200 OK") and r.endswith(lab.origin.body)
               for r in replies)
    assert sorted(int(r.split(b" ")[1][1:]) for r in lab.origin.requests) == list(range(200))
    assert lab.gateway.stats.relayed == 200 and lab.gateway.leaves is not None
    assert lab.gateway.leaves.minted == 1


async def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    from pkdns.errors import PkdnsError

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        source = DictSource()
        g = GatewayConfig(enabled=True, listen=(("127.0.0.1", port),), http_listen=())
        gateway = GatewayService(Config(state_dir=str(tmp_path), gateway=g), source,
                                 PkarrAnswerer(source, None, PkarrConfig()), SYSTEM_CLOCK)
        with pytest.raises(PkdnsError, match=rf"gateway: cannot listen on 127.0.0.1:{port}: "
                           r"Address already in use \(a web server there"):
            await gateway.start()
        await gateway.stop()
