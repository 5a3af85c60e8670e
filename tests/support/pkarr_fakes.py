"""Fakes of the pkarr client's two ways out: a scripted DHT (lookups that yield items after
set delays, then end with set counters) and a relay answering from a function."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from pkdns.dht.item import MutableItem
from pkdns.dht.lookup import Outcome
from pkdns.dht.put import PutResult
from pkdns.pkarr.client import to_item
from pkdns.pkarr.keys import PublicKey
from pkdns.pkarr.relay_client import RelayResponse
from pkdns.pkarr.signed_packet import SignedPacket


def item_of(packet: SignedPacket) -> MutableItem:
    return to_item(packet)


@dataclass
class Script:
    """What one DHT lookup does: (delay, item) pairs, then ends after ``end_after`` seconds.

    ``queried`` nodes were asked (default: as many as ``responded``); ``absent``: the
    lookup's k closest nodes all answered without the item (``Outcome.absent``).
    """

    items: list[tuple[float, MutableItem]] = field(default_factory=list)
    responded: int = 8
    queried: int | None = None
    end_after: float = 0.0
    hang: bool = False
    deadline_hit: bool = False
    absent: bool = False
    agreeing: int = 0
    """Nodes that gave the newest item once every item was yielded (``settled``)."""


class FakeStream:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.outcome = Outcome()
        self.cancelled = False
        self.yielded = 0
        self.held_back: MutableItem | None = None

    def __aiter__(self) -> AsyncIterator[MutableItem]:
        return self._run()

    async def _run(self) -> AsyncIterator[MutableItem]:
        for delay, item in self.script.items:
            await asyncio.sleep(delay)
            self.yielded += 1
            yield item
        if self.script.hang:
            await asyncio.Event().wait()
        await asyncio.sleep(self.script.end_after)
        queried = self.script.responded if self.script.queried is None else self.script.queried
        self.outcome = Outcome(queried=queried, responded=self.script.responded,
                               values=len(self.script.items),
                               deadline_hit=self.script.deadline_hit,
                               absent=self.script.absent)

    async def cancel(self) -> None:
        self.cancelled = True

    def settled(self, quorum: int) -> bool:
        return self.yielded == len(self.script.items) > 0 and self.script.agreeing >= quorum


class FakeDht:
    """``get_mutable`` runs ``script(key)``; records every call."""

    def __init__(self, script: Callable[[bytes], Script]) -> None:
        self.script = script
        self.calls: list[bytes] = []
        self.streams: list[FakeStream] = []
        self.up = True
        self.puts: list[MutableItem] = []
        self.put_result = PutResult(stored=8, asked=8)

    def reachable(self) -> bool:
        return self.up

    def get_mutable(self, public_key: bytes, seq_floor: int | None = None, *,
                    timeout: float = 5.0) -> FakeStream:
        self.calls.append(public_key)
        stream = FakeStream(self.script(public_key))
        self.streams.append(stream)
        return stream

    async def put_mutable(self, item: MutableItem, *, timeout: float = 5.0) -> PutResult:
        """Every put is stored on ``put_result`` (default: 8 nodes); kept in ``puts``."""
        self.puts.append(item)
        return self.put_result


@dataclass
class FnRelay:
    """A relay whose GET answers ``fn(key)`` (None: 404; raising: unreachable); PUTs are kept
    in ``puts`` and reported stored on ``stored`` nodes."""

    fn: Callable[[PublicKey], Awaitable[SignedPacket | None]]
    url: str = "http://relay.test"
    stored: int = 1
    puts: list[SignedPacket] = field(default_factory=list)

    async def get(self, key: PublicKey, policy: str | None = None,
                  newer_than: SignedPacket | None = None) -> RelayResponse:
        packet = await self.fn(key)
        return RelayResponse(packet, 200 if packet is not None else 404)

    async def put(self, packet: SignedPacket, if_match: int | None = None) -> int:
        self.puts.append(packet)
        return self.stored
