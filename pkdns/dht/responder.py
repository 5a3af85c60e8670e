"""Server mode: answer one KRPC query (BEP 5 ping/find_node/get_peers/announce_peer, BEP 44
get/put). Pure: routing table, tokens and item store are passed in, time is ``now``.

Replies list at most 8 contacts so they stay under 1500 bytes: libtorrent's UDP receive
buffer is 1500 bytes and it silently drops bigger replies (``aux_/udp_socket.hpp``). We are not a
BitTorrent tracker, so ``get_peers`` returns contacts only and ``announce_peer`` is
acknowledged after a token check without storing the peer.
"""

from __future__ import annotations

import ipaddress

from pkdns.dht.krpc import Address, ErrorMessage, NodeInfo, Query, Response
from pkdns.dht.routing import RoutingTable
from pkdns.dht.storage import ItemStore
from pkdns.dht.tokens import TokenManager

REPLY_NODES = 8

E_PROTOCOL = 203


def _ipv4(addr: Address) -> Address | None:
    try:
        ipaddress.IPv4Address(addr[0])
    except ValueError:
        return None
    return addr


class Responder:
    """Builds the reply to a query from ``addr``; never raises on peer input."""

    def __init__(self, own_id: bytes, table: RoutingTable, tokens: TokenManager,
                 store: ItemStore) -> None:
        self.own_id = own_id
        self.table = table
        self.tokens = tokens
        self.store = store

    def handle(self, q: Query, addr: Address, now: float) -> Response | ErrorMessage:
        if q.method == "ping":
            return self._ok(q, addr)
        if q.method == "put":
            return self._put(q, addr, now)
        if q.method == "announce_peer":
            if q.token is None or not self.tokens.check(q.token, addr[0], now):
                return ErrorMessage(q.tid, E_PROTOCOL, "Bad token")
            return self._ok(q, addr)
        if q.target is None:
            return ErrorMessage(q.tid, E_PROTOCOL, "missing target")
        nodes = tuple(NodeInfo(e.id, e.host, e.port)
                      for e in self.table.closest(q.target, REPLY_NODES))
        if q.method == "find_node":
            return Response(q.tid, self.own_id, nodes=nodes, ip=_ipv4(addr))
        token = self.tokens.issue(addr[0], now)
        if q.method == "get_peers":
            return Response(q.tid, self.own_id, nodes=nodes, token=token, ip=_ipv4(addr))
        return self._get(q, addr, nodes, token)

    def _ok(self, q: Query, addr: Address) -> Response:
        return Response(q.tid, self.own_id, ip=_ipv4(addr))

    def _get(self, q: Query, addr: Address, nodes: tuple[NodeInfo, ...],
             token: bytes) -> Response:
        assert q.target is not None
        item = self.store.get(q.target)
        base = Response(q.tid, self.own_id, nodes=nodes, token=token, ip=_ipv4(addr))
        if item is None:
            return base
        if q.seq is not None and item.seq <= q.seq:
            return Response(base.tid, base.id, nodes=nodes, token=token, seq=item.seq,
                            ip=base.ip)  # BEP 44: "no more recent value"
        return Response(base.tid, base.id, nodes=nodes, token=token, k=item.k, v=item.v,
                        sig=item.sig, seq=item.seq, ip=base.ip)

    def _put(self, q: Query, addr: Address, now: float) -> Response | ErrorMessage:
        if q.token is None or not self.tokens.check(q.token, addr[0], now):
            return ErrorMessage(q.tid, E_PROTOCOL, "Bad token")
        if q.k is None or q.v is None or q.sig is None or q.seq is None:
            return ErrorMessage(q.tid, E_PROTOCOL, "Protocol error: immutable items unsupported"
                                if q.k is None else "Protocol error: missing field")
        if q.seq < 0:
            return ErrorMessage(q.tid, E_PROTOCOL, "negative seq")
        err = self.store.put(q.k, q.seq, q.v, q.sig, cas=q.cas, salt=q.salt)
        if err is not None:
            return ErrorMessage(q.tid, err[0], err[1])
        return self._ok(q, addr)
