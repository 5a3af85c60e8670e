"""One upstream exchange as a callback state machine (the rules: :mod:`pkdns.dns.forwarder`).

Why callbacks: a cache miss used to cost a task, two coroutines, a future and a timer per
query; that machinery was a third of the miss path's CPU. Here the common case is three
event-loop callbacks: the send, the read callback that checks the reply, and ``on_done``.
Sockets are watched through the forwarder's :class:`~pkdns.dns.sockpoll.SocketPoller`.

Time: the state machine's steps take ``now``; only the event-loop entry points (a timer
firing, a socket turning readable, the TCP retry ending) read the loop's clock.
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
from pkdns.dns.health import Server
from pkdns.dns.sockpoll import SocketPoller, recv

if TYPE_CHECKING:
    from pkdns.dns.forwarder import Forwarder

_log = log.get("forwarder")
_NONE_OUT: frozenset[int] = frozenset()   # shared until an upstream is taken out
_RCODE_FAILURES = (wire.FORMERR, wire.SERVFAIL, wire.NOTIMP, wire.REFUSED)
_TCP_TIMEOUT = 2.0


def matches(reply: bytes, qid: int, question: bytes) -> bool:
    """Is ``reply`` a response to our query ``qid`` for ``question``?

    ``question`` is the qname + qtype + qclass as sent. An exact echo always matches. When
    ``question``'s name is all lowercase (no 0x20 case was sent), a name that differs only
    in case matches too (an upstream may apply its own 0x20; ``bytes.lower`` folds ASCII
    A-Z only, as DNS does, RFC 4343 §3). A name sent in mixed case must come back exactly,
    which is what makes the case bits entropy. qtype and qclass must match exactly --
    lowercasing them too turned HTTPS (0x0041) into 0x0061 and rejected every reply.
    """
    end = 12 + len(question)              # where the question ends in the reply
    if (len(reply) < end or reply[0] != qid >> 8 or reply[1] != qid & 255
            or reply[2] & 0xF8 != 0x80 or reply[4] or reply[5] != 1):
        return False
    echoed = reply[12:end]      # a slice: compiled, cheaper than a bytes.startswith call
    return echoed == question or (echoed[-4:] == question[-4:]
                                  and echoed[:-4].lower() == question[:-4])


class _Attempt:
    """One UDP query in flight on its own connected, non-blocking socket (descriptor ``fd``).

    ``question`` is what was sent (with 0x20 case); ``server``/``mark`` say whether the
    upstream answered anything else while this one waited (:mod:`pkdns.dns.health`);
    ``misses`` counts near-miss datagrams on its socket.
    """

    __slots__ = ("ex", "fd", "idx", "addr", "qid", "packet", "question", "server", "mark",
                 "misses")

    def __init__(self, ex: Exchange, idx: int, addr: HostPort, qid: int, packet: bytes,
                 question: bytes, server: Server) -> None:
        self.ex, self.idx, self.addr, self.qid, self.packet = ex, idx, addr, qid, packet
        self.question, self.server, self.mark = question, server, server.answers
        self.fd = -1
        self.misses = 0

    def readable(self) -> None:
        """The poller's callback (a bound method: cheaper than a partial per attempt)."""
        self.ex._readable(self)


