"""Pure parts: BEP 42 ids, routing table, tokens, BEP 44 storage and item checks."""

from __future__ import annotations

import random

import pytest

from pkdns.dht import ids
from pkdns.dht.admission import QuerierCheck
from pkdns.dht.item import check_item, sign_item, signable
from pkdns.dht.pacing import PerIpLimiter
from pkdns.dht.routing import (
    CHECK_TIMEOUT,
    DROP_AFTER,
    MAX_FAILS,
    SPARES,
    STALE_AFTER,
    AddResult,
    PingFirst,
    RoutingTable,
)
from pkdns.dht.storage import ItemStore
from pkdns.dht.sybil import cluster_size
from pkdns.dht.tokens import TokenManager
from pkdns.dht.upkeep import Upkeep
from pkdns.errors import VerifyError
from tests.conftest import load_vector

BEP42_VECTORS = [  # BEP 42 "test vectors": ip, node id
    ("124.31.75.21", "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401"),
    ("21.75.31.124", "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256"),
    ("65.23.51.170", "a5d43220bc8f112a3d426c84764f8c2a1150e616"),
    ("84.124.73.14", "1b0321dd1bb1fe518101ceef99462b947a01ff41"),
    ("43.213.53.83", "e56f6cbf5b7c4be0237986d5243b87aa6d51305a"),
]


def test_crc32c_check_value() -> None:
    assert ids.crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize(("ip", "node_id"), BEP42_VECTORS)
def test_bep42_vectors(ip: str, node_id: str) -> None:
    nid = bytes.fromhex(node_id)
    assert ids.is_bep42_valid(nid, ip)
    assert not ids.is_bep42_valid(nid, "8.8.8.8")


def test_generated_ids() -> None:
    rng = random.Random(1)
    nid = ids.make_node_id(rng, "124.31.75.21")
    assert ids.is_bep42_valid(nid, "124.31.75.21") and len(nid) == 20
    assert ids.is_bep42_valid(b"\x00" * 20, "127.0.0.1")  # local peers are exempt
    assert ids.is_bep42_valid(b"\x00" * 20, "192.168.1.2")
    assert ids.make_node_id(random.Random(1)) != ids.make_node_id(random.Random(2))


def test_distance_and_buckets() -> None:
    a = b"\x00" * 20
    assert ids.bucket_index(a, b"\x80" + b"\x00" * 19) == 0
    assert ids.bucket_index(a, b"\x00" * 19 + b"\x01") == 159
    assert ids.distance(a, a) == 0


def _id(i: int) -> bytes:
    return i.to_bytes(20, "big")


def test_routing_add_update_reject() -> None:
    t = RoutingTable(_id(0), k=2)
    assert t.add(_id(1 << 150), "10.0.0.1", 1, 0.0) is AddResult.ADDED
    assert t.add(_id(1 << 150), "10.0.0.1", 1, 5.0) is AddResult.UPDATED
    assert t.add(_id(2 << 150), "10.0.0.1", 2, 5.0) is AddResult.REJECTED  # same IP, new id
    assert t.add(_id(0), "10.0.1.1", 1, 5.0) is AddResult.REJECTED  # our own id
    assert t.add(_id(3 << 150), "10.0.2.1", 0, 5.0) is AddResult.REJECTED  # port 0
    assert t.add(_id(3 << 150), "224.0.0.1", 5, 5.0) is AddResult.REJECTED  # multicast
    assert t.add(_id(3 << 150), "0.0.0.0", 5, 5.0) is AddResult.REJECTED
    assert t.add(_id(1 << 150 | 1), "10.0.0.9", 5, 5.0) is AddResult.REJECTED  # same /24+bucket
    assert len(t) == 1


def test_loopback_peers_told_apart_by_port() -> None:
    t = RoutingTable(_id(0))
    for port in range(1000, 1005):
        t.add(_id(port << 140), "127.0.0.1", port, 0.0)
    assert len(t) == 5


