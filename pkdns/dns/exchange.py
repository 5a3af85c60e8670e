"""One upstream exchange as a callback state machine (the rules: :mod:`pkdns.dns.forwarder`).

Why callbacks: a cache miss used to cost a task, two coroutines, a future and a timer per
query; that machinery was a third of the miss path's CPU. Here the common case is three
event-loop callbacks: the send, the read callback that checks the reply, and ``on_done``.
Sockets are watched through the forwarder's :class:`~pkdns.dns.sockpoll.SocketPoller`.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from functools import partial
from typing import TYPE_CHECKING

from pkdns import log
from pkdns.config import HostPort
from pkdns.dns import wire
from pkdns.dns.sockpoll import SocketPoller, recv

if TYPE_CHECKING:
    from pkdns.dns.forwarder import Forwarder

_log = log.get("forwarder")
_NONE_OUT: frozenset[int] = frozenset()   # shared until an upstream is taken out
_RCODE_FAILURES = (wire.FORMERR, wire.SERVFAIL, wire.NOTIMP, wire.REFUSED)
_TCP_TIMEOUT = 2.0


def matches(reply: bytes, qid: int, question: bytes) -> bool:
    """Is ``reply`` a response to our query ``qid`` for ``question``?

    ``question`` is the lowercased qname + qtype + qclass. Only the name is compared
    case-insensitively (an upstream may echo 0x20 case; ``bytes.lower`` folds ASCII A-Z only,
    as DNS does, RFC 4343 §3): qtype and qclass must match exactly -- lowercasing them too
    turned HTTPS (0x0041) into 0x0061 and rejected every reply.
    """
    end = 12 + len(question)              # where the question ends in the reply
    if (len(reply) < end or reply[0] != qid >> 8 or reply[1] != qid & 255
            or reply[2] & 0xF8 != 0x80 or reply[4] or reply[5] != 1):
        return False
    echoed = reply[12:end]      # a slice: compiled, cheaper than a bytes.startswith call
    return echoed == question or (echoed[-4:] == question[-4:]
                                  and echoed[:-4].lower() == question[:-4])


class _Attempt:
    """One UDP query in flight on its own connected, non-blocking socket (descriptor ``fd``)."""

    __slots__ = ("ex", "fd", "idx", "addr", "qid", "packet")

    def __init__(self, ex: Exchange, idx: int, addr: HostPort, qid: int,
                 packet: bytes) -> None:
        self.ex, self.idx, self.addr, self.qid, self.packet = ex, idx, addr, qid, packet
        self.fd = -1

    def readable(self) -> None:
        """The poller's callback (a bound method: cheaper than a partial per attempt)."""
        self.ex._readable(self)


