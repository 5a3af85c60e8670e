"""/dns-query over real HTTP: aiohttp client, curl and dnspython's DoH client (RFC 8484)."""

from __future__ import annotations

import aiohttp
import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from pkdns.server import doh
from tests.conftest import load_vector
from tests.support.curl import curl
from tests.support.http_fakes import FakeDns

CT = {"Content-Type": doh.CONTENT_TYPE, "Accept": doh.CONTENT_TYPE}


def _query(name: str = "a.example.") -> bytes:
    return dns.message.make_query(name, "A", id=0).to_wire()


async def test_get_and_post_answer_through_the_resolver(doh_url: str, fake_dns: FakeDns) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{doh_url}/dns-query", params={"dns": doh.encode_dns_param(_query())},
                         headers={"Accept": doh.CONTENT_TYPE}) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == doh.CONTENT_TYPE
            assert r.headers["Cache-Control"] == "max-age=123"
            got = dns.message.from_wire(await r.read())
        async with s.post(f"{doh_url}/dns-query", data=_query("nx.example."), headers=CT) as r:
            assert r.status == 200
            assert r.headers["Cache-Control"] == "max-age=60"
            nx = dns.message.from_wire(await r.read())
    assert got.answer[0][0].to_text() == "192.0.2.1"
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert [c[1:] for c in fake_dns.calls] == [("127.0.0.1", "doh", 65535)] * 2


async def test_dnspython_doh_client_get_and_post(doh_url: str) -> None:
    for post in (False, True):
        q = dns.message.make_query("a.example.", "A")
        r = await dns.asyncquery.https(q, f"{doh_url}/dns-query", post=post, timeout=5)
        assert r.id == q.id
        assert r.answer[0][0].to_text() == "192.0.2.1"


async def test_rfc8484_vector_with_curl(doh_url: str) -> None:
    vec = load_vector("doh")["get"]
    r = await curl("-H", "Accept: application/dns-message",
                   f"{doh_url}/dns-query?dns={vec['dns_base64url_nopad']}")
    assert r.status == 200, r.body
    assert r.headers["content-type"] == doh.CONTENT_TYPE
    assert r.headers["cache-control"] == "max-age=60"
    assert dns.message.from_wire(r.body).rcode() == dns.rcode.NXDOMAIN
    assert dns.message.from_wire(r.body).question[0].name.labels[1].startswith(b"62character")


@pytest.mark.parametrize(("args", "status"), [
    (["/dns-query"], 400),                                          # GET without dns=
    (["/dns-query?dns=not*base64"], 400),
    (["/dns-query?dns=AAAA"], 400),                                 # 3 bytes: not a header
    (["-X", "POST", "-H", "Content-Type: text/plain", "--data-binary", "x" * 20,
      "/dns-query"], 415),
    (["-X", "POST", "--data-binary", "@BIG", "-H", "Content-Type: application/dns-message",
      "/dns-query"], 413),
    (["-X", "PUT", "--data-binary", "x", "/dns-query"], 405),
    (["-X", "DELETE", "/dns-query"], 405),
])
async def test_error_status_codes_with_curl(doh_url: str, tmp_path: object, args: list[str],
                                            status: int, fake_dns: FakeDns) -> None:
    big = f"{tmp_path}/big"
    with open(big, "wb") as fh:
        fh.write(b"\x00" * (doh.MAX_MESSAGE + 1))
    args = [a.replace("@BIG", "@" + big) for a in args]
    r = await curl(*args[:-1], doh_url + args[-1])
    assert r.status == status, r.body
    assert r.headers["access-control-allow-origin"] == "*"
    if status == 405:
        assert r.headers["allow"] == "GET, POST"
    assert fake_dns.calls == []


async def test_dropped_query_is_400(doh_url: str, fake_dns: FakeDns) -> None:
    fake_dns.drop = True
    async with aiohttp.ClientSession() as s, s.post(
            f"{doh_url}/dns-query", data=_query(), headers=CT) as r:
        assert r.status == 400


async def test_x_forwarded_for_only_from_a_trusted_proxy(doh_url: str, fake_dns: FakeDns) -> None:
    xff = {"X-Forwarded-For": "203.0.113.7, 10.1.2.3", **CT}
    for local in ("127.0.0.1", "127.0.0.9"):
        conn = aiohttp.TCPConnector(local_addr=(local, 0))
        async with aiohttp.ClientSession(connector=conn) as s, s.post(
                f"{doh_url}/dns-query", data=_query(), headers=xff) as r:
            assert r.status == 200
    assert [c[1] for c in fake_dns.calls] == ["127.0.0.1", "203.0.113.7"]


async def test_cors_preflight_and_metrics(doh_url: str) -> None:
    r = await curl("-X", "OPTIONS", "-H", "Origin: https://app.example",
                   "-H", "Access-Control-Request-Method: POST",
                   "-H", "Access-Control-Request-Headers: content-type", f"{doh_url}/dns-query")
    assert r.status == 204
    assert r.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in r.headers
    assert "POST" in r.headers["access-control-allow-methods"].split(", ")
    assert r.headers["access-control-allow-headers"] == "content-type"
    await curl("-X", "DELETE", f"{doh_url}/dns-query")
    m = await curl(f"{doh_url}/metrics")
    assert m.status == 200
    assert m.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert b'pkdns_dropped_total{reason="doh_405"} 1.0' in m.body