def _fill_bucket(t: RoutingTable, index: int, n: int) -> list[AddResult | PingFirst]:
    """Offer ``n`` nodes (distinct /24s) sharing exactly ``index`` leading bits with id 0."""
    top = 1 << (159 - index)
    return [t.add(_id(top | i), f"10.{i // 250}.{i % 250}.1", 1, 0.0) for i in range(n)]


@pytest.mark.parametrize(("index", "held"), [(0, 128), (1, 64), (2, 32), (3, 16), (4, 8)])
def test_a_wide_table_holds_more_in_its_far_buckets(index: int, held: int) -> None:
    """libtorrent's extended routing table: the four farthest buckets hold 16, 8, 4 and 2
    times k, so each lookup's first hop is spread over more nodes (and starts nearer)."""
    wide = RoutingTable(_id(0), wide=True)
    added = _fill_bucket(wide, index, 200)
    assert added.count(AddResult.ADDED) == held and added[held] is AddResult.FULL
    assert wide.admits(_id(1 << (159 - index) | 999), "10.9.9.1", 1, 0.0) is False
    flat = RoutingTable(_id(0))
    assert _fill_bucket(flat, index, 200).count(AddResult.ADDED) == 8


def test_a_wide_bucket_lets_spares_in_up_to_its_limit() -> None:
    t = RoutingTable(_id(0), wide=True)
    _fill_bucket(t, 3, 16)
    t.add(_id(1 << 156 | 500), "10.5.5.1", 1, STALE_AFTER + 1)   # full: a spare for a ping
    for host in ("10.0.0.1", "10.0.1.1"):
        for _ in range(MAX_FAILS):
            t.failed(host, 1)
    hosts = {e.host for e in t.entries()}   # the spare took the first bad entry's place
    assert len(t) == 16 and "10.5.5.1" in hosts and "10.0.0.1" not in hosts


def test_bucket_full_then_evicts_failed_or_stale() -> None:
    t = RoutingTable(_id(0), k=2)
    t.add(_id(1 << 159), "10.0.1.1", 1, 0.0)
    t.add(_id(1 << 159 | 1), "10.0.2.1", 1, 0.0)
    assert t.add(_id(1 << 159 | 2), "10.0.3.1", 1, 1.0) is AddResult.FULL
    t.failed("10.0.1.1", 1)
    t.failed("10.0.1.1", 1)
    assert t.add(_id(1 << 159 | 2), "10.0.3.1", 1, 2.0) is AddResult.ADDED
    assert t.add(_id(1 << 159 | 3), "10.0.4.1", 1, 3.0) is AddResult.FULL
    ping = t.add(_id(1 << 159 | 3), "10.0.4.1", 1, 2000.0)  # stale: pinged, not evicted
    assert isinstance(ping, PingFirst) and ping.entry.host == "10.0.2.1"
    assert len(t) == 2
    assert [e.host for e in t.questionable(5000.0)]


def test_touch_and_admits_change_nothing_for_strangers() -> None:
    t = RoutingTable(_id(0), k=2)
    assert t.admits(_id(1 << 159), "10.0.1.1", 1, 0.0)
    assert not t.touch(_id(1 << 159), "10.0.1.1", 1, 0.0) and len(t) == 0
    t.add(_id(1 << 159), "10.0.1.1", 1, 0.0)
    t.failed("10.0.1.1", 1)
    assert t.touch(_id(1 << 159), "10.0.1.1", 1, 9.0)  # known: heard from again (BEP 5)
    assert t.entries()[0].last_seen == 9.0 and t.entries()[0].fails == 0
    assert not t.touch(_id(1 << 158), "10.0.1.1", 1, 9.0)  # same address, other id
    assert not t.admits(_id(1 << 159 | 1), "10.0.1.9", 1, 9.0)  # same /24 in the bucket
    assert not t.admits(_id(0), "10.0.3.1", 1, 9.0) and not t.admits(_id(5), "0.0.0.0", 1, 9.0)
    t.add(_id(1 << 159 | 1), "10.0.2.1", 1, 9.0)
    assert not t.admits(_id(1 << 159 | 2), "10.0.3.1", 1, 10.0)  # full of good nodes
    assert t.admits(_id(1 << 159 | 2), "10.0.3.1", 1, 10.0 + STALE_AFTER)  # questionable


