"""KRPC messages (BEP 5) with the BEP 43 and BEP 44 extensions, as typed values.

Two layers, as in pubky/mainline: :mod:`fastbencode` turns bytes into plain dicts, and this
module turns those dicts into :class:`Query`, :class:`Response` and :class:`ErrorMessage`.
Every malformed datagram raises exactly one exception type, :class:`DecodeError`, so the
transport can drop it (libtorrent: "not a good idea to send a response to an invalid
message"). Size and nesting are capped *before* the bencode decoder runs: fastbencode has no
depth limit (it accepted 100 000-deep nesting) and raises ValueError on huge integers.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Literal, cast

import fastbencode

from pkdns.errors import DecodeError

MAX_DATAGRAM = 65535
"""Accept up to 64 KiB: bittorrent-dht replies carry its whole routing table
(k-bucket ``closest()`` without a count), several kB on the real DHT."""
MAX_DEPTH = 10
"""libtorrent's ``bdecode`` depth limit (``dht_tracker.cpp``)."""
MAX_TOKENS = 2000
"""Bencode items per message; a 64 KiB reply with 1000 compact nodes has far fewer."""
MAX_INT_DIGITS = 20
"""An i64 ``seq`` needs at most 19 digits plus a sign."""

Method = Literal["ping", "find_node", "get_peers", "announce_peer", "get", "put"]
METHODS: frozenset[str] = frozenset(
    ("ping", "find_node", "get_peers", "announce_peer", "get", "put"))
Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A contact from a compact ``nodes`` list: 20-byte id, IPv4 address, port."""

    id: bytes
    host: str
    port: int

    @property
    def addr(self) -> Address:
        return (self.host, self.port)


@dataclass(frozen=True, slots=True)
class Query:
    """A request. ``target`` is find_node's target, get's target or get_peers' info_hash."""

    tid: bytes
    method: Method
    id: bytes
    target: bytes | None = None
    seq: int | None = None
    token: bytes | None = None
    k: bytes | None = None
    v: bytes | None = None
    sig: bytes | None = None
    cas: int | None = None
    salt: bytes | None = None
    port: int | None = None
    read_only: bool = False
    client: bytes | None = None


@dataclass(frozen=True, slots=True)
class Response:
    """A reply (``y=r``); fields absent on the wire are ``None`` or empty."""

    tid: bytes
    id: bytes
    nodes: tuple[NodeInfo, ...] = ()
    token: bytes | None = None
    k: bytes | None = None
    v: bytes | None = None
    sig: bytes | None = None
    seq: int | None = None
    ip: Address | None = None


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    """A KRPC error (``y=e``): code and message, e.g. 302 "Sequence number less than current"."""

    tid: bytes
    code: int
    message: str


Message = Query | Response | ErrorMessage


def _precheck(data: bytes) -> None:
    """Bound size, nesting depth, item count and integer length without recursion."""
    if len(data) > MAX_DATAGRAM or len(data) < 2 or data[0] != 0x64 or data[-1] != 0x65:
        raise DecodeError("not a bencoded dict of acceptable size")
    depth = tokens = i = 0
    n = len(data)
    while i < n:
        c = data[i]
        tokens += 1
        if tokens > MAX_TOKENS:
            raise DecodeError("too many bencode items")
        if c in (0x64, 0x6C):  # d, l
            depth += 1
            if depth > MAX_DEPTH:
                raise DecodeError("bencode nested too deeply")
            i += 1
        elif c == 0x65:  # e
            depth -= 1
            i += 1
        elif c == 0x69:  # i
            end = data.find(b"e", i)
            if end < 0 or end - i - 1 > MAX_INT_DIGITS:
                raise DecodeError("bad bencode integer")
            i = end + 1
        else:
            colon = data.find(b":", i, i + 8)
            if colon < 0 or not data[i:colon].isdigit():
                raise DecodeError("bad bencode string length")
            i = colon + 1 + int(data[i:colon])


def decode(data: bytes) -> Message:
    """Parse one datagram; raise :class:`DecodeError` for anything malformed."""
    _precheck(data)
    try:
        raw = fastbencode.bdecode(data)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise DecodeError(f"bad bencode: {exc}") from None
    if not isinstance(raw, dict):
        raise DecodeError("message is not a dict")
    tid = _bytes(raw, b"t", max_len=32)
    kind = raw.get(b"y")
    if kind == b"q":
        return _query(raw, tid)
    if kind == b"r":
        return _response(raw, tid)
    if kind == b"e":
        return _error(raw, tid)
    raise DecodeError("unknown message type")


def _query(raw: dict[bytes, Any], tid: bytes) -> Query:
    method = _bytes(raw, b"q", max_len=32).decode("ascii", "replace")
    args = raw.get(b"a")
    if not isinstance(args, dict):
        raise DecodeError("query without arguments")
    if method not in METHODS:
        raise DecodeError(f"unknown method {method!r}")
    target_key = b"info_hash" if method in ("get_peers", "announce_peer") else b"target"
    return Query(
        tid=tid, method=cast(Method, method),
        id=_node_id(args, b"id"),
        target=_opt_fixed(args, target_key, 20),
        seq=_opt_int(args, b"seq"), token=_opt_bytes(args, b"token", 64),
        k=_opt_fixed(args, b"k", 32), v=_opt_value(args), sig=_opt_fixed(args, b"sig", 64),
        cas=_opt_int(args, b"cas"), salt=_opt_bytes(args, b"salt", 1024),
        port=_opt_int(args, b"port"), read_only=raw.get(b"ro") == 1,
        client=raw.get(b"v") if isinstance(raw.get(b"v"), bytes) else None,
    )


