"""Joining the DHT over a lossy network: say hello to every known address at once, and resend.

A cold node knows only its bootstrap addresses (and, in the daemon, the contacts saved in the
state dir). Asking each once, as a plain lookup does, fails whenever the one query or its
reply is lost: on a link that drops 30 % of datagrams half of all round trips fail, and a CLI
with one bootstrap host then died after one request timeout ("could not join the DHT"). So
the join sends ``find_node`` for our own id (and, for a one-shot command, for the key it will
look up) to all of them in parallel and resends to each (at 0.05 s, then every 0.25 s for the
first second, then backing off to at most 2 s apart) until the first one answers or the
deadline passes. Every attempt stays open until the deadline, so a late reply to an early
attempt still counts (a slow node is not a lost one).

Pure parts (:func:`resend_offsets`) take no clock; :func:`first_answer` is the small asyncio
piece the node drives with its own ``request``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from pkdns import log
from pkdns.dht.ids import distance
from pkdns.dht.krpc import Address, NodeInfo, Query, Response
from pkdns.dht.transport import Reply
from pkdns.errors import PkdnsError

RESEND_FIRST = 0.25
"""First resend after this many seconds; loopback and LAN round trips are far shorter, the
internet's median is ~0.15 s."""
HELLO_STEADY = 1.0
"""Hellos are resent every RESEND_FIRST seconds for this long before backing off: a join
waits on them (a cold command prints nothing until one answered), and at 30 % loss each way
one round trip in two fails, so a doubling schedule (0, 0.25, 0.75, 1.75, 3.75 s) left a
join with one bootstrap host waiting 1.75 s or more one time in eight (libtorrent re-adds its
bootstrap nodes every 0.25 s)."""
HELLO_EARLY = 0.05
"""One extra copy of each hello this soon after the first, before the steady resends: a
one-shot command waits on the first answer, and the copy costs one datagram per host. The
same 50 ms as the resend gap's floor (:data:`pkdns.dht.resend.MIN_GAP`, which imports this
module), down from 0.1 s: on the internet a bootstrap host's round trip is mostly longer than
either, so the copy goes out before its answer anyway; on a fast link a lost first hello cost
the whole wait (kernel lab, loopback with 30 % loss, traced: one cold ``pkdns resolve`` in six
joined at the copy, 0.1 s after its first hellos)."""
RESEND_MAX = 2.0
"""Resends never get further apart than this (mainline's own request timeout)."""
SAVED_HELLOS = 16
"""Saved contacts greeted along with the bootstrap hosts (the closest to our id first)."""

MAX_HINTS = 256
HINT_FAILS = 2
"""Unanswered queries in a row (resends included) after which a hint is no seed: as a
routing-table entry is bad after MAX_FAILS (BEP 5), but a hint is not in the table to count
them."""

Attempt = Callable[[float], Coroutine[Any, Any, Reply | None]]
"""Send one query that waits at most the given seconds for its reply."""
Ask = Callable[[Address, Query, float], Coroutine[Any, Any, Reply | None]]
"""The node's paced send: (address, query, seconds to wait)."""
Seeds = list[tuple[bytes | None, Address]]


def resend_offsets(timeout: float, first: float = RESEND_FIRST,
                   most: float = RESEND_MAX, steady: float = 0.0) -> list[float]:
    """When to (re)send within ``timeout`` seconds: 0, then every ``first`` seconds until
    ``steady``, then gaps doubling up to ``most``."""
    out, at, gap = [0.0], 0.0, first
    while at + gap < timeout:
        at += gap
        out.append(at)
        if at >= steady:
            gap = min(gap * 2, most)
    return out


def hello_offsets(timeout: float, first: float = RESEND_FIRST) -> list[float]:
    """When a hello is (re)sent: 0, an early copy, then every ``first`` seconds for the
    first second (:data:`HELLO_STEADY`), then backing off."""
    steady = resend_offsets(timeout, first, steady=HELLO_STEADY)
    early = [HELLO_EARLY] if HELLO_EARLY < min(timeout, first) else []
    return steady[:1] + early + steady[1:]