def test_querier_check_pings_strangers_within_a_budget() -> None:
    t = RoutingTable(_id(0))
    check = QuerierCheck(max_pending=2, recheck_after=60.0)
    a, b, c = ("10.0.1.1", 1), ("10.0.2.1", 1), ("10.0.3.1", 1)
    assert check.consider(t, _id(1 << 159), a, 0.0)
    assert not check.consider(t, _id(1 << 159), a, 0.0)  # already being pinged
    assert check.consider(t, _id(1 << 158), b, 0.0)
    assert not check.consider(t, _id(1 << 157), c, 0.0) and check.skipped == 1
    check.finished(a)
    assert not check.consider(t, _id(1 << 159), a, 30.0)  # pinged recently: not again
    assert check.consider(t, _id(1 << 157), c, 30.0)
    check.finished(b)
    check.finished(c)
    assert check.consider(t, _id(1 << 159), a, 61.0)
    check.finished(a)
    t.add(_id(1 << 159), *a, 62.0)  # it answered: the node added it
    assert not check.consider(t, _id(1 << 159), a, 200.0)  # known: touched, no ping
    assert t.entries()[0].last_seen == 200.0
    assert len(t) == 1  # considering never adds anyone


def test_querier_check_requires_bep42_on_public_addresses() -> None:
    t = RoutingTable(_id(0))
    ip, good = BEP42_VECTORS[0]
    check = QuerierCheck()
    assert not check.consider(t, _id(1 << 150), (ip, 6881), 0.0)
    assert check.consider(t, bytes.fromhex(good), (ip, 6881), 0.0)
    assert check.consider(t, _id(1 << 150), ("192.168.1.5", 6881), 0.0)  # local: exempt


def _full_stale_bucket() -> RoutingTable:
    """k=2, bucket 0 holds 10.0.1.1 (seen at 0) and 10.0.2.1 (seen at 100); both
    questionable from t=1000 on."""
    t = RoutingTable(_id(0), k=2)
    t.add(_id(1 << 159), "10.0.1.1", 1, 0.0)
    t.add(_id(1 << 159 | 1), "10.0.2.1", 1, 100.0)
    return t


def test_full_bucket_of_good_nodes_drops_the_newcomer() -> None:
    t = _full_stale_bucket()
    assert t.add(_id(1 << 159 | 2), "10.0.3.1", 1, 500.0) is AddResult.FULL
    assert t.pinged("10.0.1.1", 1, False, 501.0) is None  # nothing waits: nothing replaced
    assert {e.host for e in t.entries()} == {"10.0.1.1", "10.0.2.1"}


def test_questionable_entry_answers_ping_and_stays() -> None:
    t = _full_stale_bucket()
    now = STALE_AFTER + 200.0
    ping = t.add(_id(1 << 159 | 2), "10.0.3.1", 1, now)
    assert isinstance(ping, PingFirst) and ping.entry.host == "10.0.1.1"  # least recent
    assert {e.host for e in t.entries()} == {"10.0.1.1", "10.0.2.1"}
    # a second newcomer while the first ping is out: the next questionable entry
    ping2 = t.add(_id(1 << 159 | 3), "10.0.4.1", 1, now)
    assert isinstance(ping2, PingFirst) and ping2.entry.host == "10.0.2.1"
    assert t.add(_id(1 << 159 | 4), "10.0.5.1", 1, now) is AddResult.FULL  # all being pinged
    # the first answers: kept and fresh; the other is already being pinged
    assert t.pinged("10.0.1.1", 1, True, now + 1) is None
    # the second answers too: both good, the newcomers stay spares only
    assert t.pinged("10.0.2.1", 1, True, now + 2) is None
    assert {e.host for e in t.entries()} == {"10.0.1.1", "10.0.2.1"}
    assert t.questionable(now + 3) == []
    assert t.add(_id(1 << 159 | 5), "10.0.6.1", 1, now + 3) is AddResult.FULL


