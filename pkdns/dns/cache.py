"""The answer cache: whole replies in wire form, served by patching bytes.

Keys are ``(lowercased qname, qtype, qclass, DO, CD)`` cut from the query bytes
(:func:`pkdns.dns.wire.scan`). A stored :class:`Entry` is the upstream reply with its OPT RR cut
out (OPT is hop-by-hop, RFC 6891 §6.1.1), AA/TC cleared, RA set, and every TTL clamped. Serving
it (:func:`render`) is slicing: the client's ID, RD bit and question bytes (0x20 case as asked),
the body with TTLs decremented by the whole seconds elapsed (memoised per second), and our OPT
when the client sent EDNS. Nothing is parsed on a hit.

TTL policy:
* positive (NOERROR with answers): every TTL clamped to [min_ttl, max_ttl]; the entry lives for
  the smallest. TTLs with the top bit set count as 0 (RFC 2181 §8).
* negative (NXDOMAIN, or NOERROR/NODATA): only with an SOA in the authority section, for
  min(SOA TTL, SOA MINIMUM, negative_max_ttl) (RFC 2308 §5); without SOA, not cached.
* anything else (SERVFAIL, REFUSED, ...) is never stored here; :meth:`WireCache.note_failure`
  remembers the failure for :data:`FAILURE_TTL` seconds instead (RFC 9520).
* serve-stale (RFC 8767): an entry is kept ``stale_max_age`` past its expiry; the resolver may
  serve it with every TTL set to ``stale_answer_ttl`` when the upstream fails or is slow.

The store is a ``cachetools.TLRUCache`` bounded by bytes and driven by the injected clock.
Forwarded replies are scrubbed first: answer records outside the CNAME chain that starts at the
qname are removed (reliability P4/P5); authority/additional stay only inside this one message.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cachetools
import dnslib

from pkdns.clock import Clock
from pkdns.config import CacheConfig
from pkdns.dns import wire
from pkdns.errors import DecodeError

FAILURE_TTL = 5.0        # seconds a failed (SERVFAIL/timeout) name is not retried upstream
MAX_RRS = 1024           # more records than this in one reply is not a sane answer
MAX_FAILURES = 65536     # failure memory entries (pruned when full)
_rr = struct.Struct(">HHIH").unpack_from
_ttl = struct.Struct(">I")
_u32 = struct.Struct(">I").unpack_from


@dataclass(slots=True)
class ReplyInfo:
    """A reply walked once: what caching needs, with the OPT RR already removed."""

    wire: bytes
    qend: int
    rcode: int                    # including the extended bits from OPT
    offsets: tuple[int, ...]      # TTL field offsets (in ``wire``)
    ttls: tuple[int, ...]
    negative_ttl: int | None      # min(SOA TTL, SOA MINIMUM) when an SOA is in authority

    @property
    def ancount(self) -> int:
        return (self.wire[6] << 8) | self.wire[7]


class Entry:
    """One cached reply (see the module docstring)."""

    __slots__ = ("wire", "qend", "offsets", "ttls", "stored_at", "expires", "stale_until",
                 "size", "head", "arcount", "kind", "_memo_at", "_memo_body")

    def __init__(self, info: ReplyInfo, ttls: tuple[int, ...], now: float, lifetime: int,
                 stale_for: int, kind: str = "icann") -> None:
        self.wire, self.qend, self.kind = info.wire, info.qend, kind
        self.offsets = tuple(o - info.qend for o in info.offsets)
        self.ttls = ttls
        self.stored_at = now
        self.expires = now + lifetime
        self.stale_until = self.expires + stale_for
        self.size = len(info.wire) + 200          # + Python object overhead, roughly
        self.head = info.wire[3:10]               # flags byte 2 (RA/rcode) + QD/AN/NS counts
        self.arcount = (info.wire[10] << 8) | info.wire[11]
        self._memo_at = -1
        self._memo_body = b""

    def body(self, now: float) -> bytes:
        """Everything after the question, TTLs decremented by the whole seconds elapsed."""
        elapsed = int(now - self.stored_at)
        if elapsed != self._memo_at:
            self._memo_body = self._patched(lambda t: max(t - elapsed, 0))
            self._memo_at = elapsed
        return self._memo_body

    def second_end(self, now: float) -> float:
        """Until when :meth:`body` stays what it is at ``now`` (and the entry stays fresh)."""
        return min(self.stored_at + int(now - self.stored_at) + 1, self.expires)

    def stale_body(self, ttl: int) -> bytes:
        """The body with every TTL set to ``ttl`` (RFC 8767 §4)."""
        return self._patched(lambda _t: ttl)

    def _patched(self, fn: Callable[[int], int]) -> bytes:
        body = bytearray(self.wire[self.qend:])
        for off, t in zip(self.offsets, self.ttls, strict=True):
            _ttl.pack_into(body, off, fn(t))
        return bytes(body)


def render(entry: Entry, q: bytes, qend: int, size: int, do: bool, max_size: int, now: float,
           stale_ttl: int = 0) -> bytes:
    """The reply to query bytes ``q`` from ``entry``; TC=1 if it exceeds ``max_size``.

    ``size`` is the client's EDNS payload size, 0 when it sent no OPT.
    """
    body = entry.stale_body(stale_ttl) if stale_ttl else entry.body(now)
    edns = 1 if size else 0
    out = (q[:2] + bytes(((entry.wire[2] & 0xFE) | (q[2] & 1),)) + entry.head
           + (entry.arcount + edns).to_bytes(2, "big") + q[12:qend] + body)
    if edns:
        out += wire.opt_rr(do)
    if len(out) > max_size:
        return wire.truncated_reply(out, qend, bool(edns), do)
    return out


class ReplyMemo:
    """Finished replies keyed by the query bytes after the ID, for one listener.

    A cache hit is a pure function of the query bytes (ID aside), the entry and the whole
    seconds elapsed; so a query byte-identical to an earlier one, within the same TTL second,
    gets the earlier reply with its own ID: one dict lookup instead of scan + key + render
    (what makes a hit cost about what the minimal forwarder in dns-anchors.md §0 costs).
    Each value is ``(valid_until, reply[2:], tally cell)``; ``valid_until`` is
    :meth:`Entry.second_end`, so TTLs stay exact and nothing is served past its expiry. An
    entry evicted from the cache may still be served until then (at most 1 s, within its
    TTL). Bounded by clearing it when full: it refills from the next hit of each name.
    """

    __slots__ = ("_replies", "get", "max_entries")

    def __init__(self, max_entries: int = 4096) -> None:
        self._replies: dict[bytes, tuple[float, bytes, list[int]]] = {}
        self.max_entries = max_entries
        self.get = self._replies.get

    def __len__(self) -> int:
        return len(self._replies)

    def put(self, query: bytes, reply: bytes, valid_until: float, cell: list[int]) -> None:
        if len(self._replies) >= self.max_entries:
            self._replies.clear()
        self._replies[query[2:]] = (valid_until, reply[2:], cell)

    def clear(self) -> None:
        self._replies.clear()


def inspect_reply(data: bytes) -> ReplyInfo:
    """Walk a reply's records once (bounds-checked); scrub it if needed. DecodeError if bad."""
    try:
        return _inspect(data, scrub=True)
    except (IndexError, struct.error):
        raise DecodeError("reply runs past the end") from None


