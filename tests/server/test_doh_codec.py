"""The pure RFC 8484 codec: request decoding, status mapping, Cache-Control freshness."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rrset
import pytest

from pkdns.server import doh
from tests.conftest import load_vector


def test_rfc8484_example_get_decodes_to_the_vector() -> None:
    vec = load_vector("doh")["get"]
    wire = doh.decode_request("GET", vec["dns_base64url_nopad"], None, b"")
    assert wire.hex() == vec["decoded_hex"]
    assert len(wire) == vec["decoded_len"]
    assert doh.encode_dns_param(wire) == vec["dns_base64url_nopad"]


def test_padding_is_tolerated() -> None:
    wire = dns.message.make_query("example.com.", "A").to_wire()
    padded = doh.encode_dns_param(wire) + "=" * (-len(doh.encode_dns_param(wire)) % 4)
    assert doh.decode_request("GET", padded, None, b"") == wire


@pytest.mark.parametrize("param", [None, "", "AAAB+AAB", "AAAB/AAB", "A", "!!!!", "AA AA"])
def test_bad_get_parameter_is_400(param: str | None) -> None:
    with pytest.raises(doh.HttpError) as err:
        doh.decode_request("GET", param, None, b"")
    assert err.value.status == 400


def test_short_message_and_response_are_400() -> None:
    with pytest.raises(doh.HttpError) as err:
        doh.decode_request("POST", None, doh.CONTENT_TYPE, b"\x00" * 11)
    assert err.value.status == 400
    response = dns.message.make_response(dns.message.make_query("a.", "A")).to_wire()
    with pytest.raises(doh.HttpError) as err:
        doh.decode_request("POST", None, doh.CONTENT_TYPE, response)
    assert err.value.status == 400


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/dns-json",
                                   "application/x-www-form-urlencoded"])
def test_post_with_wrong_content_type_is_415(ctype: str | None) -> None:
    with pytest.raises(doh.HttpError) as err:
        doh.decode_request("POST", None, ctype, b"\x00" * 20)
    assert err.value.status == 415


def test_content_type_parameters_and_case_are_ignored() -> None:
    wire = dns.message.make_query("example.com.", "A").to_wire()
    assert doh.decode_request("POST", None, "Application/DNS-Message; charset=x", wire) == wire


def test_oversized_messages_are_413() -> None:
    with pytest.raises(doh.HttpError) as err:
        doh.decode_request("POST", None, doh.CONTENT_TYPE, b"\x00" * (doh.MAX_MESSAGE + 1))
    assert err.value.status == 413
    with pytest.raises(doh.HttpError) as err:
        doh.decode_dns_param("A" * 90000)
    assert err.value.status == 413


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "HEAD"])
def test_other_methods_are_405(method: str) -> None:
    with pytest.raises(doh.HttpError) as err:
        doh.decode_request(method, "AAAA", doh.CONTENT_TYPE, b"")
    assert err.value.status == 405


def _response(rcode: int = 0) -> dns.message.Message:
    msg = dns.message.make_response(dns.message.make_query("www.example.com.", "A"))
    msg.set_rcode(rcode)
    return msg


def test_max_age_is_the_smallest_answer_ttl() -> None:
    msg = _response()
    msg.answer.append(dns.rrset.from_text("www.example.com.", 300, "IN", "CNAME", "a.example.com."))
    msg.answer.append(dns.rrset.from_text("a.example.com.", 42, "IN", "A", "192.0.2.1"))
    msg.authority.append(dns.rrset.from_text(
        "example.com.", 7, "IN", "SOA", "ns. host. 1 2 3 4 5"))
    assert doh.cache_max_age(msg.to_wire()) == 42


def test_max_age_of_a_negative_answer_comes_from_the_soa() -> None:
    msg = _response(dns.rcode.NXDOMAIN)
    msg.authority.append(dns.rrset.from_text(
        "example.com.", 900, "IN", "SOA", "ns. host. 1 2 3 4 120"))
    assert doh.cache_max_age(msg.to_wire()) == 120
    msg.authority[0].ttl = 60
    assert doh.cache_max_age(msg.to_wire()) == 60


def test_max_age_is_zero_without_records_or_for_garbage() -> None:
    assert doh.cache_max_age(_response(dns.rcode.SERVFAIL).to_wire()) == 0
    assert doh.cache_max_age(b"\x00\x01") == 0
    truncated = _response()
    truncated.answer.append(dns.rrset.from_text("www.example.com.", 5, "IN", "A", "192.0.2.1"))
    assert doh.cache_max_age(truncated.to_wire()[:-3]) == 0


def test_ttl_with_the_top_bit_set_counts_as_zero() -> None:
    msg = _response()
    msg.answer.append(dns.rrset.from_text("www.example.com.", 2**31 + 5, "IN", "A", "192.0.2.1"))
    assert doh.cache_max_age(msg.to_wire()) == 0