async def first_answer(attempt: Attempt, timeout: float,
                       offsets: list[float] | None = None) -> Response | None:
    """The first :class:`Response` (an error reply does not count: we want contacts)."""
    reply = await first_reply(attempt, timeout, offsets, errors=False)
    return reply if isinstance(reply, Response) else None


async def first_reply(attempt: Attempt, timeout: float, offsets: list[float] | None = None,
                      *, errors: bool = True) -> Reply | None:
    """Run ``attempt`` at each offset; the first reply (KRPC errors too if ``errors``), or
    None once ``timeout`` passed. Attempts still open are cancelled.

    An attempt that gives up long before its wait is over was never sent (pacing said no, or
    a fake network's instant silence): nothing more is sent, the open attempts still count.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    pending: set[asyncio.Task[Reply | None]] = set()
    ends: dict[asyncio.Task[Reply | None], float] = {}

    def settle(done: set[asyncio.Task[Reply | None]]) -> tuple[Reply | None, bool]:
        """(a reply worth returning, whether to stop sending)."""
        refused = False
        for task in done:
            if task.cancelled() or task.exception() is not None:
                continue
            reply = task.result()
            if isinstance(reply, Response) or (errors and reply is not None):
                return reply, True
            refused = refused or (reply is None and loop.time() < ends[task] - 0.05)
        return None, refused

    try:
        for at in offsets if offsets is not None else resend_offsets(timeout):
            left = start + at - loop.time()
            if left > 0 and pending:
                done, pending = await asyncio.wait(pending, timeout=left,
                                                   return_when=asyncio.FIRST_COMPLETED)
                got, stop = settle(done)
                if got is not None or stop:
                    if got is not None:
                        return got
                    break
            elif left > 0:
                await asyncio.sleep(left)
            wait = start + timeout - loop.time()
            if wait <= 0:
                break
            task = loop.create_task(attempt(wait))
            ends[task] = loop.time() + wait
            pending.add(task)
            await asyncio.sleep(0)  # an attempt that is refused at once says so now
            if task.done():
                pending.discard(task)
                got, stop = settle({task})
                if got is not None or stop:
                    if got is not None:
                        return got
                    break
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if (got := settle(done)[0]) is not None:
                return got
        return None
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


class Greeter:
    """The node's join: hellos with resends, and the contacts the greeted nodes told us of.

    ``on_answer(node_id, addr)`` is the node's "seen" (routing table); the hints are seeds
    while the table is still small -- a read-only node's table holds only nodes that answered
    it, so right after the first hello it holds one node, but that node listed 8 more.
    """

    def __init__(self, own_id: bytes, read_only: bool, ask: Ask,
                 on_answer: Callable[[bytes, Address], None],
                 resend_first: float = RESEND_FIRST) -> None:
        self.own_id, self.read_only = own_id, read_only
        self.resend_first = resend_first
        """0: send once (unit tests on a fake network whose silence is instant)."""
        self._ask, self._on_answer = ask, on_answer
        self.hints: dict[Address, bytes] = {}
        self._silent: dict[Address, int] = {}

    async def hello(self, addr: Address, timeout: float,
                    target: bytes | None = None) -> Response | None:
        """find_node for ``target`` (our id by default) to ``addr``, resent until it answers."""
        query = Query(tid=b"", method="find_node", id=self.own_id, target=target or self.own_id,
                      read_only=self.read_only)
        offsets = hello_offsets(timeout, self.resend_first) if self.resend_first > 0 else [0.0]
        reply = await first_answer(lambda wait: self._ask(addr, query, wait), timeout, offsets)
        if reply is not None:
            self._on_answer(reply.id, addr)
            self.hint(reply.nodes)
        return reply

    def hint(self, nodes: Iterable[NodeInfo]) -> None:
        for n in nodes:
            if (n.id != self.own_id and len(self.hints) < MAX_HINTS
                    and self._silent.get(n.addr, 0) < HINT_FAILS):
                self.hints[n.addr] = n.id

    def answered(self, addr: Address) -> None:
        """``addr`` answered: its earlier silence was loss, as a table entry's would be."""
        self._silent.pop(addr, None)

    def failed(self, addr: Address) -> None:
        """A query to ``addr`` went unanswered. A hint silent HINT_FAILS times in a row is
        dropped and not taken again: every lookup's seeds would start with it (kernel lab,
        traced: the bootstrap host named five dead nodes for a key's far half; all eight walks
        of a look around the key asked them first, 8 timeouts each, and the next look's walks
        asked them again, out of a 2 s budget)."""
        if addr not in self.hints:
            return
        self._silent[addr] = n = self._silent.get(addr, 0) + 1
        if n >= HINT_FAILS:
            del self.hints[addr]
        while len(self._silent) > 4 * MAX_HINTS:  # a daemon greets for months: forget the oldest
            del self._silent[next(iter(self._silent))]

    async def greet(self, addrs: list[Address], timeout: float,
                    tasks: set[asyncio.Task[None]], target: bytes | None = None) -> bool:
        """Hello to all ``addrs`` at once; True as soon as one answered, False when none
        did within ``timeout``. The hellos still running go on in the background (added to
        ``tasks``, which the node cancels on close) and add whoever answers later.

        With a ``target``, each host is asked for the contacts closest to it and, in a second
        hello, for those closest to our id: when the first lot is dead (a host's table keeps
        dead nodes until it pings them), the second lot is somewhere else to ask from, each
        with its own view of the target's neighbourhood."""
        first: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        async def one(addr: Address, toward: bytes | None) -> None:
            if await self.hello(addr, timeout, toward) is not None and not first.done():
                first.set_result(True)

        towards = [target, None] if target is not None else [None]
        started = [asyncio.create_task(one(a, t)) for a in addrs for t in towards]
        for task in started:
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        everyone: asyncio.Future[Any] = asyncio.gather(*started, return_exceptions=True)
        waits: list[asyncio.Future[Any]] = [first, everyone]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        return first.done()

    def seeds(self, known: Seeds, target: bytes, n: int = 32) -> Seeds:
        """``known`` (routing-table contacts) topped up with the closest hints."""
        if len(known) >= n or not self.hints:
            return known
        have = {a for _, a in known}
        extra = sorted(((i, a) for a, i in self.hints.items() if a not in have),
                       key=lambda h: distance(h[0], target))
        return known + [(i, a) for i, a in extra[:n - len(known)]]