def _inspect(data: bytes, scrub: bool) -> ReplyInfo:
    an, ns, ar = struct.unpack_from(">HHH", data, 6)
    if data[4:6] != b"\x00\x01" or an + ns + ar > MAX_RRS:
        raise DecodeError("reply must have one question and a sane record count")
    qend = wire.skip_name(data, 12) + 4
    chain = {data[12:qend - 4].lower()}
    offsets: list[int] = []
    ttls: list[int] = []
    neg: int | None = None
    rcode, opt, out_of_chain, i = data[3] & 0x0F, None, False, qend
    for section, count in enumerate((an, ns, ar)):
        for _ in range(count):
            start = i
            i = wire.skip_name(data, i)
            rtype, _rclass, ttl, rdlen = _rr(data, i)
            rd, i = i + 10, i + 10 + rdlen
            if i > len(data):
                raise DecodeError("record runs past the end")
            if rtype == wire.T_OPT and section == 2:
                if opt is not None:
                    raise DecodeError("two OPT records")
                opt, rcode = (start, i), rcode | ((ttl >> 24) << 4)
                continue
            ttl = ttl if ttl < 0x80000000 else 0
            offsets.append(rd - 6)
            ttls.append(ttl)
            if section == 0:
                if wire.read_name(data, start) not in chain:
                    out_of_chain = True
                elif rtype == wire.T_CNAME:
                    chain.add(wire.read_name(data, rd))
            elif section == 1 and rtype == wire.T_SOA and rdlen >= 22:
                neg = min(ttl, _u32(data, i - 4)[0], neg if neg is not None else ttl)
    if scrub and (out_of_chain or (opt is not None and opt[1] != i)):
        return _inspect(_rebuild(data), scrub=False)
    flags = bytes((data[2] & 0xF9 | 0x80, (data[3] & 0x70) | 0x80 | (rcode & 0x0F)))
    body = data[:i]
    if opt is not None:
        body = body[:opt[0]]
        ar -= 1
    out = b"\x00\x00" + flags + struct.pack(">HHHH", 1, an, ns, ar) + body[12:]
    return ReplyInfo(out, qend, rcode, tuple(offsets), tuple(ttls), neg)