def test_answered_ping_moves_on_to_the_next_questionable() -> None:
    t = _full_stale_bucket()
    now = STALE_AFTER + 200.0
    ping = t.add(_id(1 << 159 | 2), "10.0.3.1", 1, now)
    assert isinstance(ping, PingFirst)
    assert t.pinged(*ping.entry.addr, True, now + 1) == ("10.0.2.1", 1)
    assert t.pinged("10.0.2.1", 1, False, now + 2) is None  # silent: the spare takes over
    assert {e.host for e in t.entries()} == {"10.0.1.1", "10.0.3.1"}


def test_silent_questionable_entry_is_replaced_by_the_spare() -> None:
    t = _full_stale_bucket()
    now = STALE_AFTER + 200.0
    ping = t.add(_id(1 << 159 | 2), "10.0.3.1", 1, now)
    assert isinstance(ping, PingFirst) and ping.entry.host == "10.0.1.1"
    assert t.pinged("10.0.1.1", 1, False, now + 4) is None
    assert {e.host for e in t.entries()} == {"10.0.2.1", "10.0.3.1"}
    assert t.closest(_id(1 << 159 | 2), 1)[0].last_seen == now  # when it was heard


def test_a_bad_entry_nobody_replaces_stays_until_drop_after() -> None:
    """libtorrent's rule: at 50 % loss a live node's requests time out several times in a
    row; dropping it at the third emptied a warm daemon's table in the kernel lab. A bad
    entry stays (no seed while good ones are left) until a newcomer or DROP_AFTER."""
    t = RoutingTable(_id(0))
    t.add(_id(1 << 159), "10.0.1.1", 1, 0.0)
    t.add(_id(1 << 150), "10.0.2.1", 1, 0.0)
    for _ in range(MAX_FAILS + 1):
        t.failed("10.0.1.1", 1)
    assert len(t) == 2 and t.good() == 1
    assert [e.host for e in t.closest(_id(1 << 159), 1)] == ["10.0.2.1"]  # good ones first
    assert [e.host for e in t.closest(_id(1 << 159), 8)] == ["10.0.2.1", "10.0.1.1"]
    assert t.add(_id(1 << 159), "10.0.1.1", 1, 5.0) is AddResult.UPDATED  # it answered
    assert t.good() == 2
    for _ in range(DROP_AFTER - 1):
        t.failed("10.0.1.1", 1)
    assert len(t) == 2
    t.failed("10.0.1.1", 1)
    assert [e.host for e in t.entries()] == ["10.0.2.1"]


def test_a_table_of_bad_entries_still_seeds_lookups_and_is_tiny_for_upkeep() -> None:
    t = RoutingTable(_id(0))
    for i in range(10):
        t.add(_id(1 << (159 - i)), f"10.0.{i}.1", 1, 0.0)
        for _ in range(MAX_FAILS):
            t.failed(f"10.0.{i}.1", 1)
    assert len(t) == 10 and t.good() == 0 and len(t.closest(_id(5), 8)) == 8
    assert Upkeep(0.0, random.Random(1)).due(t, 0.0).bootstrap


def test_timeouts_let_a_spare_in_at_max_fails() -> None:
    t = _full_stale_bucket()
    now = STALE_AFTER + 200.0
    assert isinstance(t.add(_id(1 << 159 | 2), "10.0.3.1", 1, now), PingFirst)
    for _ in range(MAX_FAILS):                          # the ping and its retry time out
        t.failed("10.0.1.1", 1)
    assert {e.host for e in t.entries()} == {"10.0.2.1", "10.0.3.1"}
    assert t.pinged("10.0.1.1", 1, False, now + 4) is None  # already replaced


