"""The handle a BEP 44 get returns: an async iterator of verified items as they arrive.

The lookup itself is driven by the node (:func:`pkdns.dht.outbound.drive`); this wraps it in a
task and a queue so the caller can take the first item at once and still see newer ones later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from pkdns.dht.getlookup import GetMutableLookup
from pkdns.dht.item import MutableItem
from pkdns.dht.lookup import IterativeLookup, Outcome

Drive = Callable[[IterativeLookup, Callable[[MutableItem], None] | None], Awaitable[None]]


class GetQuery:
    """Async iterator of verified items, newest-so-far only; ``outcome`` once exhausted."""

    def __init__(self, drive: Drive, lookup: GetMutableLookup) -> None:
        self._drive = drive
        self._lookup = lookup
        self._queue: asyncio.Queue[MutableItem | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    @property
    def outcome(self) -> Outcome:
        return self._lookup.outcome

    @property
    def lookup(self) -> GetMutableLookup:
        return self._lookup

    @property
    def best(self) -> MutableItem | None:
        """The most recent verified item seen so far."""
        return self._lookup.best

    def settled(self, quorum: int) -> bool:
        """``quorum`` nodes agree on :attr:`best` (:meth:`GetMutableLookup.settled`)."""
        return self._lookup.settled(quorum)

    @property
    def held_back(self) -> MutableItem | None:
        """An item only a suspected Sybil cluster gave, not released by the lookup
        (:attr:`GetMutableLookup.held_back`)."""
        return self._lookup.held_back

    def __aiter__(self) -> GetQuery:
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        try:
            await self._drive(self._lookup, self._queue.put_nowait)
        finally:
            self._queue.put_nowait(None)

    async def __anext__(self) -> MutableItem:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # stay exhausted
            raise StopAsyncIteration
        return item

    async def collect(self) -> list[MutableItem]:
        """Run to the end; every newer item in arrival order (the last is the newest)."""
        return [item async for item in self]

    async def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