def _rebuild(data: bytes) -> bytes:
    """Rare path: drop out-of-chain answers and the OPT with dnslib, then re-pack."""
    try:
        msg = dnslib.DNSRecord.parse(data)
        chain = {str(msg.q.qname).lower()}
        kept = []
        for rr in msg.rr:
            if str(rr.rname).lower() in chain:
                kept.append(rr)
                if rr.rtype == wire.T_CNAME:
                    chain.add(str(rr.rdata.label).lower())
        msg.rr = kept
        msg.ar = [rr for rr in msg.ar if rr.rtype != wire.T_OPT]
        return bytes(msg.pack())
    except Exception as exc:  # dnslib raises many types on bad input
        raise DecodeError(f"unparseable reply: {type(exc).__name__}") from None


class _Store(cachetools.TLRUCache[bytes, Entry]):
    """A TLRU that mirrors its live entries into a plain dict.

    The hot path reads the mirror (one C-level dict lookup instead of two timer calls and an
    LRU reorder); eviction and expiry stay with cachetools. The price: cache hits do not
    refresh an entry's LRU position, so under memory pressure eviction is by insertion order
    (hot names come back on their next miss).
    """

    def __init__(self, mirror: dict[bytes, Entry], **kw: Any) -> None:
        super().__init__(**kw)
        self.mirror = mirror

    def __setitem__(self, key: bytes, value: Entry) -> None:
        super().__setitem__(key, value)
        if cachetools.Cache.__contains__(self, key):
            self.mirror[key] = value
        else:
            self.mirror.pop(key, None)

    def __delitem__(self, key: bytes) -> None:
        try:
            super().__delitem__(key)
        finally:
            self.mirror.pop(key, None)

    def popitem(self) -> tuple[bytes, Entry]:
        key, value = super().popitem()
        self.mirror.pop(key, None)
        return key, value

    def expire(self, time: float | None = None) -> list[tuple[bytes, Entry]]:
        expired = list(super().expire(time))
        for key, _ in expired:
            self.mirror.pop(key, None)
        return expired


class WireCache:
    """Byte-bounded TLRU of :class:`Entry` plus a short-lived failure memory."""

    def __init__(self, cfg: CacheConfig, clock: Clock) -> None:
        self.cfg = cfg
        self.clock = clock
        self._stale_for = cfg.stale_max_age if cfg.serve_stale else 0
        self._live: dict[bytes, Entry] = {}
        self._store = _Store(self._live, maxsize=cfg.max_bytes,
                             ttu=lambda _k, e, _now: e.stale_until, timer=clock.monotonic,
                             getsizeof=lambda e: e.size)
        self._failures: dict[bytes, float] = {}
        #: ``get(key)`` -> the entry, fresh or stale (callers compare ``expires`` and
        #: ``stale_until`` with their ``now``), or None.
        self.get = self._live.get

    def __len__(self) -> int:
        return len(self._store)

    @property
    def bytes_used(self) -> int:
        return int(self._store.currsize)

    def store(self, key: bytes, info: ReplyInfo, now: float, kind: str = "icann") -> Entry:
        """Cache ``info`` under ``key`` if the TTL policy allows.

        Returns the entry either way (an uncacheable reply gets a transient one, lifetime 0),
        so every answer is rendered by the same code.
        """
        decision = self._lifetime(info)
        if decision is None:
            return Entry(info, info.ttls, now, 0, 0, kind)
        lifetime, ttls = decision
        entry = Entry(info, ttls, now, lifetime, self._stale_for, kind)
        if entry.size <= self.cfg.max_bytes:
            self._store[key] = entry
            self._failures.pop(key, None)
        return entry

    def _lifetime(self, info: ReplyInfo) -> tuple[int, tuple[int, ...]] | None:
        lo, hi = self.cfg.min_ttl, self.cfg.max_ttl
        if info.rcode == 0 and info.ancount:
            ttls = tuple(min(max(t, lo), hi) for t in info.ttls)
            life = min(ttls)
        elif info.rcode in (0, wire.NXDOMAIN) and info.negative_ttl is not None:
            life = min(info.negative_ttl, self.cfg.negative_max_ttl)
            ttls = tuple(min(t, life) for t in info.ttls)
        else:
            return None
        return (life, ttls) if life > 0 else None

    def note_failure(self, key: bytes) -> None:
        """Remember that ``key`` just failed upstream (RFC 9520 §3.2)."""
        now = self.clock.monotonic()
        if len(self._failures) >= MAX_FAILURES:
            self._failures = {k: t for k, t in self._failures.items() if t > now - FAILURE_TTL}
            if len(self._failures) >= MAX_FAILURES:
                self._failures.clear()
        self._failures[key] = now

    def failing(self, key: bytes) -> bool:
        """Did ``key`` fail upstream in the last :data:`FAILURE_TTL` seconds?"""
        at = self._failures.get(key)
        return at is not None and self.clock.monotonic() - at < FAILURE_TTL