def test_ping_hand_out_expires_and_spares_are_bounded() -> None:
    t = _full_stale_bucket()
    now = STALE_AFTER + 200.0
    assert isinstance(t.add(_id(1 << 159 | 2), "10.0.3.1", 1, now), PingFirst)
    assert isinstance(t.add(_id(1 << 159 | 3), "10.0.4.1", 1, now), PingFirst)
    assert t.add(_id(1 << 159 | 4), "10.0.5.1", 1, now) is AddResult.FULL
    again = t.add(_id(1 << 159 | 4), "10.0.5.1", 1, now + CHECK_TIMEOUT + 1)
    assert isinstance(again, PingFirst) and again.entry.host == "10.0.1.1"  # report lost
    for i in range(3 * SPARES):
        t.add(_id(1 << 159 | 10 + i), f"10.1.{i}.1", 1, now + 100)
    assert len(t._spares[0]) == SPARES and len(t) == 2


def test_closest_and_bounded_size() -> None:
    t = RoutingTable(_id(0))
    rng = random.Random(3)
    for i in range(5000):
        t.add(rng.getrandbits(160).to_bytes(20, "big"), f"10.{i // 250 % 256}.{i % 250}.1",
              6881, 0.0)
    assert len(t) <= 160 * 8
    target = rng.getrandbits(160).to_bytes(20, "big")
    close = t.closest(target, 8)
    dists = [ids.distance(e.id, target) for e in close]
    assert dists == sorted(dists) and len(close) == 8


def test_estimated_size_order_of_magnitude() -> None:
    rng = random.Random(5)
    own = rng.getrandbits(160).to_bytes(20, "big")
    t = RoutingTable(own, k=16)
    for i in range(2000):
        t.add(rng.getrandbits(160).to_bytes(20, "big"), f"10.{i // 250}.{i % 250}.1", 1, 0.0)
    assert 300 < t.estimated_size() < 20000


def test_export_import_round_trip() -> None:
    a = RoutingTable(_id(0))
    for i in range(1, 30):
        a.add(_id(i << 120), f"10.{i}.0.1", 6881, 0.0)
    b = RoutingTable(_id(0))
    assert b.import_nodes([(e.id, e.host, e.port) for e in a.entries()], 1.0) == len(a)


def test_tokens_bound_to_ip_and_rotate() -> None:
    tm = TokenManager(random.Random(1), now=0.0)
    tok = tm.issue("10.0.0.1", 0.0)
    assert tm.check(tok, "10.0.0.1", 1.0)
    assert not tm.check(tok, "10.0.0.2", 1.0)
    assert not tm.check(b"\x00" * 8, "10.0.0.1", 1.0)
    assert tm.check(tok, "10.0.0.1", 301.0)       # previous secret still accepted
    assert not tm.check(tok, "10.0.0.1", 601.0)   # two rotations later: expired
    tok2 = tm.issue("10.0.0.1", 2000.0)
    assert not tm.check(tok2, "10.0.0.1", 2000.0 + 1300)  # long idle: both secrets fresh


def test_rate_limiter() -> None:
    lim = PerIpLimiter(rate=5, burst=10, max_ips=2)
    assert sum(lim.allow("1.1.1.1", 0.0) for _ in range(100)) == 10
    assert lim.allow("1.1.1.1", 0.2)
    assert lim.allow("2.2.2.2", 0.2)
    assert PerIpLimiter(0).allow("x", 0.0)


SEED = bytes(range(32))


