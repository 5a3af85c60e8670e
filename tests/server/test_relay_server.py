"""The relay API over real HTTP (aiohttp client and curl) against fake store/DHT seams."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from pkdns.pkarr.client import Published
from pkdns.pkarr.signed_packet import SignedPacket
from pkdns.server.relay_api import PAYLOAD_TYPE, Fetched
from tests.conftest import load_vector
from tests.support.clock import FakeClock
from tests.support.curl import curl
from tests.support.http_rig import RelayRig
from tests.support.pkarr_factory import TS, keypair, packet

KP = keypair(3)
Z32 = KP.public_key.z32
OLD = packet(KP, ["@ 3600 IN A 192.0.2.1"], TS)
NEW = packet(KP, ["@ 3600 IN A 192.0.2.2", "_x 600 IN TXT hello"], TS + 1_000_000)


async def _get(url: str, headers: dict[str, str] | None = None
               ) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        return r.status, dict(r.headers), await r.read()


async def _put(url: str, body: bytes, headers: dict[str, str] | None = None
               ) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.put(url, data=body, headers=headers) as r:
        return r.status, dict(r.headers), await r.read()


async def test_get_fresh_cache_hit_with_headers(relay: RelayRig) -> None:
    relay.store.hold(NEW)
    status, headers, body = await _get(f"{relay.url}/{Z32}")
    assert status == 200
    assert body == NEW.relay_payload()
    assert headers["Content-Type"] == PAYLOAD_TYPE
    assert headers["Cache-Control"] == "public, max-age=600"
    assert headers["Last-Modified"] == "Tue, 14 Nov 2023 22:13:21 GMT"
    assert headers["Memento-Datetime"] == "Tue, 14 Nov 2023 22:15:00 GMT"
    assert "Pkarr-Dht-Stored-Nodes" in headers["Access-Control-Expose-Headers"]
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert SignedPacket.from_relay_payload(KP.public_key, body) == NEW
    assert relay.store.fetches == [] and relay.limiter.charged == []


async def test_if_modified_since_gives_304_or_the_body(relay: RelayRig) -> None:
    relay.store.hold(NEW)
    status, headers, body = await _get(
        f"{relay.url}/{Z32}", {"If-Modified-Since": "Tue, 14 Nov 2023 22:13:21 GMT"})
    assert (status, body) == (304, b"")
    assert headers["Last-Modified"] == "Tue, 14 Nov 2023 22:13:21 GMT"
    status, _, body = await _get(
        f"{relay.url}/{Z32}", {"If-Modified-Since": "Tue, 14 Nov 2023 22:13:20 GMT"})
    assert (status, body) == (200, NEW.relay_payload())


async def test_a_cache_revalidating_what_it_was_given_gets_304(relay: RelayRig,
                                                               tmp_path: Path) -> None:
    """A packet at …:21.5 is newer than the whole-second Last-Modified it is served with, so
    echoing that date gives 200 (pkarr's rule); the ETag names the exact packet, so a cache
    revalidating with If-None-Match (curl --etag-compare here) gets a 304 until it changes."""
    odd = packet(KP, ["@ 3600 IN A 192.0.2.3"], TS + 2_500_000)
    relay.store.hold(odd)
    status, headers, _ = await _get(f"{relay.url}/{Z32}")
    etag = {k.lower(): v for k, v in headers.items()}["etag"]
    assert status == 200 and etag.startswith('"') and etag.endswith('"')
    assert "ETag" in headers["Access-Control-Expose-Headers"]
    echoed = await _get(f"{relay.url}/{Z32}", {"If-Modified-Since": headers["Last-Modified"]})
    assert echoed[0] == 200
    tag = tmp_path / "etag"
    first = await curl("--etag-save", str(tag), f"{relay.url}/{Z32}")
    assert first.status == 200 and tag.read_text().strip() == etag
    again = await curl("--etag-compare", str(tag), f"{relay.url}/{Z32}")
    assert (again.status, again.body) == (304, b"")
    assert again.headers["etag"] == etag and "content-type" not in again.headers
    weak = await _get(f"{relay.url}/{Z32}", {"If-None-Match": f'"x", W/{etag}'})
    assert weak[0] == 304
    # If-None-Match decides when present: a far-future If-Modified-Since does not give a 304.
    other = await _get(f"{relay.url}/{Z32}", {"If-None-Match": '"other"',
                                             "If-Modified-Since": "Tue, 01 Jan 2036 00:00:00 GMT"})
    assert other[0] == 200
    relay.store.hold(packet(KP, ["@ 3600 IN A 192.0.2.4"], TS + 2_700_000))
    changed = await curl("--etag-compare", str(tag), f"{relay.url}/{Z32}")
    assert changed.status == 200 and changed.headers["etag"] != etag


async def test_cache_only_never_touches_the_network(relay: RelayRig) -> None:
    assert (await _get(f"{relay.url}/{Z32}?policy=CacheOnly"))[0] == 404
    relay.store.hold(OLD, fresh=False)
    status, _, body = await _get(f"{relay.url}/{Z32}?policy=CacheOnly")
    assert (status, body) == (200, OLD.relay_payload())
    assert relay.store.fetches == [] and relay.limiter.charged == []


async def test_cache_first_refreshes_a_stale_packet_with_a_floor(relay: RelayRig) -> None:
    relay.store.hold(OLD, fresh=False)
    relay.store.network[KP.public_key.raw] = Fetched(NEW)
    status, _, body = await _get(f"{relay.url}/{Z32}")
    assert (status, body) == (200, NEW.relay_payload())
    assert relay.store.fetches == [(KP.public_key, OLD)]
    assert relay.limiter.charged == ["127.0.0.1"]


async def test_cache_first_does_not_serve_older_than_the_floor(relay: RelayRig) -> None:
    relay.store.hold(NEW, fresh=False)
    relay.store.network[KP.public_key.raw] = Fetched(OLD)
    assert (await _get(f"{relay.url}/{Z32}"))[0] == 404
    relay.store.network[KP.public_key.raw] = Fetched(NEW)         # nodes confirm what we hold
    assert (await _get(f"{relay.url}/{Z32}"))[0] == 200


async def test_network_only_ignores_the_cache(relay: RelayRig) -> None:
    relay.store.hold(NEW)
    relay.store.network[KP.public_key.raw] = Fetched(OLD)
    status, _, body = await _get(f"{relay.url}/{Z32}?policy=NetworkOnly")
    assert (status, body) == (200, OLD.relay_payload())
    assert relay.store.fetches == [(KP.public_key, None)]


async def test_not_found_invalid_seq_unavailable_and_rate_limit(relay: RelayRig) -> None:
    raw = KP.public_key.raw
    assert (await _get(f"{relay.url}/{Z32}"))[0] == 404
    relay.store.network[raw] = Fetched(None, invalid_seq=TS + 5)
    status, headers, _ = await _get(f"{relay.url}/{Z32}")
    assert (status, headers["Pkarr-Invalid-Signed-Packet-Seq"]) == (404, str(TS + 5))
    relay.store.network[raw] = Fetched(None, responded=False)
    assert (await _get(f"{relay.url}/{Z32}"))[0] == 503
    relay.limiter.open = False
    status, headers, _ = await _get(f"{relay.url}/{Z32}?policy=NetworkOnly")
    assert (status, headers["Retry-After"]) == (429, "1")


async def test_bad_key_and_bad_policy_are_400(relay: RelayRig) -> None:
    for path in ("/not-a-key", f"/{Z32[:-1]}", f"/{Z32}?policy=Sometimes"):
        r = await curl(relay.url + path)
        assert r.status == 400, path
        assert r.headers["content-type"].startswith("text/plain")
    assert (await curl("-X", "PUT", "--data-binary", "x", relay.url + "/nope")).status == 400


async def test_put_publishes_caches_and_reports_stored_nodes(relay: RelayRig) -> None:
    status, headers, body = await _put(f"{relay.url}/{Z32}", NEW.relay_payload())
    assert (status, body) == (204, b"")
    assert headers["Pkarr-Dht-Stored-Nodes"] == "7"
    assert relay.publisher.published == [NEW]
    cached = relay.store.cached(KP.public_key)
    assert cached is not None and cached.packet == NEW
    assert (await _put(f"{relay.url}/{Z32}", NEW.relay_payload()))[0] == 204  # same: republish
    assert (await _put(f"{relay.url}/{Z32}", OLD.relay_payload()))[0] == 409
    m = (await curl(f"{relay.url}/metrics")).body
    assert b'pkdns_relay_requests_total{method="PUT",status="204"} 2.0' in m
    assert b'pkdns_relay_requests_total{method="PUT",status="409"} 1.0' in m


async def test_put_of_the_pkarr_js_vector(relay: RelayRig) -> None:
    vec = load_vector("signed_packet_js_legacy")
    body = bytes.fromhex(vec["relay_payload_hex"])
    status, headers, _ = await _put(f"{relay.url}/{vec['public_key_z32']}", body)
    assert (status, headers["Pkarr-Dht-Stored-Nodes"]) == (204, "7")
    assert relay.publisher.published[0].timestamp == vec["timestamp_us"]
    _, _, got = await _get(f"{relay.url}/{vec['public_key_z32']}")
    assert got == body


async def test_put_rejections(relay: RelayRig, tmp_path: Path) -> None:
    url = f"{relay.url}/{Z32}"
    bad_sig = bytearray(NEW.relay_payload())
    bad_sig[0] ^= 1
    other_key = packet(keypair(4), ["@ 60 IN A 192.0.2.9"]).relay_payload()
    for body in (bytes(bad_sig), other_key, b"short", b"\x00" * 1073, b"\x00" * 1104):
        assert (await _put(url, body))[0] == 400, len(body)
    big = tmp_path / "big"
    big.write_bytes(b"\x00" * 1105)
    r = await curl("-X", "PUT", "--data-binary", f"@{big}", url)
    assert r.status == 413
    assert (await curl("-X", "DELETE", url)).status == 405
    assert relay.publisher.published == []


async def test_put_if_match_rate_limit_and_dht_failures(relay: RelayRig) -> None:
    url = f"{relay.url}/{Z32}"
    relay.store.hold(OLD)
    assert (await _put(url, NEW.relay_payload(), {"If-Match": "42"}))[0] == 412
    relay.limiter.open = False
    assert (await _put(url, NEW.relay_payload(), {"If-Match": str(OLD.timestamp)}))[0] == 429
    relay.limiter.open = True
    relay.publisher.result = Published(0, conflict=True)
    assert (await _put(url, NEW.relay_payload()))[0] == 409
    relay.publisher.result = Published(0, error="no closest nodes")
    status, _, body = await _put(url, NEW.relay_payload())
    assert status == 500 and b"no closest nodes" in body
    cached = relay.store.cached(KP.public_key)
    assert cached is not None and cached.packet == OLD    # failed puts are not cached


async def test_cors_preflight_for_put(relay: RelayRig) -> None:
    r = await curl("-X", "OPTIONS", "-H", "Origin: http://localhost:3000",
                   "-H", "Access-Control-Request-Method: PUT", f"{relay.url}/{Z32}")
    assert r.status == 204
    assert "PUT" in r.headers["access-control-allow-methods"].split(", ")
    assert r.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in r.headers



async def test_put_dated_more_than_an_hour_ahead_is_400(relay: RelayRig,
                                                        fake_clock: FakeClock) -> None:
    """A signer with a broken clock must not freeze its record."""
    ahead = packet(KP, ["@ 300 IN A 192.0.2.66"], fake_clock.wall_us() + 3601 * 1_000_000)
    status, _, body = await _put(f"{relay.url}/{Z32}", ahead.relay_payload())
    assert status == 400 and b"more than an hour in the future" in body
    assert relay.publisher.published == [] and relay.store.cached(KP.public_key) is None
    near = packet(KP, ["@ 300 IN A 192.0.2.67"], fake_clock.wall_us() + 3599 * 1_000_000)
    assert (await _put(f"{relay.url}/{Z32}", near.relay_payload()))[0] == 204
    assert relay.publisher.published == [near]
