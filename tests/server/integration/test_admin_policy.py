"""The HTTP access policy, against the whole daemon with the real curl: from an address outside
``http.admin_allow`` (127.0.0.2 here; also a client named by a trusted proxy), ``/metrics``,
``/``, ``/api/...`` and unknown paths answer 403, while DoH (the DNS policy decides inside)
and the relay API stay public; from inside, all answer as before."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import dns.message
import pytest

from pkdns.app import Daemon
from pkdns.config import Config, DhtConfig, DnsConfig, HttpConfig, PkarrConfig
from tests.support.curl import curl
from tests.support.pkarr_factory import keypair
from tests.support.require import require_tool

pytestmark = pytest.mark.slow
KEY = keypair(7).public_key.z32
PRIVATE = ("/metrics", "/", "/api/status", f"/api/resolve/{KEY}", "/no/such/page")


@pytest.fixture
async def base(tmp_path: object) -> AsyncIterator[str]:
    require_tool("curl")
    cfg = Config(
        state_dir=str(tmp_path),
        dns=DnsConfig(listen=(("127.0.0.1", 0),), upstream=(("127.0.0.1", 9),)),
        http=HttpConfig(listen=(("127.0.0.1", 0),), admin_allow=("127.0.0.1/32",),
                        trusted_proxies=("127.0.0.3/32",)),
        pkarr=PkarrConfig(lookup_timeout=0.5),
        dht=DhtConfig(port=0, bind="127.0.0.1", bootstrap=(("127.0.0.1", 9),)))
    d = Daemon(cfg)
    try:
        await d.start()
        assert d.http is not None
        host, port = d.http.addresses[0]
        yield f"http://{host}:{port}"
    finally:
        await d.stop()


def _doh(name: str) -> str:
    wire = dns.message.make_query(name, "A").to_wire()
    return "/dns-query?dns=" + base64.urlsafe_b64encode(wire).decode().rstrip("=")


async def test_outside_admin_allow_only_public_paths_answer(base: str) -> None:
    outside = ("--interface", "127.0.0.2")
    for path in PRIVATE:
        r = await curl(*outside, base + path)
        assert r.status == 403 and b"http.admin_allow" in r.body, (path, r.status)
    doh = await curl(*outside, base + _doh("localhost"))
    assert doh.status == 200 and doh.headers["content-type"] == "application/dns-message"
    relay = await curl(*outside, base + "/" + KEY)
    assert relay.status != 403 and b"admin_allow" not in relay.body   # the relay answered

    preflight = await curl(*outside, "-X", "OPTIONS", base + "/metrics")
    assert preflight.status == 204
    proxied = await curl("--interface", "127.0.0.3", "-H", "X-Forwarded-For: 203.0.113.9",
                         base + "/metrics")
    assert proxied.status == 403
    inside = [await curl(base + path) for path in PRIVATE[:4]]
    assert [r.status for r in inside[:3]] == [200, 200, 200]
    assert inside[3].status != 403                  # /api/resolve: no DHT here, but not ours
    assert b'pkdns_dropped_total{reason="http_acl"} 6.0' in inside[0].body
