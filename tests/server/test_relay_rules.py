"""Pure rules of the relay API: dates, If-Modified-Since precision, policies, If-Match."""

from __future__ import annotations

import pytest

from pkdns.server import relay_api as ra
from tests.conftest import load_vector
from tests.support.pkarr_factory import keypair, packet


@pytest.mark.parametrize("case", load_vector("relay_http")["if_modified_since_cases"])
def test_if_modified_since_vectors(case: dict[str, object]) -> None:
    ts = case["packet_timestamp_us"]
    assert isinstance(ts, int)
    expected = case["expected_status"] == 304
    assert ra.not_modified(ts, str(case["if_modified_since"])) is expected


def test_http_date_round_trip_is_whole_seconds() -> None:
    assert ra.http_date(784111777500000) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert ra.parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777000000
    assert ra.parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777000000  # RFC 850
    assert ra.parse_http_date("yesterday") is None
    assert ra.not_modified(784111777000000, "not a date") is False
    assert ra.not_modified(784111777000000, None) is False


def test_policies() -> None:
    assert ra.parse_policy(None) is ra.Policy.CACHE_FIRST
    assert ra.parse_policy("CacheOnly") is ra.Policy.CACHE_ONLY
    assert ra.parse_policy("NetworkOnly") is ra.Policy.NETWORK_ONLY
    with pytest.raises(ra.RelayError) as err:
        ra.parse_policy("cacheonly")
    assert err.value.status == 400


def test_keys_in_any_pkarr_form_and_bad_keys() -> None:
    z32 = keypair(1).public_key.z32
    assert ra.parse_key(z32).z32 == z32
    assert ra.parse_key("pk:" + z32).z32 == z32
    for bad in ("favicon.ico", z32[:-1], "c1bkg8tfsyy8wcedtmw4fwhdmm7bbzhgg3z58tf43m5ow8w9mbus"):
        with pytest.raises(ra.RelayError) as err:
            ra.parse_key(bad)
        assert err.value.status == 400


def test_payload_headers() -> None:
    p = packet(keypair(1), ["@ 120 IN A 192.0.2.1", "www 7200 IN A 192.0.2.2"])
    h = ra.payload_headers(p, 1_700_000_100_000_000, 300, 86400)
    assert h == {
        "Content-Type": "application/pkarr.org/relays#payload",
        "Cache-Control": "public, max-age=300",
        "Last-Modified": "Tue, 14 Nov 2023 22:13:20 GMT",
        "Memento-Datetime": "Tue, 14 Nov 2023 22:15:00 GMT",
        "ETag": f'"{p.timestamp:x}-{p.signature[:8].hex()}"',
    }


def test_if_match_is_a_v3_compare_and_swap() -> None:
    p = packet(keypair(1), ["@ 60 IN A 192.0.2.1"])
    held = ra.Cached(p, 0, True)
    ra.check_if_match(None, held)
    ra.check_if_match(str(p.timestamp), held)
    ra.check_if_match(f'"{p.timestamp}"', held)
    ra.check_if_match("123", None)                 # nothing held: nothing to compare
    for value, status in (("123", 412), ("abc", 400)):
        with pytest.raises(ra.RelayError) as err:
            ra.check_if_match(value, held)
        assert err.value.status == status