class Exchange:
    """One question's exchange, driven by callbacks: no task, no future, one timer.

    The common case is: :meth:`start` opens a socket and sends; the reply's read callback
    checks it and calls ``on_done`` -- three event-loop callbacks in all. The rules of the
    module docstring are this state machine: every failed attempt (refused, network error,
    error rcode, failed TCP retry) moves on to the next upstream at once, a timer every
    ``attempt_timeout`` starts another attempt while earlier ones keep listening, and the
    deadline (or running out of upstreams) ends it with the last error reply or None.
    """

    __slots__ = ("fwd", "loop", "poller", "question", "do", "cd", "deadline", "on_done",
                 "attempts", "out", "error_reply", "tries", "timer", "tick", "tcp", "done")

    def __init__(self, fwd: Forwarder, poller: SocketPoller, question: bytes, do: bool,
                 cd: bool, deadline: float, on_done: Callable[[bytes | None], None]) -> None:
        self.fwd, self.loop, self.poller = fwd, poller.loop, poller
        self.question, self.do, self.cd = question, do, cd
        self.deadline, self.on_done = deadline, on_done
        self.attempts: list[_Attempt] = []
        self.out: AbstractSet[int] = _NONE_OUT   # upstreams refused or failed with an rcode
        self.error_reply: bytes | None = None
        self.tries = 0
        self.timer: asyncio.TimerHandle | None = None    # the deadline, when it comes first
        self.tick = 0                   # the attempt timer's token in poller.timers (0: none)
        self.tcp: asyncio.Task[bytes] | None = None
        self.done = False

    def advance(self) -> None:
        """Start the next attempt, or finish when out of upstreams or time."""
        self._disarm()
        fwd, loop = self.fwd, self.loop
        while len(self.out) < len(fwd.upstreams):
            now = loop.time()
            if now >= self.deadline:
                break
            idx = fwd.pick(self.tries, self.out, now)
            if idx < 0:                          # every upstream left is down
                if self.attempts:                # earlier ones may still answer: keep them
                    self.timer = loop.call_at(self.deadline, self._timeout)
                    return
                break
            self.tries += 1
            att = self._open(idx)
            if att is None:
                self._exclude(idx)
                continue
            self.attempts.append(att)
            self._arm(now)
            return
        all_failed = len(self.out) >= len(fwd.upstreams)
        self.finish(self.error_reply if all_failed else None)

    def _exclude(self, idx: int) -> None:
        """Take upstream ``idx`` out for this exchange (the set is made on the first one)."""
        out = self.out
        if isinstance(out, set):
            out.add(idx)
        else:
            self.out = {idx}

    def _arm(self, now: float) -> None:
        """The timer for the next attempt (or the deadline, whichever is first).

        The usual case, ``now + upstream_timeout``, goes to the poller's shared
        :class:`~pkdns.dns.sockpoll.FifoTimers`; a nearer deadline gets a timer of its own.
        """
        due = now + self.fwd.attempt_timeout
        if due <= self.deadline:
            self.tick = self.poller.timers.arm(self, due)
        else:
            self.timer = self.loop.call_at(self.deadline, self._timeout)

    def _disarm(self) -> None:
        if self.tick:
            self.poller.timers.disarm(self.tick)
            self.tick = 0
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def expired(self) -> None:
        """:class:`~pkdns.dns.sockpoll.FifoTimers` callback: the attempt timed out."""
        self.tick = 0
        self._timeout()

    def _open(self, idx: int, edns: bool = True) -> _Attempt | None:
        fwd = self.fwd
        addr = fwd.upstreams[idx]
        qid = fwd.new_id()
        packet = wire.build_query_for(qid, self.question, self.do, self.cd, edns)
        att = _Attempt(self, idx, addr, qid, packet)
        try:
            att.fd = self.poller.open(addr, packet, att.readable)
        except OSError as exc:
            fwd.fail(addr, f"network: {exc.strerror}")
            fwd.health.no_reply(addr, self.loop.time())
            return None
        fwd.sent += 1
        return att

    def _close(self, att: _Attempt) -> None:
        """Done with this attempt: close its socket (the exchange may go on with others)."""
        self.poller.release(att.fd)
        if att in self.attempts:
            self.attempts.remove(att)

    def _timeout(self) -> None:
        self.timer = None
        if self.attempts:                    # the latest attempt stayed silent
            self.fwd.health.no_reply(self.attempts[-1].addr, self.loop.time())
        if self.tcp is None:
            self.advance()

    def _readable(self, att: _Attempt) -> None:
        for _ in range(16):
            try:
                data = recv(att.fd)
            except ConnectionRefusedError:
                self._close(att)
                self._exclude(att.idx)
                self.fwd.fail(att.addr, "refused")
                self.fwd.health.no_reply(att.addr, self.loop.time())
                self.advance()
                return
            except OSError as exc:
                self._close(att)
                self.fwd.fail(att.addr, f"network: {exc.strerror}")
                self.fwd.health.no_reply(att.addr, self.loop.time())
                self.advance()
                return
            if data is None:                  # nothing (more) to read
                return
            if matches(data, att.qid, self.question):
                self._close(att)
                if self.fwd.health.silent:
                    self.fwd.health.replied(att.addr)
                if data[2] & 0x02:
                    if self.tcp is None:     # else a TCP retry is already under way
                        self._retry_tcp(att)
                else:
                    self._judge(att, data)
                return
            self.fwd.fail(att.addr, "unwanted_reply")

    def _judge(self, att: _Attempt, reply: bytes) -> None:
        rcode = reply[3] & 0x0F
        if rcode in _RCODE_FAILURES:
            if rcode == wire.FORMERR and att.packet[11] and self._without_edns(att):
                return
            self._exclude(att.idx)
            self.error_reply = reply
            self.fwd.fail(att.addr, f"rcode{reply[3] & 0x0F}")
            self.advance()
            return
        self.fwd.preferred = att.idx
        self.finish(reply)

    def _without_edns(self, att: _Attempt) -> bool:
        """FORMERR to a query with our OPT: ask the same upstream once more without it
        (Unbound ``fwd_no_edns``). False when that cannot be sent."""
        self.fwd.fail(att.addr, "rcode1_edns")
        plain = self._open(att.idx, edns=False)
        if plain is None:
            return False
        self.attempts.append(plain)
        if self.timer is None and not self.tick:  # after a TCP retry: nothing is timing us
            self._arm(self.loop.time())
        return True

    def _retry_tcp(self, att: _Attempt) -> None:
        """TC=1: ask the same upstream over TCP with a fresh ID (Unbound ``fwd_tcp_tc``).

        The retry gets what is left of the deadline (at most :data:`_TCP_TIMEOUT`), so a TC
        that comes late still ends the exchange by the deadline, answered or not.
        """
        self._disarm()
        left = min(self.deadline - self.loop.time(), _TCP_TIMEOUT)
        if left <= 0:
            self.advance()                   # out of time: finishes
            return
        qid = self.fwd.new_id()
        packet = struct.pack(">H", qid) + att.packet[2:]
        self.tcp = self.loop.create_task(
            self.fwd.tcp(att.addr, packet, qid, self.question, left))
        self.tcp.add_done_callback(partial(self._tcp_done, att))

    def _tcp_done(self, att: _Attempt, task: asyncio.Task[bytes]) -> None:
        self.tcp = None
        if self.done or task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self._judge(att, task.result())
            return
        self.fwd.fail(att.addr, str(exc))
        self.advance()

    def finish(self, reply: bytes | None) -> None:
        """Close everything and report ``reply`` (None: failed) once."""
        if self.done:
            return
        self.done = True
        self._disarm()
        if self.tcp is not None:
            self.tcp.cancel()
        for att in self.attempts:
            self.poller.release(att.fd)
        self.attempts.clear()
        on_done, self.on_done = self.on_done, _ignore   # reported once; and whoever still
        try:                                           # holds us keeps nothing of the asker
            on_done(reply)
        except Exception:
            _log.exception("upstream_callback_failed")

    def cancel(self) -> None:
        """Stop without reporting (the asker went away)."""
        self.on_done = _ignore
        self.finish(None)


def _ignore(_reply: bytes | None) -> None:
    pass
