"""Attack corpus against the DHT node (malformed datagrams, bad items, replays, floods, Sybil
/24s, bogus contacts, token abuse, endless "closer" nodes): every crafted message or item is
rejected without an exception escaping, nothing older replaces something newer, and replies from
addresses we did not ask are ignored. (Far-future timestamps are a pkarr-layer rule.)
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from pkdns.dht import krpc
from pkdns.dht.getlookup import GetMutableLookup
from pkdns.dht.ids import distance, make_node_id, target_of
from pkdns.dht.item import MutableItem, sign_item
from pkdns.dht.krpc import Address, NodeInfo, Query, Response
from pkdns.dht.responder import Responder
from pkdns.dht.routing import RoutingTable
from pkdns.dht.storage import ItemStore
from pkdns.dht.tokens import TokenManager
from pkdns.errors import DecodeError
from tests.support.clock import FakeClock
from tests.support.dhtnet import FakeNet, Reply, plant_cluster

OWN = make_node_id(random.Random(42))
SEED = bytes(range(32))
NID = b"n" * 20

# -- malformed datagrams -------------------------------------------------------------
GOOD_PING = b"d1:ad2:id20:" + NID + b"e1:q4:ping1:t2:aa1:y1:qe"
MALFORMED: list[bytes] = [
    b"", b"d", b"de", b"e", b"le", b"i1e", b"4:spam", b"\x00" * 40, b"d1:t2:aa",
    GOOD_PING[:-1], GOOD_PING[:30], b"x" + GOOD_PING, GOOD_PING + b"x",
    b"d" + b"l" * 11 + b"e" * 11 + b"e",                                # depth > 10
    b"d1:al" + b"i1e" * 3000 + b"ee",                                   # too many items
    b"d1:ai" + b"9" * 5000 + b"ee",                                     # 5000-digit int
    b"d1:t2:aa1:t2:bb1:y1:qe",                                          # duplicate key
    b"d1:y1:q1:t2:aae",                                                 # unsorted keys
    b"d1:ad2:id20:" + NID + b"e1:q4:ping1:t2:aa1:y1:q" + b"1:z" + b"0:" * 40000 + b"e",  # > 64K
    b"d99999999999:xe",                                                 # absurd string length
    b"d1:ad2:id20:" + NID + b"e1:q4:ping1:y1:qe",                       # no t
    b"d1:ad2:id20:" + NID + b"e1:q4:ping1:t2:aae",                      # no y
    b"d1:ad2:id20:" + NID + b"e1:q4:ping1:t2:aa1:y1:xe",                # unknown y
    b"d1:q4:ping1:t2:aa1:y1:qe",                                        # query without a
    b"d1:ale1:q4:ping1:t2:aa1:y1:qe",                                   # a is a list
    b"d1:ad2:id20:" + NID + b"e1:q5:hello1:t2:aa1:y1:qe",               # unknown method
    b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe",                          # short id
    b"d1:ad2:idi5ee1:q4:ping1:t2:aa1:y1:qe",                            # id not a string
    b"d1:rd2:id20:" + NID + b"5:nodes25:" + b"x" * 25 + b"e1:t2:aa1:y1:re",  # nodes % 26
    b"d1:rd2:id20:" + NID + b"5:nodesi1ee1:t2:aa1:y1:re",               # nodes not a string
    b"d1:rd2:id20:" + NID + b"1:vi5ee1:t2:aa1:y1:re",                   # v an int
    b"d1:rd2:id20:" + NID + b"3:sig3:abce1:t2:aa1:y1:re",               # short sig
    b"d1:rd2:id20:" + NID + b"1:k5:shorte1:t2:aa1:y1:re",               # short k
    b"d1:rd2:id20:" + NID + b"3:seqi99999999999999999999ee1:t2:aa1:y1:re",  # seq > i64
    b"d1:rd2:id20:" + NID + b"3:seq1:5e1:t2:aa1:y1:re",                 # seq a string
    b"d1:rd2:id20:" + NID + b"5:tokeni5ee1:t2:aa1:y1:re",               # token an int
    b"d1:r0:1:t2:aa1:y1:re",                                            # r not a dict
    b"d1:e0:1:t2:aa1:y1:ee",                                            # e not a list
    b"d1:ele1:t2:aa1:y1:ee",                                            # e empty
    b"d1:el3:abci201ee1:t2:aa1:y1:ee",                                  # e reversed
    b"d1:t" + b"100:" + b"x" * 100 + b"1:y1:qe",                        # tid too long
    b"d1:ti5e1:y1:qe",                                                  # tid not a string
]


@pytest.mark.parametrize("data", MALFORMED, ids=range(len(MALFORMED)))
def test_d1_malformed_is_one_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        krpc.decode(data)


def test_d1_corpus_size() -> None:
    assert len(MALFORMED) + len(BAD_ITEMS) + 10 >= 50


def test_d1_fuzzed_bytes_never_raise_anything_else() -> None:
    rng = random.Random(1)
    for _ in range(3000):
        data = bytearray(GOOD_PING)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            krpc.decode(bytes(data))
        except DecodeError:
            pass


# -- items and replies during a get ---------------------------------------------
ITEM = sign_item(SEED, 1000, b"the real packet")
OTHER = sign_item(bytes(32), 5000, b"someone else")


def _value_reply(k: bytes, seq: int, v: bytes, sig: bytes) -> Callable[[Query], Response]:
    return lambda q: Response(q.tid, make_node_id(random.Random(len(v))), token=b"t", k=k, v=v,
                              sig=sig, seq=seq)


BAD_ITEMS: list[tuple[str, Callable[[Query], Response]]] = [
    ("bad signature", _value_reply(ITEM.k, ITEM.seq, ITEM.v, bytes(64))),
    ("signature of another seq", _value_reply(ITEM.k, ITEM.seq + 1, ITEM.v, ITEM.sig)),
    ("signature of another value", _value_reply(ITEM.k, ITEM.seq, b"forged", ITEM.sig)),
    ("another key's valid item", _value_reply(OTHER.k, OTHER.seq, OTHER.v, OTHER.sig)),
    ("sig by key B under key A", _value_reply(ITEM.k, OTHER.seq, OTHER.v, OTHER.sig)),
    ("v over 1000 bytes", _value_reply(ITEM.k, ITEM.seq, b"x" * 1001, ITEM.sig)),
    ("negative seq", _value_reply(ITEM.k, -1, ITEM.v, ITEM.sig)),
    ("missing sig", lambda q: Response(q.tid, NID, k=ITEM.k, v=ITEM.v, seq=ITEM.seq)),
    ("missing k", lambda q: Response(q.tid, NID, v=ITEM.v, sig=ITEM.sig, seq=ITEM.seq)),
    ("missing seq", lambda q: Response(q.tid, NID, k=ITEM.k, v=ITEM.v, sig=ITEM.sig)),
    ("zero key", _value_reply(bytes(32), ITEM.seq, ITEM.v, ITEM.sig)),
    ("empty value", _value_reply(ITEM.k, ITEM.seq, b"", ITEM.sig)),
]


def _get(net: FakeNet, clock: FakeClock, seeds: list[Address], **kw: int) -> tuple[
        GetMutableLookup, list[object]]:
    lookup = GetMutableLookup(ITEM.k, [(None, a) for a in seeds], clock.monotonic(),
                              own_id=OWN, **kw)
    return lookup, list(net.run(lookup, OWN))


@pytest.mark.parametrize(("name", "make"), BAD_ITEMS, ids=[n for n, _ in BAD_ITEMS])
def test_d3_d4_d5_bad_items_rejected(fake_clock: FakeClock, name: str,
                                     make: Callable[[Query], Response]) -> None:
    net = FakeNet(fake_clock)
    addr = ("192.0.2.66", 6881)
    net.handlers[addr] = lambda q, src, now: (addr, krpc.encode(make(q)))
    lookup, items = _get(net, fake_clock, [addr])
    assert items == []
    assert lookup.outcome.responded == 1
    assert lookup.outcome.invalid_values == 1 and lookup.outcome.values == 0


def test_d2_replies_from_unasked_address_or_tid_ignored(fake_clock: FakeClock) -> None:
    net = FakeNet(fake_clock)
    asked, spoofer = ("192.0.2.1", 6881), ("192.0.2.99", 6881)
    good = krpc.encode

    def from_elsewhere(q: Query, src: Address, now: float) -> Reply:
        return spoofer, good(Response(q.tid, NID, k=ITEM.k, v=ITEM.v, sig=ITEM.sig, seq=ITEM.seq))

    def wrong_tid(q: Query, src: Address, now: float) -> Reply:
        return asked, good(Response(b"zz", NID, k=ITEM.k, v=ITEM.v, sig=ITEM.sig, seq=ITEM.seq))

    for handler in (from_elsewhere, wrong_tid):
        net.handlers[asked] = handler
        lookup, items = _get(net, fake_clock, [asked])
        assert items == [] and lookup.outcome.responded == 0 and lookup.outcome.timed_out == 1
    assert net.dropped_replies == 2


def _serve(addr: Address, item: MutableItem) -> Callable[[Query, Address, float], Reply]:
    def handler(q: Query, src: Address, now: float) -> Reply:
        return addr, krpc.encode(Response(q.tid, make_node_id(random.Random(addr[0])),
                                          token=b"t", k=item.k, v=item.v, sig=item.sig,
                                          seq=item.seq))
    return handler


def test_d6_no_rollback_within_a_lookup(fake_clock: FakeClock) -> None:
    """1000 replays of older items after the newest (4 lookups x 250): never streamed."""
    newest = sign_item(SEED, 10_000, b"newest")
    olds = [sign_item(SEED, 9000 + i, b"old") for i in range(50)]
    for round_ in range(4):
        net = FakeNet(fake_clock)
        addrs = [(f"192.{round_}.{i}.1", 6881) for i in range(251)]
        ordered = [newest] + [olds[i % 50] for i in range(250)]
        for addr, it in zip(addrs, ordered, strict=True):
            net.handlers[addr] = _serve(addr, it)
        lookup = GetMutableLookup(ITEM.k, [], fake_clock.monotonic(), own_id=OWN, k=300,
                                  max_queried=300, alpha=300)
        lookup.add_seeds([(None, a) for a in addrs])
        items = net.run(lookup, OWN)
        assert items == [newest] and lookup.best == newest and lookup.outcome.values == 251


def test_d6_seq_floor_blocks_older(fake_clock: FakeClock) -> None:
    net = FakeNet(fake_clock)
    addr = ("192.0.2.5", 6881)
    net.handlers[addr] = lambda q, src, now: (addr, krpc.encode(Response(
        q.tid, NID, token=b"t", k=ITEM.k, v=ITEM.v, sig=ITEM.sig, seq=ITEM.seq)))
    _, items = _get(net, fake_clock, [addr], seq_floor=ITEM.seq)
    assert items == []


# -- flood -----------------------------------------------------------------------
# (rate limiting and read-only silence are tested on real sockets in test_node.py)


# -- sybil /24 -------------------------------------------------------------------
def test_d9_sybil_subnet_cannot_hide_the_item(fake_clock: FakeClock) -> None:
    net = FakeNet(fake_clock)
    honest = net.add_many(60)
    net.connect_all()
    assert net.put(ITEM, [(None, honest[0].addr)], OWN).stored >= 8
    target = ITEM.target
    sybils = [(f"203.0.113.{i}", 6881) for i in range(2, 202)]
    fake_ids = [(int.from_bytes(target, "big") ^ (i + 1)).to_bytes(20, "big")
                for i in range(200)]
    contacts = tuple(NodeInfo(i, h, p) for i, (h, p) in zip(fake_ids, sybils, strict=True))
    for idx, addr in enumerate(sybils):
        net.handlers[addr] = (lambda a, i: lambda q, src, now: (a, krpc.encode(Response(
            q.tid, i, nodes=contacts[:40], token=b"t"))))(addr, fake_ids[idx])
    seeds = [(None, sybils[0]), (None, honest[1].addr), (None, honest[2].addr)]
    lookup = GetMutableLookup(ITEM.k, seeds, fake_clock.monotonic(), own_id=OWN)
    assert net.run(lookup, OWN) == [ITEM]
    sybil_asked = sum(1 for c in lookup.closest_responded(300) if c.addr in set(sybils))
    assert sybil_asked <= 1


# -- routing-table poisoning -------------------------------------------------
def test_d10_bogus_contacts_ignored() -> None:
    table = RoutingTable(OWN)
    rng = random.Random(3)
    bogus = [NodeInfo(OWN, "10.0.0.1", 1), NodeInfo(NID, "10.0.0.2", 0),
             NodeInfo(NID, "0.0.0.0", 5), NodeInfo(NID, "255.255.255.255", 5),
             NodeInfo(NID, "224.0.0.1", 5), NodeInfo(NID, "240.0.0.1", 5)]
    for b in bogus:
        assert table.add(b.id, b.host, b.port, 0.0).value == "rejected"
    for i in range(20000):
        table.add(rng.getrandbits(160).to_bytes(20, "big"),
                  f"{1 + i % 200}.{i // 200 % 250}.{i % 7}.1", 6881, 0.0)
    assert len(table) <= 160 * 8
    lookup = GetMutableLookup(ITEM.k, [(None, ("192.0.2.1", 1))], 0.0, own_id=OWN)
    lookup.next_requests(0.0)
    flood = tuple(NodeInfo(rng.getrandbits(160).to_bytes(20, "big"), f"100.{i % 250}.{i}.1", 1)
                  for i in range(250)) + tuple(bogus)
    lookup.on_response(("192.0.2.1", 1), Response(b"aa", NID, nodes=flood), 0.0)
    assert len(lookup.next_requests(0.0)) <= lookup.rtt.parallelism(lookup.alpha) <= 12
    assert len(lookup.closest_responded(500)) == 1
    assert sum(1 for _ in lookup._cands) <= 1 + lookup.k


# -- token abuse ----------------------------------------------------------------
def test_d11_token_abuse_gets_203() -> None:
    rng = random.Random(9)
    store = ItemStore(10, 1 << 20)
    tokens = TokenManager(rng, 0.0)
    resp = Responder(NID, RoutingTable(NID), tokens, store)
    x, y = ("198.51.100.10", 1), ("198.51.100.20", 1)
    get = Query(b"g1", "get", OWN, target=ITEM.target)
    tok = resp.handle(get, x, 0.0)
    assert isinstance(tok, Response) and tok.token

    def put(token: bytes | None, addr: Address, now: float) -> object:
        q = Query(b"p1", "put", OWN, token=token, k=ITEM.k, v=ITEM.v, sig=ITEM.sig, seq=ITEM.seq)
        return resp.handle(q, addr, now)

    for token, addr, now in [(tok.token, y, 1.0), (b"\x00" * 8, x, 1.0), (None, x, 1.0),
                             (b"", x, 1.0), (tok.token, x, 700.0)]:
        err = put(token, addr, now)
        assert isinstance(err, krpc.ErrorMessage) and err.code == 203
    assert len(store) == 0
    fresh = resp.handle(get, x, 701.0)
    assert isinstance(fresh, Response)
    assert isinstance(put(fresh.token, x, 702.0), Response) and len(store) == 1


# -- endless "closer" nodes ------------------------------------------------------
def test_d12_endless_closer_nodes_bounded(fake_clock: FakeClock) -> None:
    net = FakeNet(fake_clock)
    target = target_of(ITEM.k)
    counter = iter(range(1, 10**6))

    def liar(addr: Address) -> Callable[[Query, Address, float], Reply]:
        def handler(q: Query, src: Address, now: float) -> Reply:
            fresh = []
            for _ in range(8):
                n = next(counter)
                a = (f"{10 + n // 60000}.{n // 250 % 240}.{n % 250}.1", 6881)
                net.handlers[a] = liar(a)
                nid = (int.from_bytes(target, "big") ^ (2**150 // n)).to_bytes(20, "big")
                fresh.append(NodeInfo(nid, *a))
            return addr, krpc.encode(Response(q.tid, make_node_id(random.Random(n)),
                                              nodes=tuple(fresh), token=b"t"))
        return handler

    start = ("192.0.2.1", 6881)
    net.handlers[start] = liar(start)
    lookup, items = _get(net, fake_clock, [start])
    assert items == [] and lookup.outcome.queried <= 128
    assert fake_clock.monotonic() - 1000.0 <= 5.0


# -- Sybil cluster nearest the key (pkdns.dht.sybil) ----------------------------------
@pytest.mark.parametrize("network_size", [120, 0])
def test_sybil_cluster_with_an_older_packet_does_not_win(fake_clock: FakeClock,
                                                         network_size: int) -> None:
    """Also when the network's size is unknown (0: a one-shot command that only joined);
    before, that turned the cluster test off and the older packet won."""
    net = FakeNet(fake_clock)
    net.add_many(120)
    net.connect_all()
    old, new = sign_item(SEED, 10, b"old"), sign_item(SEED, 20, b"new")
    cluster = plant_cluster(net, new.target, old)
    honest = sorted(net.honest.values(), key=lambda n: distance(n.id, new.target))
    for node in honest[:6]:
        node.store.put(new.k, new.seq, new.v, new.sig)
    # the cluster is asked first (its members are the closest the seeds name): it answers
    # before any honest holder can
    seeds = [(None, a) for a in [cluster[0].addr, *list(net.honest)[:3]]]
    get = GetMutableLookup(new.k, seeds, fake_clock.monotonic(), own_id=OWN,
                           network_size=network_size)
    assert net.run(get, OWN) == [new]  # the old packet was held back, never yielded
    assert sum(item == old for item in get.held.values()) == 8  # all the cluster answered
