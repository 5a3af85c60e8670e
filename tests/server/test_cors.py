"""CORS on every route: any origin, never credentials, the pkarr relay headers exposed."""

from __future__ import annotations

import pytest

from tests.support.curl import curl
from tests.support.http_rig import StatusRig
from tests.support.pkarr_factory import TS, keypair, packet

KP = keypair(12)
ORIGIN = "https://evil.example"
ROUTES = [
    ("GET", f"/{KP.public_key.z32}", 200),              # relay GET, held packet
    ("GET", f"/{keypair(13).public_key.z32}?policy=CacheOnly", 404),
    ("GET", "/not-a-key", 400),
    ("PUT", f"/{KP.public_key.z32}", 400),               # relay PUT, empty body
    ("GET", "/api/status", 200),
    ("GET", "/metrics", 200),
    ("DELETE", "/api/status", 405),
]


@pytest.mark.parametrize(("method", "path", "status"), ROUTES)
async def test_any_origin_without_credentials(status_site: StatusRig, method: str, path: str,
                                              status: int) -> None:
    status_site.store.hold(packet(KP, ["@ 300 IN A 192.0.2.12"], TS))
    r = await curl("-X", method, "-H", f"Origin: {ORIGIN}", status_site.url + path)
    assert r.status == status
    assert r.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in r.headers
    exposed = r.headers["access-control-expose-headers"].split(", ")
    assert {"Pkarr-Dht-Stored-Nodes", "Pkarr-Invalid-Signed-Packet-Seq"} <= set(exposed)


async def test_preflight_never_allows_credentials(status_site: StatusRig) -> None:
    r = await curl("-X", "OPTIONS", "-H", f"Origin: {ORIGIN}",
                   "-H", "Access-Control-Request-Method: PUT",
                   "-H", "Access-Control-Request-Headers: if-match, content-type",
                   f"{status_site.url}/{KP.public_key.z32}")
    assert r.status == 204
    assert r.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in r.headers
    assert set(r.headers["access-control-allow-methods"].split(", ")) == {
        "GET", "POST", "PUT", "OPTIONS"}
    assert r.headers["access-control-allow-headers"] == "if-match, content-type"
    assert r.headers["access-control-max-age"] == "86400"
