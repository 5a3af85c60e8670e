"""The status page and its JSON endpoints, over HTTP and in headless Chromium."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from tests.support.curl import curl
from tests.support.http_rig import StatusRig
from tests.support.pkarr_factory import TS, keypair, packet
from tests.support.require import require_tool

KP = keypair(9)
PACKET = packet(KP, ["@ 300 IN A 192.0.2.10", "www 300 IN CNAME example.com.",
                     "_txt 120 IN TXT \"hello pkdns\""], TS)
ROOT = Path(__file__).parents[1]


async def test_status_json(status_site: StatusRig) -> None:
    async with aiohttp.ClientSession() as s, s.get(f"{status_site.url}/api/status") as r:
        assert r.status == 200
        body = await r.json()
    assert body["uptime"] == 3725.0
    assert body["routing_table_size"] == 42 and body["network_size"] == 1234
    assert body["dht_health"]["reachable"] is False  # what the node reports, passed through
    assert body["dht_health"]["answered_ratio"] == 0.0
    assert body["dht_mode"] == "client" and body["dns_listeners"] == ["127.0.0.1:5300"]
    assert body["http_listeners"] == [status_site.url.removeprefix("http://")]
    assert body["cache"] == {"entries": 3, "bytes": 900}
    assert body["version"]


async def test_index_has_no_external_assets(status_site: StatusRig) -> None:
    r = await curl(status_site.url + "/")
    assert r.status == 200 and r.headers["content-type"].startswith("text/html")
    html = r.body.decode()
    assert 'id="lookup"' in html and "/api/resolve/" in html
    html = html.replace('"http://www.w3.org/2000/svg"', "SVG_NS")   # a name, never fetched
    for external in ("http://", "https://", "src=", "<link"):
        assert external not in html


async def test_resolve_api(status_site: StatusRig) -> None:
    status_site.store.hold(PACKET)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{status_site.url}/api/resolve/{KP.public_key.z32}") as r:
            found = await r.json()
        async with s.get(f"{status_site.url}/api/resolve/{keypair(10).public_key.z32}") as r:
            assert r.status == 404
            missing = await r.json()
        async with s.get(f"{status_site.url}/api/resolve/nonsense") as r:
            assert r.status == 400
            assert "invalid public key" in (await r.json())["error"]
    z = KP.public_key.z32
    assert found["found"] and found["timestamp"] == TS
    assert [(x["name"], x["ttl"], x["type"], x["data"]) for x in found["records"]] == [
        (f"{z}.", 300, "A", "192.0.2.10"), (f"www.{z}.", 300, "CNAME", "example.com."),
        (f"_txt.{z}.", 120, "TXT", '"hello pkdns"')]
    assert missing == {"found": False, "error": "not found"}


@pytest.mark.slow
async def test_lookup_form_in_headless_chromium(status_site: StatusRig, tmp_path: Path) -> None:
    node = require_tool("node")
    chromium = require_tool("chromium", "/usr/bin/chromium")
    status_site.store.hold(PACKET)
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = artifacts / "status_page_fake.png"
    proc = await asyncio.create_subprocess_exec(
        node, str(ROOT / "interop" / "status_page.mjs"), "--chromium", chromium,
        "--url", status_site.url + "/",
        "--key", KP.public_key.z32, "--screenshot", str(shot),
        "--user-data-dir", str(tmp_path / "chromium"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()[-2000:]
    page = json.loads(out.decode().strip().splitlines()[-1])
    assert page["status"]["routing_table_size"] == "42"
    assert page["status"]["uptime"] == "1h 2m 5s"
    assert [r[2:] for r in page["rows"]] == [["A", "192.0.2.10"], ["CNAME", "example.com."],
                                            ["TXT", '"hello pkdns"']]
    assert page["message"].startswith("3 records")
    assert shot.stat().st_size > 10_000
