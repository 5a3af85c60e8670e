"""KRPC codec: typed messages round-trip, and bytes from foreign nodes decode."""

from __future__ import annotations

import pytest

from pkdns.dht import krpc
from pkdns.dht.krpc import ErrorMessage, NodeInfo, Query, Response
from pkdns.errors import DecodeError

NID = bytes(range(20))
TARGET = bytes(range(20, 40))


@pytest.mark.parametrize("msg", [
    Query(b"aa", "ping", NID),
    Query(b"ab", "find_node", NID, target=TARGET),
    Query(b"ac", "get_peers", NID, target=TARGET, read_only=True),
    Query(b"ad", "announce_peer", NID, target=TARGET, token=b"tok", port=6881),
    Query(b"ae", "get", NID, target=TARGET, seq=17),
    Query(b"af", "put", NID, token=b"\x01" * 8, k=b"k" * 32, v=b"packet", sig=b"s" * 64,
          seq=2**62, cas=5),
    Response(b"ba", NID),
    Response(b"bb", NID, nodes=(NodeInfo(TARGET, "10.1.2.3", 6881),
                                NodeInfo(NID, "192.0.2.9", 1)), token=b"t" * 20),
    Response(b"bc", NID, token=b"t", k=b"k" * 32, v=b"x" * 1000, sig=b"s" * 64, seq=1,
             ip=("203.0.113.7", 4242)),
    ErrorMessage(b"ca", 302, "Sequence number less than current."),
])
def test_round_trip(msg: krpc.Message) -> None:
    assert krpc.decode(krpc.encode(msg)) == msg


def test_client_version_and_ro_on_the_wire() -> None:
    wire = krpc.encode(Query(b"aa", "get", NID, target=TARGET, read_only=True), client=b"PD01")
    assert b"2:roi1e" in wire and b"1:v4:PD01" in wire
    assert krpc.decode(wire) == Query(b"aa", "get", NID, target=TARGET, read_only=True,
                                      client=b"PD01")


def test_bep5_example_bytes() -> None:
    """The literal examples from BEP 5 (ping query and response)."""
    q = krpc.decode(b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe")
    assert q == Query(b"aa", "ping", b"abcdefghij0123456789")
    r = krpc.decode(b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re")
    assert r == Response(b"aa", b"mnopqrstuvwxyz123456")
    e = krpc.decode(b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee")
    assert e == ErrorMessage(b"aa", 201, "A Generic Error Ocurred")


def test_bittorrent_dht_get_reply_with_value_and_no_nodes() -> None:
    """bittorrent-dht sends v without nodes, and 20-byte tokens (seen from v11 on loopback)."""
    body = (b"d1:rd2:id20:" + NID + b"1:k32:" + b"k" * 32 + b"3:seqi1700000000000000e3:sig64:"
            + b"s" * 64 + b"5:token20:" + b"t" * 20 + b"1:v3:abce1:t2:xy1:y1:re")
    r = krpc.decode(body)
    assert isinstance(r, Response) and r.v == b"abc" and r.nodes == () and len(r.token or b"") == 20


def test_big_reply_accepted() -> None:
    """Replies above 1500 bytes (a whole bittorrent-dht routing table) must decode."""
    nodes = tuple(NodeInfo(bytes([i]) * 20, f"10.0.{i}.1", 6881) for i in range(200))
    wire = krpc.encode(Response(b"aa", NID, nodes=nodes))
    assert len(wire) > 5000
    assert krpc.decode(wire) == Response(b"aa", NID, nodes=nodes)


def test_ipv6_contacts_skipped_when_encoding() -> None:
    assert krpc.encode_nodes([NodeInfo(NID, "::1", 1), NodeInfo(NID, "1.2.3.4", 5)]) == (
        NID + bytes([1, 2, 3, 4]) + b"\x00\x05")


def test_decode_error_is_the_only_exception() -> None:
    with pytest.raises(DecodeError):
        krpc.decode(b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe")