# -- bootstrap host names ----------------------------------------------------------------------
ResolveHost = Callable[[str, int], Awaitable[list[Address]]]
"""A bootstrap host name and port to addresses (the daemon resolves through its upstreams)."""
_log = log.get("pkdns.dht")


async def system_resolve(host: str, port: int) -> list[Address]:
    """Default ``resolve_host``: asyncio getaddrinfo, IPv4 only (the DHT socket is IPv4).

    A dotted-quad address is its own answer: getaddrinfo would run in a thread that a
    one-shot command otherwise never starts (and, for the str, load the IDNA codec).
    """
    try:
        socket.inet_pton(socket.AF_INET, host)
    except (OSError, ValueError):  # a name (or garbage: getaddrinfo says what is wrong)
        pass
    else:
        return [(host, port)]
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
    return [(str(i[4][0]), int(i[4][1])) for i in infos]


async def resolve_all(resolve: ResolveHost | None, nodes: Iterable[tuple[str, int]],
                      own: Address | None) -> list[Address]:
    """Every bootstrap host at once (a slow name must not hold up the others); up to 4
    addresses each, without ``own`` (our own socket); a name that fails is logged, skipped.
    ``resolve`` None: :func:`system_resolve`."""
    async def one(host: str, port: int) -> list[Address]:
        try:
            return (await (resolve or system_resolve)(host, port))[:4]
        except (OSError, UnicodeError, PkdnsError) as exc:
            _log.warning("dht_bootstrap_unresolved", host=host, error=str(exc))
            return []

    found = await asyncio.gather(*(one(h, p) for h, p in nodes))
    return [a for a in dict.fromkeys(a for addrs in found for a in addrs) if a != own]