class Exchange:
    """One question's exchange, driven by callbacks: no task, no future, one timer.

    The common case is: :meth:`advance` opens a socket and sends; the reply's read callback
    checks it and calls ``on_done`` -- three event-loop callbacks in all. The rules of the
    forwarder's docstring are this state machine: every failed attempt (refused, network
    error, error rcode, failed TCP retry) moves on to the next upstream at once, a timer every
    ``attempt_timeout`` starts another attempt while earlier ones keep listening, an attempt
    with too many near-miss replies is dropped and asked again safely, and the deadline (or
    running out of upstreams) ends it with the last error reply or None.
    """

    __slots__ = ("fwd", "loop", "poller", "question", "do", "cd", "deadline", "on_done",
                 "attempts", "out", "error_reply", "tries", "timer", "tick", "tcp", "done",
                 "spoofed")

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
        self.spoofed = 0                # attempts dropped for near misses

    def advance(self, now: float) -> None:
        """Start the next attempt, or finish when out of upstreams or time."""
        self._disarm()
        fwd = self.fwd
        while len(self.out) < len(fwd.upstreams) and now < self.deadline:
            idx = fwd.pick(self.tries, self.out, self.question, now)
            if idx < 0:                          # every upstream left is down
                if self.attempts:                # earlier ones may still answer: keep them
                    self.timer = self.loop.call_at(self.deadline, self._deadline)
                    return
                break
            self.tries += 1
            att = self._open(idx, now)
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
            self.timer = self.loop.call_at(self.deadline, self._deadline)

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
        self._timeout(self.loop.time())

    def _deadline(self) -> None:
        self.timer = None
        self._timeout(self.loop.time())

    def _open(self, idx: int, now: float, edns: bool = True) -> _Attempt | None:
        fwd = self.fwd
        addr = fwd.upstreams[idx]
        qid = fwd.new_id()
        question = fwd.mixed_case(self.question) if fwd.use_0x20 else self.question
        packet = wire.build_query_for(qid, question, self.do, self.cd, edns)
        att = _Attempt(self, idx, addr, qid, packet, question, fwd.server(idx))
        try:
            att.fd = self.poller.open(addr, packet, att.readable)
        except OSError as exc:
            fwd.fail(addr, f"network: {exc.strerror}")
            fwd.health.no_reply(att.server, None, now)
            return None
        fwd.sent += 1
        return att

    def _close(self, att: _Attempt) -> None:
        """Done with this attempt: close its socket (the exchange may go on with others)."""
        self.poller.release(att.fd)
        if att in self.attempts:
            self.attempts.remove(att)

    def _timeout(self, now: float) -> None:
        if self.attempts:                    # the latest attempt stayed silent
            att = self.attempts[-1]
            if not att.server.answered_since(att.mark):    # else the name is slow, not it
                self.fwd.health.no_reply(att.server, self.question, now)
        if self.tcp is None:
            self.advance(now)

    def _readable(self, att: _Attempt) -> None:
        for _ in range(16):
            try:
                data = recv(att.fd)
            except OSError as exc:
                self._broken(att, exc, self.loop.time())
                return
            if data is None:                  # nothing (more) to read
                return
            if matches(data, att.qid, att.question):
                self._close(att)
                srv = att.server
                srv.answers += 1
                if srv.silent:
                    self.fwd.health.replied(srv)
                if data[2] & 0x02:
                    if self.tcp is None:     # else a TCP retry is already under way
                        self._retry_tcp(att, self.loop.time())
                elif (data[3] & 0x0F) in _RCODE_FAILURES:
                    self._failed(att, data, self.loop.time())
                else:
                    self.fwd.preferred = att.idx
                    self.finish(data)
                return
            if self._near_miss(att, data):
                return

    def _broken(self, att: _Attempt, exc: OSError, now: float) -> None:
        """The socket reported an error: ICMP port unreachable takes the upstream out for
        this exchange; either way it is a hard no-reply for its health."""
        self._close(att)
        if isinstance(exc, ConnectionRefusedError):
            self._exclude(att.idx)
            self.fwd.fail(att.addr, "refused")
        else:
            self.fwd.fail(att.addr, f"network: {exc.strerror}")
        self.fwd.health.no_reply(att.server, None, now)
        self.advance(now)

    def _near_miss(self, att: _Attempt, data: bytes) -> bool:
        """A datagram on ``att``'s socket that is not our reply. The socket is connected, so
        it came from the upstream's address and port: a wrong ID or question there is what
        a spoofer who learned the port sends. Past ``nearmiss_max`` of them (PowerDNS
        ``spoof-nearmiss-max``), or at once for our ID with the 0x20 case wrong, the attempt
        is dropped and asked again safely (:meth:`_spoofed`). True when ``att`` is closed."""
        fwd = self.fwd
        if att.question is not self.question and matches(data, att.qid, self.question):
            fwd.fail(att.addr, "case_mismatch")   # our ID, 0x20 case not echoed
            self._spoofed(att, "case", self.loop.time())
            return True
        fwd.fail(att.addr, "unwanted_reply")
        att.misses += 1
        if 0 < fwd.nearmiss_max < att.misses:
            self._spoofed(att, "nearmiss", self.loop.time())
            return True
        return False

    def _spoofed(self, att: _Attempt, why: str, now: float) -> None:
        """Drop ``att`` (its port is known to whoever sends the forgeries) and ask its
        upstream again: the first time on a fresh UDP socket (new port, ID and 0x20 case),
        then over TCP, which an off-path spoofer cannot answer (RFC 5452 §9.2). A reply with
        our ID but the wrong case goes to TCP at once: it is either a lucky forgery or an
        upstream that does not echo case, and TCP settles both."""
        self._close(att)
        self.spoofed += 1
        self.fwd.spoof_suspected(att.addr, self.question, why, att.misses, now)
        if why == "nearmiss" and self.spoofed == 1 and now < self.deadline:
            again = self._open(att.idx, now)
            if again is not None:
                self.attempts.append(again)
                self._disarm()
                self._arm(now)
                return
        if self.tcp is None:
            self._retry_tcp(att, now)

    def _failed(self, att: _Attempt, reply: bytes, now: float) -> None:
        """An error rcode: this upstream is out for this exchange (FORMERR to our OPT first
        gets one more try without it)."""
        rcode = reply[3] & 0x0F
        if rcode == wire.FORMERR and att.packet[11] and self._without_edns(att, now):
            return
        self._exclude(att.idx)
        self.error_reply = reply
        self.fwd.fail(att.addr, f"rcode{rcode}")
        self.advance(now)

    def _without_edns(self, att: _Attempt, now: float) -> bool:
        """FORMERR to a query with our OPT: ask the same upstream once more without it
        (Unbound ``fwd_no_edns``). False when that cannot be sent."""
        self.fwd.fail(att.addr, "rcode1_edns")
        plain = self._open(att.idx, now, edns=False)
        if plain is None:
            return False
        self.attempts.append(plain)
        if self.timer is None and not self.tick:  # after a TCP retry: nothing is timing us
            self._arm(now)
        return True

    def _retry_tcp(self, att: _Attempt, now: float) -> None:
        """Ask ``att``'s upstream over TCP with a fresh ID (TC=1, Unbound ``fwd_tcp_tc``;
        or suspected spoofing).

        The retry gets what is left of the deadline (at most :data:`_TCP_TIMEOUT`), so a TC
        that comes late still ends the exchange by the deadline, answered or not.
        """
        self._disarm()
        left = min(self.deadline - now, _TCP_TIMEOUT)
        if left <= 0:
            self.advance(now)                # out of time: finishes
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
        now = self.loop.time()
        exc = task.exception()
        if exc is not None:
            self.fwd.fail(att.addr, str(exc))
            self.advance(now)
            return
        reply = task.result()
        if (reply[3] & 0x0F) in _RCODE_FAILURES:
            self._failed(att, reply, now)
            return
        self.fwd.preferred = att.idx
        self.finish(reply)

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