def test_bep44_vector_signature() -> None:
    vec = load_vector("bep44")
    t1 = vec["test1_mutable_no_salt"]
    v = b"Hello World!"
    assert signable(1, v).decode() == t1["signable_ascii"]
    k = bytes.fromhex(vec["public_key_hex"])
    item = check_item(k, 1, v, bytes.fromhex(t1["signature_hex"]),
                      expected_key=k, expected_target=bytes.fromhex(t1["target_hex"]))
    assert item.target.hex() == t1["target_hex"]


def test_item_checks() -> None:
    item = sign_item(SEED, 5, b"v")
    check_item(item.k, item.seq, item.v, item.sig, expected_key=item.k)
    other = sign_item(bytes(32), 5, b"v")
    for args, kw in [
        ((item.k, 6, item.v, item.sig), {}),
        ((item.k, item.seq, b"w", item.sig), {}),
        ((other.k, other.seq, other.v, other.sig), {"expected_key": item.k}),
        ((other.k, other.seq, other.v, other.sig), {"expected_target": item.target}),
        ((item.k, -1, item.v, item.sig), {}),
        ((item.k, 1, b"x" * 1001, item.sig), {}),
        ((None, 1, b"x", item.sig), {}),
    ]:
        with pytest.raises(VerifyError):
            check_item(*args, **kw)


def test_storage_rules() -> None:
    s = ItemStore(100, 1 << 20)
    a1, a2 = sign_item(SEED, 1, b"one"), sign_item(SEED, 2, b"two")
    assert s.put(a2.k, a2.seq, a2.v, a2.sig) is None
    assert s.put(a1.k, a1.seq, a1.v, a1.sig) == (302, "Sequence number less than current.")
    assert s.put(a2.k, a2.seq, a2.v, a2.sig) is None  # identical re-put is a refresh
    same_seq = sign_item(SEED, 2, b"other")
    assert s.put(same_seq.k, 2, same_seq.v, same_seq.sig)[0] == 302
    assert s.put(a2.k, 3, b"x" * 1001, a2.sig)[0] == 205
    assert s.put(a2.k, 3, b"three", a2.sig)[0] == 206
    a3 = sign_item(SEED, 3, b"three")
    assert s.put(a3.k, 3, a3.v, a3.sig, cas=1)[0] == 301
    assert s.put(a3.k, 3, a3.v, a3.sig, cas=2) is None
    assert s.put(a3.k, 4, a3.v, a3.sig, salt=b"s" * 65)[0] == 207
    assert s.get(a3.target) == a3


def test_storage_bounded_lru() -> None:
    s = ItemStore(max_items=10, max_bytes=1 << 20)
    items = [sign_item(bytes([i]) * 32, 1, b"x" * 100) for i in range(30)]
    for it in items:
        assert s.put(it.k, it.seq, it.v, it.sig) is None
        s.get(items[0].target)  # keep the first one hot
    assert len(s) == 10 and s.get(items[0].target) is not None and s.get(items[1].target) is None
    small = ItemStore(max_items=1000, max_bytes=3000)
    for it in items:
        small.put(it.k, it.seq, it.v, it.sig)
    assert small.bytes_used <= 3000 and len(small) < 30


def test_cluster_size_tells_a_planted_cluster_from_chance() -> None:
    rng = random.Random(11)
    n = 10_000
    honest = sorted(rng.getrandbits(160) for _ in range(n))  # distances to a random target
    assert cluster_size(honest[:40], n) == 0
    assert cluster_size(honest[:40], n * 4) == 0  # N overestimated: still quiet
    planted = sorted(rng.getrandbits(96) for _ in range(16))
    assert cluster_size(sorted(planted + honest[:24]), n) == 16  # ends where the cluster does
    assert cluster_size(sorted(planted[:4] + honest[:36]), n) == 0  # too few to tell
    # N unknown (a command that only joined): honest ids stay quiet, packed ones do not
    assert cluster_size(honest[:40], 0) == 0
    assert cluster_size(sorted(planted + honest[:24]), 0) == 16
