"""The answer cache: whole replies in wire form, served by patching bytes.

Keys are ``(lowercased qname, qtype, qclass, DO, CD)`` cut from the query bytes
(:func:`pkdns.dns.wire.scan`). A stored :data:`Entry` is the upstream reply as walked by
:func:`pkdns.dns.reply.inspect_reply` (OPT cut out, AA/TC cleared, RA set, scrubbed) with every
TTL clamped. Serving it (:func:`render`) is slicing: the client's ID, RD bit and question bytes
(0x20 case as asked), the body with TTLs decremented by the whole seconds elapsed, and our OPT
when the client sent EDNS. Nothing is parsed on a hit; a listener's :class:`ReplyMemo` even
skips the rendering for repeats within one TTL second.

TTL policy:
* positive (NOERROR with answers): every TTL clamped to [min_ttl, max_ttl]; the entry lives for
  the smallest. TTLs with the top bit set count as 0 (RFC 2181 §8).
* negative (NXDOMAIN, or NOERROR/NODATA): only with an SOA in the authority section, for
  min(SOA TTL, SOA MINIMUM, negative_max_ttl) (RFC 2308 §5); without SOA, not cached.
* anything else (SERVFAIL, REFUSED, ...) is never stored here; :meth:`WireCache.note_failure`
  remembers the failure for :data:`FAILURE_TTL` seconds instead (RFC 9520).
* serve-stale (RFC 8767): an entry is kept ``stale_max_age`` past its expiry; the resolver may
  serve it with every TTL set to ``stale_answer_ttl`` when the upstream fails or is slow.

Storage: an insertion-ordered dict bounded by bytes; the oldest entries go first, when over the
bound or once past their stale window (swept a couple per store). Hits do not reorder it (a hot
name evicted under memory pressure comes back on its next miss). An entry is a plain tuple of
bytes, numbers and a str, which the garbage collector stops tracking: a class instance per
entry made every full collection walk the whole cache (70 ms pauses at 60 k entries).
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

from pkdns.config import CacheConfig, Config
from pkdns.dns import wire
from pkdns.dns.reply import ReplyInfo, inspect_reply

FAILURE_TTL = 5.0        # seconds a failed (SERVFAIL/timeout) name is not retried upstream
ENTRY_OVERHEAD = 400     # bytes per entry besides the reply: key, tuples, dict slot (tracemalloc:
                         # ~470 B for a 61-byte A answer with its 30-byte key)
MAX_FAILURES = 65536     # failure memory entries (pruned when full)
_ttl = struct.Struct(">I")

Entry = tuple[bytes, bytes, tuple[int, ...], tuple[int, ...], float, float, float, int, str]
"""One cached reply: the fields below, by index (see the module docstring for why a tuple)."""
HEAD: Final = 0         # reply bytes 2-12: flags and counts (ID and question come from the query)
BODY: Final = 1         # everything after the question, TTLs clamped, as at STORED_AT
OFFSETS: Final = 2      # TTL fields in BODY
TTLS: Final = 3         # the clamped TTLs
STORED_AT: Final = 4    # clock times
EXPIRES: Final = 5
STALE_UNTIL: Final = 6
SIZE: Final = 7         # bytes counted against max_bytes
KIND: Final = 8         # "icann" or "pkarr" (metrics label)


def make_entry(info: ReplyInfo, ttls: tuple[int, ...], now: float, lifetime: int,
               stale_for: int, kind: str = "icann", cd: int = 0) -> Entry:
    """The entry for ``info``; ``cd`` (0 or 1, the key's CD bit) is set in the stored flags,
    so every reply rendered from it carries the CD bit of the query (RFC 4035 §3.2.2: the
    key keeps CD=0 and CD=1 queries apart), whatever the upstream or the pkarr side put."""
    rest = info.wire[info.qend:]
    if ttls is not info.ttls and ttls != info.ttls:
        rest = _patched(rest, info.offsets, ttls)
    expires = now + lifetime
    w = info.wire
    head = w[2:3] + wire.BYTE[(w[3] & 0xEF) | (cd << 4)] + w[4:12]
    return (head, rest, info.offsets, ttls, now, expires, expires + stale_for,
            len(info.wire) + ENTRY_OVERHEAD, kind)


def body(entry: Entry, now: float) -> bytes:
    """Everything after the question, TTLs decremented by the whole seconds elapsed."""
    elapsed = int(now - entry[STORED_AT])
    if elapsed <= 0:
        return entry[BODY]
    return _patched(entry[BODY], entry[OFFSETS],
                    [t - elapsed if t > elapsed else 0 for t in entry[TTLS]])


def stale_body(entry: Entry, ttl: int) -> bytes:
    """The body with every TTL set to ``ttl`` (RFC 8767 §4)."""
    return _patched(entry[BODY], entry[OFFSETS], [ttl] * len(entry[TTLS]))


def second_end(entry: Entry, now: float) -> float:
    """Until when :func:`body` stays what it is at ``now`` (and the entry stays fresh)."""
    stored = entry[STORED_AT]
    return min(stored + int(now - stored) + 1, entry[EXPIRES])


def _patched(data: bytes, offsets: tuple[int, ...], ttls: Sequence[int]) -> bytes:
    out = bytearray(data)
    for off, t in zip(offsets, ttls, strict=True):
        _ttl.pack_into(out, off, t)
    return bytes(out)


def render(entry: Entry, q: bytes, qend: int, size: int, do: bool, max_size: int, now: float,
           stale_ttl: int = 0) -> bytes:
    """The reply to query bytes ``q`` from ``entry``; TC=1 if it exceeds ``max_size``.

    ``size`` is the client's EDNS payload size, 0 when it sent no OPT.
    """
    h = entry[HEAD]
    rest = stale_body(entry, stale_ttl) if stale_ttl else body(entry, now)
    if size:
        arcount = ((h[8] << 8) | h[9]) + 1
        out = b"".join((q[:2], wire.BYTE[(h[0] & 0xFE) | (q[2] & 1)], h[1:8],
                        wire.BYTE[arcount >> 8], wire.BYTE[arcount & 255], q[12:qend], rest,
                        wire.opt_rr(do)))
    else:
        out = b"".join((q[:2], wire.BYTE[(h[0] & 0xFE) | (q[2] & 1)], h[1:], q[12:qend], rest))
    if len(out) > max_size:
        return wire.fitted(out, qend, max_size, bool(size), do)
    return out


class ReplyMemo:
    """Finished replies keyed by the query bytes after the ID, for one listener.

    A cache hit is a pure function of the query bytes (ID aside), the entry and the whole
    seconds elapsed; so a query byte-identical to an earlier one, within the same TTL second,
    gets the earlier reply with its own ID: one dict lookup instead of scan + key + render
    (what makes a hit cost about what a minimal uvloop forwarder answering from a dict of wire
    replies costs: about 6 µs of CPU per query under dnsperf).
    Each value is ``(valid_until, reply[2:], tally cell)``; ``valid_until`` is
    :func:`second_end`, so TTLs stay exact and nothing is served past its expiry. An
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


class WireCache:
    """Byte-bounded store of :data:`Entry` plus a short-lived failure memory."""

    def __init__(self, cfg: CacheConfig) -> None:
        self.cfg = cfg
        self._stale_for = cfg.stale_max_age if cfg.serve_stale else 0
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._bytes = 0
        self._stores = 0
        self._dead: list[Entry] = []        # scratch for _trim
        self._failures: dict[bytes, float] = {}
        #: ``get(key)`` -> the entry, fresh or stale (callers compare ``entry[EXPIRES]`` and
        #: ``entry[STALE_UNTIL]`` with their ``now``), or None.
        self.get = self._entries.get

    def __len__(self) -> int:
        return len(self._entries)

    live = ("cache.serve_stale",)
    """Options applied on reload (:class:`pkdns.reload.Live`); the rest size the cache."""

    def reconfigure(self, old: Config, cfg: Config) -> None:
        """``cache.serve_stale`` changed: entries stored from now on keep (or do not keep)
        their ``stale_max_age`` window; entries already stored keep theirs."""
        self.cfg = cfg.cache
        self._stale_for = self.cfg.stale_max_age if self.cfg.serve_stale else 0

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def store(self, key: bytes, info: ReplyInfo, now: float, kind: str = "icann") -> Entry:
        """Cache ``info`` under ``key`` if the TTL policy allows.

        Returns the entry either way (an uncacheable reply gets a transient one, lifetime 0),
        so every answer is rendered by the same code.
        """
        decision = self._lifetime(info)
        cd = key[-1] & 1
        if decision is None:
            return make_entry(info, info.ttls, now, 0, 0, kind, cd)
        lifetime, ttls = decision
        entry = make_entry(info, ttls, now, lifetime, self._stale_for, kind, cd)
        if entry[SIZE] <= self.cfg.max_bytes:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[SIZE]
            self._entries[key] = entry
            self._bytes += entry[SIZE]
            self._failures.pop(key, None)
            self._trim(now)
        return entry

    def _trim(self, now: float) -> None:
        """Oldest first: while over the byte bound, and, every 8th store, up to 16 entries
        past their stale window, so dead entries do not wait for memory pressure (2 per
        store on average, without looking at the oldest entry on every store)."""
        entries = self._entries
        while self._bytes > self.cfg.max_bytes:
            self._bytes -= entries.popitem(last=False)[1][SIZE]
        self._stores += 1
        if self._stores & 7:
            return
        for oldest in entries.values():
            if oldest[STALE_UNTIL] > now:
                break
            self._dead.append(oldest)
            if len(self._dead) >= 16:
                break
        if self._dead:
            for _ in self._dead:
                self._bytes -= entries.popitem(last=False)[1][SIZE]
            self._dead.clear()

    def _lifetime(self, info: ReplyInfo) -> tuple[int, tuple[int, ...]] | None:
        cfg = self.cfg
        lo, hi = cfg.min_ttl, cfg.max_ttl
        if info.rcode == 0 and info.ancount:
            ttls, life = info.ttls, hi         # usually nothing to clamp: the same tuple
            for t in ttls:
                if t < lo or t > hi:
                    ttls = tuple([min(max(x, lo), hi) for x in info.ttls])
                    life = min(ttls)
                    break
                if t < life:
                    life = t
        elif info.rcode in (0, wire.NXDOMAIN) and info.negative_ttl is not None:
            life = min(info.negative_ttl, self.cfg.negative_max_ttl)
            ttls = tuple([t if t < life else life for t in info.ttls])
        else:
            return None
        return (life, ttls) if life > 0 else None

    def note_failure(self, key: bytes, now: float) -> None:
        """Remember that ``key`` failed upstream at ``now`` (RFC 9520 §3.2)."""
        if len(self._failures) >= MAX_FAILURES:
            self._failures = {k: t for k, t in self._failures.items() if t > now - FAILURE_TTL}
            if len(self._failures) >= MAX_FAILURES:
                self._failures.clear()
        self._failures[key] = now

    def failing(self, key: bytes, now: float) -> bool:
        """Did ``key`` fail upstream in the :data:`FAILURE_TTL` seconds before ``now``?"""
        at = self._failures.get(key)
        return at is not None and now - at < FAILURE_TTL


__all__ = ["EXPIRES", "Entry", "KIND", "ReplyInfo", "ReplyMemo", "STALE_UNTIL", "WireCache",
           "inspect_reply", "render", "second_end"]
