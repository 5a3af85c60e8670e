"""Server-side BEP 44 mutable item store: the ``put`` rules, bounded by count and bytes (LRU).

Rules (BEP 44; mainline ``rpc/server.rs``; libtorrent ``node.cpp``), checked in this order:
205 value too big, 206 invalid signature, 301 CAS mismatch, 302 sequence number less than
current. An equal seq with the identical value is a refresh (success); an equal seq with a
different value gets 302 — bittorrent-dht answers so too, and keeping the first value is what
libtorrent 2.1.1 does (both
measured with raw KRPC puts on loopback).
"""

from __future__ import annotations

from collections import OrderedDict

from pkdns.dht.item import MAX_VALUE, MutableItem, check_item
from pkdns.errors import VerifyError

ITEM_OVERHEAD = 32 + 64 + 20 + 8 + 64
"""Bytes charged per item besides ``v``: k, sig, target, seq and bookkeeping."""

PutError = tuple[int, str]

E_TOO_BIG: PutError = (205, "Message (v field) too big.")
E_BAD_SIG: PutError = (206, "Invalid signature")
E_SALT: PutError = (207, "salt (salt field) too big.")
E_CAS: PutError = (301, "CAS mismatched, re-read value and try again.")
E_OLD_SEQ: PutError = (302, "Sequence number less than current.")


class ItemStore:
    """LRU map target -> :class:`MutableItem`, capped at ``max_items`` and ``max_bytes``."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: OrderedDict[bytes, MutableItem] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def get(self, target: bytes) -> MutableItem | None:
        item = self._items.get(target)
        if item is not None:
            self._items.move_to_end(target)
        return item

    def put(self, k: bytes, seq: int, v: bytes, sig: bytes, *, cas: int | None = None,
            salt: bytes | None = None) -> PutError | None:
        """Store a put request's item; return a KRPC error tuple or ``None`` on success."""
        if len(v) > MAX_VALUE:
            return E_TOO_BIG
        if salt:
            # pkarr never salts; storing salted items would need target = sha1(k || salt),
            # which this store does not key by. Refuse clearly instead of storing wrongly.
            return E_SALT if len(salt) > 64 else (203, "salted items are not stored here")
        try:
            item = check_item(k, seq, v, sig)
        except VerifyError:
            return E_BAD_SIG
        target = item.target
        held = self._items.get(target)
        if held is not None:
            if cas is not None and cas != held.seq:
                return E_CAS
            if item.seq < held.seq or (item.seq == held.seq and item.v != held.v):
                return E_OLD_SEQ
        self._store(target, item, held)
        return None

    def _store(self, target: bytes, item: MutableItem, held: MutableItem | None) -> None:
        if held is not None:
            self._bytes -= len(held.v) + ITEM_OVERHEAD
        self._items[target] = item
        self._items.move_to_end(target)
        self._bytes += len(item.v) + ITEM_OVERHEAD
        while self._items and (len(self._items) > self.max_items or self._bytes > self.max_bytes):
            _, old = self._items.popitem(last=False)
            self._bytes -= len(old.v) + ITEM_OVERHEAD
