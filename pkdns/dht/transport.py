"""The asyncio side of KRPC: one UDP socket, a transaction table, request/response matching.

A response is accepted only if its transaction id is outstanding *and* it comes from the
address the request went to (libtorrent ``rpc_manager.cpp``, mainline
``ignore_response_from_wrong_address``). When a request times out its
transaction is forgotten, so a late reply is dropped like any unsolicited one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any, cast

from pkdns import log
from pkdns.dht import krpc
from pkdns.dht.krpc import Address, ErrorMessage, Query, Response
from pkdns.errors import DecodeError

MAX_INFLIGHT = 8192
"""Transaction ids outstanding at once, each copy of a query holding one (an eighth of the
two-byte id space; a reply must also come from the address asked)."""
_log = log.get("pkdns.dht")

Reply = Response | ErrorMessage


@dataclasses.dataclass(slots=True)
class TransportStats:
    """KRPC datagram counters for metrics and diagnostics: ``malformed`` counts what failed to
    decode, ``unsolicited`` replies matching no pending request by transaction id and source
    address (late, or forged), ``send_errors`` sends the socket refused."""

    sent: int = 0
    received: int = 0
    malformed: int = 0
    unsolicited: int = 0
    send_errors: int = 0
    resent: int = 0


class Transactions:
    """Outstanding requests: tid -> (address asked, future)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._pending: dict[bytes, tuple[Address, asyncio.Future[Reply]]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def open(self, addr: Address, fut: asyncio.Future[Reply]) -> bytes:
        if len(self._pending) >= MAX_INFLIGHT:
            raise OverflowError("too many KRPC requests in flight")
        while True:
            tid = self._rng.getrandbits(16).to_bytes(2, "big")
            if tid not in self._pending:
                self._pending[tid] = (addr, fut)
                return tid

    def match(self, tid: bytes, addr: Address) -> asyncio.Future[Reply] | None:
        """The future waiting for this reply, if the tid is ours and ``addr`` is who we asked."""
        entry = self._pending.get(tid)
        if entry is None or entry[0] != addr:
            return None
        del self._pending[tid]
        return entry[1]

    def close(self, tid: bytes) -> None:
        self._pending.pop(tid, None)


class KrpcProtocol(asyncio.DatagramProtocol):
    """Decodes datagrams; hands queries to ``on_query`` and replies to their waiters."""

    def __init__(self, on_query: Callable[[Query, Address], None], rng: random.Random,
                 client_version: bytes | None = None) -> None:
        self.on_query = on_query
        self.client_version = client_version
        self.transactions = Transactions(rng)
        self.stats = TransportStats()
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.stats.received += 1
        source: Address = (addr[0], addr[1])
        try:
            msg = krpc.decode(data)
        except DecodeError:
            self.stats.malformed += 1
            return
        if isinstance(msg, Query):
            self.on_query(msg, source)
            return
        fut = self.transactions.match(msg.tid, source)
        if fut is None or fut.done():
            self.stats.unsolicited += 1
            return
        fut.set_result(msg)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors, ENOBUFS, EPERM and the like: log, keep the socket (lookups fail over)."""
        _log.debug("dht_socket_error", error=str(exc))

    def send(self, msg: krpc.Message, addr: Address) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        try:
            self._transport.sendto(krpc.encode(msg, client=self.client_version), addr)
            self.stats.sent += 1
        except OSError as exc:
            self.stats.send_errors += 1
            _log.debug("dht_send_failed", addr=addr, error=str(exc))

    async def request(self, addr: Address, query: Query, timeout: float,
                      resend: Sequence[float] = (),
                      may_resend: Callable[[], bool] | None = None,
                      on_copy: Callable[[bytes], None] | None = None) -> Reply | None:
        """Send ``query`` (its tid is replaced) and wait for the matching reply, or ``None``.

        ``resend``: seconds after which the query goes out again while unanswered, if
        ``may_resend()`` agrees. Each copy has a tid of its own and a reply to any of them
        counts: the reply's tid tells which copy it answers, so its round trip is known
        (RFC 9002 §5: no retransmission ambiguity). ``on_copy(tid)`` is called as each copy,
        the first included, goes out.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Reply] = loop.create_future()
        try:
            tid = self.transactions.open(addr, fut)
        except OverflowError:
            return None
        tids = [tid]
        msg = dataclasses.replace(query, tid=tid)
        timers = [loop.call_later(at, self._resend, msg, addr, fut, may_resend, tids, on_copy)
                  for at in resend if at < timeout]
        try:
            self.send(msg, addr)
            if on_copy is not None:
                on_copy(tid)
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None
        finally:
            for timer in timers:
                timer.cancel()
            for t in tids:
                self.transactions.close(t)

    def _resend(self, msg: Query, addr: Address, fut: asyncio.Future[Reply],
                may_resend: Callable[[], bool] | None, tids: list[bytes],
                on_copy: Callable[[bytes], None] | None) -> None:
        if fut.done() or (may_resend is not None and not may_resend()):
            return
        try:
            tid = self.transactions.open(addr, fut)
        except OverflowError:  # the first copy's tid still matches
            tid = msg.tid
        else:
            tids.append(tid)
        self.stats.resent += 1
        self.send(dataclasses.replace(msg, tid=tid), addr)
        if on_copy is not None:
            on_copy(tid)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