def _response(raw: dict[bytes, Any], tid: bytes) -> Response:
    r = raw.get(b"r")
    if not isinstance(r, dict):
        raise DecodeError("response without r")
    nodes = r.get(b"nodes", b"")
    if not isinstance(nodes, bytes):
        raise DecodeError("nodes is not a string")
    return Response(
        tid=tid, id=_node_id(r, b"id"), nodes=decode_nodes(nodes),
        token=_opt_bytes(r, b"token", 64), k=_opt_fixed(r, b"k", 32), v=_opt_value(r),
        sig=_opt_fixed(r, b"sig", 64), seq=_opt_int(r, b"seq"), ip=_opt_compact_addr(raw),
    )


def _error(raw: dict[bytes, Any], tid: bytes) -> ErrorMessage:
    e = raw.get(b"e")
    if not isinstance(e, list) or len(e) < 2 or not isinstance(e[0], int):
        raise DecodeError("malformed error")
    msg = e[1].decode("utf-8", "replace")[:200] if isinstance(e[1], bytes) else ""
    return ErrorMessage(tid=tid, code=e[0], message=msg)


def _bytes(d: dict[bytes, Any], key: bytes, max_len: int) -> bytes:
    value = d.get(key)
    if not isinstance(value, bytes) or len(value) > max_len:
        raise DecodeError(f"missing or bad {key.decode()}")
    return value


def _node_id(d: dict[bytes, Any], key: bytes) -> bytes:
    value = d.get(key)
    if not isinstance(value, bytes) or len(value) != 20:
        raise DecodeError("missing or bad node id")
    return value


def _opt_bytes(d: dict[bytes, Any], key: bytes, max_len: int) -> bytes | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, bytes) or len(value) > max_len:
        raise DecodeError(f"bad {key.decode()}")
    return value


def _opt_fixed(d: dict[bytes, Any], key: bytes, size: int) -> bytes | None:
    value = _opt_bytes(d, key, size)
    if value is not None and len(value) != size:
        raise DecodeError(f"{key.decode()} must be {size} bytes")
    return value


def _opt_value(d: dict[bytes, Any]) -> bytes | None:
    """BEP 44 ``v``: pkarr only ever stores a byte string, so other bencode types are refused."""
    value = d.get(b"v")
    if value is None:
        return None
    if not isinstance(value, bytes):
        raise DecodeError("v is not a byte string")
    return value


def _opt_int(d: dict[bytes, Any], key: bytes) -> int | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or not -(2**63) <= value < 2**63:
        raise DecodeError(f"bad {key.decode()}")
    return value


def _opt_compact_addr(d: dict[bytes, Any]) -> Address | None:
    """BEP 42 ``ip`` field: our address as the responder saw it (6 bytes for IPv4)."""
    value = d.get(b"ip")
    if isinstance(value, bytes) and len(value) == 6:
        return (str(ipaddress.IPv4Address(value[:4])), int.from_bytes(value[4:], "big"))
    return None


def decode_nodes(data: bytes) -> tuple[NodeInfo, ...]:
    """BEP 5 compact node info: 26 bytes each (id, IPv4, port)."""
    if len(data) % 26:
        raise DecodeError("compact nodes length is not a multiple of 26")
    return tuple(
        NodeInfo(data[i:i + 20], str(ipaddress.IPv4Address(data[i + 20:i + 24])),
                 int.from_bytes(data[i + 24:i + 26], "big"))
        for i in range(0, len(data), 26))


def encode_nodes(nodes: tuple[NodeInfo, ...] | list[NodeInfo]) -> bytes:
    """Inverse of :func:`decode_nodes`; IPv6 contacts are skipped (BEP 5 ``nodes`` is IPv4)."""
    out = bytearray()
    for n in nodes:
        try:
            packed = ipaddress.IPv4Address(n.host).packed
        except ValueError:
            continue
        out += n.id + packed + n.port.to_bytes(2, "big")
    return bytes(out)


def encode(msg: Message, *, client: bytes | None = None) -> bytes:
    """Serialize a message; ``client`` is the BEP 5 ``v`` version string."""
    wire: dict[bytes, Any] = {b"t": msg.tid}
    if client is not None and not isinstance(msg, ErrorMessage):
        wire[b"v"] = client
    if isinstance(msg, Query):
        wire[b"y"] = b"q"
        wire[b"q"] = msg.method.encode()
        wire[b"a"] = _query_args(msg)
        if msg.read_only:
            wire[b"ro"] = 1
    elif isinstance(msg, Response):
        wire[b"y"] = b"r"
        wire[b"r"] = _response_body(msg)
        if msg.ip is not None:
            wire[b"ip"] = ipaddress.IPv4Address(msg.ip[0]).packed + msg.ip[1].to_bytes(2, "big")
    else:
        wire[b"y"] = b"e"
        wire[b"e"] = [msg.code, msg.message.encode()]
    return bytes(fastbencode.bencode(wire))


def _query_args(q: Query) -> dict[bytes, Any]:
    a: dict[bytes, Any] = {b"id": q.id}
    if q.target is not None:
        key = b"info_hash" if q.method in ("get_peers", "announce_peer") else b"target"
        a[key] = q.target
    for name, value in ((b"seq", q.seq), (b"token", q.token), (b"k", q.k), (b"v", q.v),
                        (b"sig", q.sig), (b"cas", q.cas), (b"salt", q.salt), (b"port", q.port)):
        if value is not None:
            a[name] = value
    return a


def _response_body(r: Response) -> dict[bytes, Any]:
    body: dict[bytes, Any] = {b"id": r.id}
    if r.nodes:
        body[b"nodes"] = encode_nodes(r.nodes)
    for name, value in ((b"token", r.token), (b"k", r.k), (b"v", r.v), (b"sig", r.sig),
                        (b"seq", r.seq)):
        if value is not None:
            body[name] = value
    return body
