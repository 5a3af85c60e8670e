"""Asking the ICANN upstreams: the I/O and time around :mod:`pkdns.dns.exchange`.

The rules (RFC 5452 hygiene, retransmit and failover, error rcodes, TCP on TC, health,
near misses, 0x20) are the pure :class:`~pkdns.dns.exchange.Exchange`'s, in its module. This
module is its driver: it reads the injected clock, feeds the exchange its events and carries out
the actions it returns -- one fresh connected UDP socket per :class:`~pkdns.dns.exchange.Attempt`
through the :class:`~pkdns.dns.sockpoll.SocketPoller` (and the C module behind it), one timer,
a TCP connection for a retry -- and counts what went wrong in ``pkdns_upstream_failures`` and
``pkdns_upstream_spoofing`` (the latter also logged, at most once a second per upstream).

Why callbacks, not a task: a cache miss used to cost a task, two coroutines, a future and a
timer per query, a third of the miss path's CPU. Here the common case is three event-loop
callbacks: the send, the read callback that feeds the reply in, and ``on_done``.

Two entry points share the machinery: :meth:`Forwarder.start` (a cache miss, coalesced one
level up in :mod:`pkdns.dns.fetch`; :meth:`Forwarder.exchange` is it as a coroutine) and
:meth:`Forwarder.query_server` (NS delegation: a caller's complete query to one server).
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Callable
from functools import partial
from typing import Final

from pkdns import log
from pkdns.clock import SYSTEM_CLOCK, Clock
from pkdns.config import Config, HostPort, format_hostport
from pkdns.dns import wire
from pkdns.dns.exchange import (
    Action,
    Attempt,
    Close,
    Done,
    Entropy,
    Exchange,
    Policy,
    Tcp,
    Timer,
    matches,
)
from pkdns.dns.health import Health
from pkdns.dns.sockpoll import SocketPoller, recv
from pkdns.errors import UpstreamError
from pkdns.metrics import Metrics

_log = log.get("forwarder")
_SPOOF_LOG_EVERY = 1.0            # seconds between spoofing log lines per upstream
_READS: Final = 16                       # datagrams read per wake-up of one socket


class Forwarder:
    """Sends questions to the configured upstreams; see the module docstring.

    ``upstreams``, ``attempt_timeout``, ``use_0x20`` and ``nearmiss_max`` may be set at any
    time (a reload); exchanges started afterwards use the new values.
    """

    def __init__(self, upstreams: tuple[HostPort, ...], attempt_timeout: float,
                 metrics: Metrics | None = None, rng: random.Random | None = None,
                 use_0x20: bool = True, nearmiss_max: int = 1,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.metrics = metrics
        self.clock = clock
        self.now: Callable[[], float] = clock.monotonic   # called, not looked up, per event
        self.health = Health()
        self.entropy = Entropy(rng)
        self.policy = Policy(upstreams, attempt_timeout, self.health, self.entropy, self,
                             use_0x20, nearmiss_max)
        self.sent = 0                   # datagrams sent upstream
        self._spoof_logged: dict[HostPort, tuple[float, int]] = {}
        self._poller: SocketPoller | None = None

    live = ("dns.upstream", "dns.upstream_timeout", "dns.upstream_0x20",
            "dns.upstream_nearmiss_max")
    """Options applied on reload (:class:`pkdns.reload.Live`)."""

    def reconfigure(self, old: Config, cfg: Config) -> None:
        """Exchanges started from now on use the new upstreams and attempt rules."""
        dns = cfg.dns
        self.upstreams, self.attempt_timeout = dns.upstream, dns.upstream_timeout
        self.use_0x20, self.nearmiss_max = dns.upstream_0x20, dns.upstream_nearmiss_max

    @property
    def upstreams(self) -> tuple[HostPort, ...]:
        return self.policy.upstreams

    @upstreams.setter
    def upstreams(self, value: tuple[HostPort, ...]) -> None:
        self.policy.set_upstreams(value)

    @property
    def attempt_timeout(self) -> float:
        return self.policy.attempt_timeout

    @attempt_timeout.setter
    def attempt_timeout(self, value: float) -> None:
        self.policy.attempt_timeout = value

    @property
    def use_0x20(self) -> bool:
        return self.policy.use_0x20

    @use_0x20.setter
    def use_0x20(self, value: bool) -> None:
        self.policy.use_0x20 = value

    @property
    def nearmiss_max(self) -> int:
        return self.policy.nearmiss_max

    @nearmiss_max.setter
    def nearmiss_max(self, value: int) -> None:
        self.policy.nearmiss_max = value

    @property
    def preferred(self) -> int:
        """The upstream the next exchange tries first (the one that answered last)."""
        return self.policy.preferred

    @preferred.setter
    def preferred(self, value: int) -> None:
        self.policy.preferred = value

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

    def start(self, question: bytes, do: bool, cd: bool, budget: float,
              on_done: Callable[[bytes | None], None]) -> Run:
        """Begin an exchange for ``question`` (lowercased wire qname + qtype + qclass) that
        ends within ``budget`` seconds.

        ``on_done(reply)`` is called exactly once, from the event loop: a usable reply, the
        last error-rcode reply when every upstream answered with one, or None.
        ``.cancel()`` on the result stops it without a call.
        """
        now = self.now()
        return self._run(Exchange(self.policy, question, do, cd, now + budget), now, on_done)

    async def exchange(self, question: bytes, do: bool, cd: bool, budget: float) -> bytes:
        """:meth:`start` as a coroutine; raises UpstreamError when no upstream answered."""
        now = self.now()
        reply = await self._wait(Exchange(self.policy, question, do, cd, now + budget), now)
        if reply is None:
            raise UpstreamError("no upstream answered in time")
        return reply

    async def query_server(self, addr: HostPort, packet: bytes, timeout: float) -> bytes:
        """Send a complete query to one server (NS delegation) and return its reply.

        The same exchange as for the upstreams, with ``addr`` the only server: ``packet``
        goes out as it is (its ID, flags, case and EDNS), a reply in any case is taken, TC=1
        or near misses go to TCP with a fresh ID, all within ``timeout``. The server's
        health is this call's alone (a delegated server is not an upstream).
        """
        name_end = wire.skip_name(packet, 12)
        question = packet[12:name_end].lower() + packet[name_end:name_end + 4]
        policy = Policy((addr,), timeout, Health(), self.entropy, self, False,
                        self.policy.nearmiss_max)
        policy.fresh_udp = policy.edns_fallback = False
        now = self.now()
        reply = await self._wait(Exchange(policy, question, False, False, now + timeout,
                                          packet), now)
        if reply is None:
            raise UpstreamError(f"no reply from {format_hostport(addr)} in time")
        return reply

    def _run(self, ex: Exchange, now: float, on_done: Callable[[bytes | None], None]) -> Run:
        run = Run(self, ex, on_done)
        run.go(ex.start(now), now)
        return run

    async def _wait(self, ex: Exchange, now: float) -> bytes | None:
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        run = self._run(ex, now, partial(_settle, fut))
        try:
            return await fut
        finally:
            run.cancel()

    # ------------------------------------------------- the exchange's Report

    def fail(self, addr: HostPort, reason: str) -> None:
        """Count one failed attempt (or an unwanted datagram) against ``addr``."""
        if self.metrics is not None:
            self.metrics.upstream_failures.labels(format_hostport(addr), reason).inc()

    def spoof_suspected(self, addr: HostPort, question: bytes, why: str, misses: int,
                        now: float) -> None:
        """An attempt to ``addr`` was dropped as spoofed (``why``: "nearmiss", "case").
        Counted always; logged at most once a second per upstream, with the count since."""
        if self.metrics is not None:
            self.metrics.upstream_spoofing.labels(format_hostport(addr), why).inc()
        last, count = self._spoof_logged.get(addr, (-_SPOOF_LOG_EVERY, 0))
        if now - last < _SPOOF_LOG_EVERY:
            self._spoof_logged[addr] = (last, count + 1)
            return
        self._spoof_logged[addr] = (now, 0)
        _log.warning("upstream_spoofing_suspected", upstream=format_hostport(addr),
                     qname=wire.name_text(question[:-4]), reason=why, near_misses=misses,
                     dropped_since_last_log=count + 1)

    # ------------------------------------------------------------------ TCP

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
                self.fail(addr, "unwanted_reply")
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

    __slots__ = ("fwd", "ex", "poller", "now", "on_done", "fd", "att", "more", "tick",
                 "handle", "at", "task")

    def __init__(self, fwd: Forwarder, ex: Exchange,
                 on_done: Callable[[bytes | None], None]) -> None:
        self.fwd, self.ex, self.poller, self.on_done = fwd, ex, fwd.poller(), on_done
        self.now = fwd.now
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
        self.fwd.sent += 1

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
            self.fwd.tcp(tcp.addr, tcp.packet, tcp.qid, tcp.question, tcp.timeout))
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
