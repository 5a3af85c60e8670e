"""The I/O and time around :mod:`pkdns.dns.exchange`: sockets, timers, TCP, the clock.

The exchange decides; :class:`Run` carries out what it returns -- one fresh connected UDP
socket per :class:`~pkdns.dns.actions.Attempt` through the
:class:`~pkdns.dns.sockpoll.SocketPoller` (and the C module behind it), one timer, a TCP
connection for a retry, the asker's callback when it is Done -- and feeds it the events of
those, with ``now`` from the injected clock.

Why callbacks, not a task: a cache miss used to cost a task, two coroutines, a future and a
timer per query, a third of the miss path's CPU. Here the common case is three event-loop
callbacks: the send, the read callback that feeds the reply in, and ``on_done``.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from functools import partial
from typing import Final

from pkdns import log
from pkdns.config import HostPort
from pkdns.dns.actions import Action, Attempt, Close, Done, Tcp, Timer, matches
from pkdns.dns.exchange import Exchange
from pkdns.dns.sockpoll import SocketPoller, recv
from pkdns.dns.upstreams import Report
from pkdns.errors import UpstreamError

_log = log.get("forwarder")
_READS: Final = 16                # datagrams read per wake-up of one socket


class Driver:
    """What every :class:`Run` of one forwarder shares: the socket poller of the running
    loop, the clock (``now``), where unwanted TCP replies are counted, and ``sent``, the
    datagrams sent upstream."""

    def __init__(self, now: Callable[[], float], report: Report) -> None:
        self.now = now                  # called, not looked up, per event
        self.report = report
        self.sent = 0
        self._poller: SocketPoller | None = None

    def run(self, ex: Exchange, now: float, on_done: Callable[[bytes | None], None]) -> Run:
        """Start ``ex`` at ``now``; ``on_done(reply)`` once it is Done (not after cancel)."""
        run = Run(self, ex, on_done)
        run.go(ex.start(now), now)
        return run

    async def wait(self, ex: Exchange, now: float) -> bytes | None:
        """:meth:`run` as a coroutine: the reply, or None."""
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        run = self.run(ex, now, partial(_settle, fut))
        try:
            return await fut
        finally:
            run.cancel()

    def poller(self) -> SocketPoller:
        """The socket poller of the running loop (made again when the loop changes).

        Cached because ``asyncio.get_running_loop()`` makes a getpid() system call each time
        on Python 3.11; a running cached loop is necessarily the current one (one per thread).
        """
        poller = self._poller
        if poller is None or not poller.loop.is_running():
            if poller is not None:
                poller.close()
            poller = self._poller = SocketPoller(asyncio.get_running_loop())
        return poller

    async def tcp(self, addr: HostPort, packet: bytes, qid: int, question: bytes,
                  timeout: float) -> bytes:
        """One exchange over a new TCP connection (RFC 7766 §5), length-prefixed."""
        try:
            return await asyncio.wait_for(self._tcp(addr, packet, qid, question), timeout)
        except TimeoutError:
            raise UpstreamError("tcp timeout") from None
        except ConnectionRefusedError:
            raise UpstreamError("tcp refused") from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise UpstreamError(f"tcp: {type(exc).__name__}") from None

    async def _tcp(self, addr: HostPort, packet: bytes, qid: int, question: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(addr[0], addr[1])
        try:
            writer.write(struct.pack(">H", len(packet)) + packet)
            while True:
                (size,) = struct.unpack(">H", await reader.readexactly(2))
                data = await reader.readexactly(size)
                if matches(data, qid, question):
                    return data
                self.report.fail(addr, "unwanted_reply")
        finally:
            writer.close()



class Run:
    """The driver of one :class:`~pkdns.dns.exchange.Exchange`: carries out its actions and
    feeds it the events of its sockets, its timer and its TCP retry, with the clock's ``now``.

    The first attempt's socket is kept in the run itself (``fd``, ``att``: most exchanges
    have no other); later ones get a :class:`_Socket` each. The one timer goes to the
    poller's shared :class:`~pkdns.dns.sockpoll.FifoTimers` when it is a regular attempt
    timeout (a uvloop timer per attempt cost 7 % of a miss); a nearer deadline gets a loop
    timer of its own.
    """

    __slots__ = ("drv", "ex", "poller", "now", "on_done", "fd", "att", "more", "tick",
                 "handle", "at", "task")

    def __init__(self, drv: Driver, ex: Exchange,
                 on_done: Callable[[bytes | None], None]) -> None:
        self.drv, self.ex, self.poller, self.on_done = drv, ex, drv.poller(), on_done
        self.now = drv.now
        self.fd = -1                   # the first attempt's socket (-1: closed)
        self.att: Attempt | None = None
        self.more: list[_Socket] | None = None
        self.tick = 0                  # the timer's token in poller.timers (0: none)
        self.handle: asyncio.TimerHandle | None = None
        self.at = 0.0                  # when the timer is due (clock time)
        self.task: asyncio.Task[bytes] | None = None

    def go(self, actions: list[Action], now: float) -> None:
        """Carry out ``actions`` in order (an event fed meanwhile appends to the list)."""
        i = 0
        while i < len(actions):
            act = actions[i]
            i += 1
            if isinstance(act, Attempt):
                self._send(act, now)
            elif isinstance(act, Timer):
                self._arm(act.at, act.regular, now)
            elif isinstance(act, Close):
                self._release(act.attempt)
            elif isinstance(act, Tcp):
                self._tcp(act)
            elif isinstance(act, Done):
                self._done(act.reply)
        self.ex.taken()

    def cancel(self) -> None:
        """Stop without reporting (the asker went away)."""
        self.on_done = _ignore
        self.go(self.ex.cancel(), 0.0)

    def _send(self, att: Attempt, now: float) -> None:
        try:
            if self.att is None:
                self.fd = self.poller.open(att.addr, att.packet, self.readable)
                self.att = att
            else:
                sock = _Socket(self, att)
                sock.fd = self.poller.open(att.addr, att.packet, sock.readable)
                if self.more is None:
                    self.more = [sock]
                else:
                    self.more.append(sock)
        except OSError as exc:
            self.ex.unsent(att, f"network: {exc.strerror}", now)   # appends to our list
            return
        self.drv.sent += 1

    def readable(self) -> None:
        """The poller's callback for the first attempt's socket."""
        if self.att is not None:
            self.read(self.fd, self.att)

    def read(self, fd: int, att: Attempt) -> None:
        """Feed what ``att``'s socket has to the exchange (a few datagrams at most)."""
        ex = self.ex
        for _ in range(_READS):
            try:
                data = recv(fd)
            except OSError as exc:
                now = self.now()
                self.go(ex.broken(att, isinstance(exc, ConnectionRefusedError),
                                  f"network: {exc.strerror}", now), now)
                return
            if data is None:                  # nothing (more) to read
                return
            now = self.now()
            self.go(ex.received(att, data, now), now)
            if not att.live:
                return

    def _release(self, att: Attempt) -> None:
        if att is self.att:
            self.poller.release(self.fd)
            self.fd = -1                      # self.att stays: later attempts are "more"
            return
        if self.more is not None:
            for sock in self.more:
                if sock.att is att:
                    self.poller.release(sock.fd)
                    self.more.remove(sock)
                    return

    def _arm(self, at: float, regular: bool, now: float) -> None:
        self._disarm()
        self.at = at
        if at <= 0:
            return
        if regular:
            self.tick = self.poller.timers.arm(self, self.poller.loop.time() + (at - now))
        else:
            self.handle = self.poller.loop.call_later(at - now, self._deadline)

    def _disarm(self) -> None:
        if self.tick:
            self.poller.timers.disarm(self.tick)
            self.tick = 0
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def expired(self) -> None:
        """:class:`~pkdns.dns.sockpoll.FifoTimers` callback: the attempt timed out."""
        self.tick = 0
        self._fired()

    def _deadline(self) -> None:
        self.handle = None
        self._fired()

    def _fired(self) -> None:
        # a loop timer may fire a little early on the clock (uvloop counts whole ms)
        now = max(self.now(), self.at)
        self.go(self.ex.timer(now), now)

    def _tcp(self, tcp: Tcp) -> None:
        task = self.poller.loop.create_task(
            self.drv.tcp(tcp.addr, tcp.packet, tcp.qid, tcp.question, tcp.timeout))
        task.add_done_callback(partial(self._tcp_done, tcp))
        self.task = task

    def _tcp_done(self, tcp: Tcp, task: asyncio.Task[bytes]) -> None:
        self.task = None
        if task.cancelled() or self.ex.done:
            return
        now = self.now()
        exc = task.exception()
        if exc is not None:
            self.go(self.ex.tcp_done(tcp, None, str(exc), now), now)
        else:
            self.go(self.ex.tcp_done(tcp, task.result(), "", now), now)

    def _done(self, reply: bytes | None) -> None:
        """Close everything and report ``reply`` once."""
        self._disarm()
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if self.fd >= 0:
            self.poller.release(self.fd)
            self.fd = -1
        if self.more is not None:
            for sock in self.more:
                self.poller.release(sock.fd)
            self.more = None
        on_done, self.on_done = self.on_done, _ignore   # reported once; and whoever still
        try:                                           # holds us keeps nothing of the asker
            on_done(reply)
        except Exception:
            _log.exception("upstream_callback_failed")


class _Socket:
    """A later attempt's socket (descriptor ``fd``; the first one's is in the :class:`Run`)."""

    __slots__ = ("run", "att", "fd")

    def __init__(self, run: Run, att: Attempt) -> None:
        self.run, self.att, self.fd = run, att, -1

    def readable(self) -> None:
        """The poller's callback (a bound method: cheaper than a partial per attempt)."""
        self.run.read(self.fd, self.att)


def _settle(fut: asyncio.Future[bytes | None], reply: bytes | None) -> None:
    if not fut.done():
        fut.set_result(reply)


def _ignore(_reply: bytes | None) -> None:
    pass
