"""One upstream exchange as a pure state machine: ``now`` and events in, actions out.

Like :mod:`pkdns.dht.lookup` (and aioquic's ``QuicConnection``), :class:`Exchange` never sends,
reads or waits. Its driver (:mod:`pkdns.dns.driver`) feeds it events -- :meth:`~Exchange.start`,
a datagram on an attempt's socket (:meth:`~Exchange.received`), a socket error or failed send
(:meth:`~Exchange.broken`, :meth:`~Exchange.unsent`), the timer (:meth:`~Exchange.timer`), the
TCP retry's result (:meth:`~Exchange.tcp_done`) -- each with ``now``, and carries out the
actions returned (:mod:`pkdns.dns.actions`): send an :class:`Attempt` on a fresh socket,
:class:`Close` one, arm the :class:`Timer`, retry over :class:`Tcp`, :class:`Done`. Health
(:mod:`pkdns.dns.health`), the query ID and 0x20 case source and the counters are injected
through :class:`~pkdns.dns.upstreams.Policy`. So every rule below is tested by calling these methods
with a made-up ``now`` (tests/dns/test_exchange.py), with no socket and no sleep.

The rules:

* **RFC 5452 hygiene.** Every attempt is a fresh connected UDP socket (so a fresh random source
  port) and a fresh random 16-bit ID from the system CSPRNG (§9.1). The socket is connected, so
  only datagrams from the upstream's address and port arrive; a reply is accepted only with our
  ID, QR=1 and our exact question (:func:`matches`). Anything else is a near miss, counted
  (``unwanted_reply``) and ignored while the attempt keeps waiting: forged datagrams never mark
  an upstream down (PowerDNS advisory 2023-02).
* **Retransmit and failover.** Upstreams are tried in order from the last one that answered
  (:meth:`~pkdns.dns.upstreams.Policy.pick`). Every ``attempt_timeout`` with no reply a new
  attempt (fresh port and ID, next upstream) starts, while earlier sockets keep listening until
  the deadline, so a slow upstream's late reply is still taken (Unbound ``discard-timeout``
  semantics). ICMP port unreachable (ECONNREFUSED on the connected socket) or a send that
  fails takes that upstream out for this exchange at once and moves on.
* **Error rcodes.** SERVFAIL, REFUSED, NOTIMP or FORMERR take that upstream out for this
  exchange and move on; when every upstream answered that way, the last such reply is the
  result. A FORMERR to a query with our OPT is asked once more of the same upstream without it
  (RFC 6891 §7; Unbound ``fwd_no_edns``).
* **Truncation.** A TC=1 reply is asked again over TCP with a fresh ID (RFC 7766 §5; Unbound
  ``fwd_tcp_tc``), given what is left of the deadline (at most :data:`TCP_TIMEOUT`), so a late
  TC still ends the exchange by its deadline.
* **The end.** The deadline, or running out of upstreams, ends the exchange: with a usable
  reply, the last error-rcode reply when every upstream answered with one, or None.
* **Health.** An attempt's silence counts against its upstream only when the upstream answered
  nothing at all since the attempt was sent (:meth:`~pkdns.dns.health.Server.answered_since`):
  a slow name is not a dead server. A down upstream is skipped except for its probes; with no
  usable upstream the exchange fails at once unless earlier attempts may still answer.
* **Spoofing with the port known** (an on-path observer, a SAD DNS-style side channel). More
  than ``nearmiss_max`` near misses on one attempt's socket (PowerDNS ``spoof-nearmiss-max``)
  drop that attempt: it is asked again the first time on a fresh socket (new port, ID and
  case), then over TCP, which an off-path spoofer cannot answer (RFC 5452 §9.2).
* **0x20** (draft-vixie-dnsext-dns0x20). The name's letters go out in random case and the reply
  must echo them exactly: one more bit a forger must guess per letter. Our ID with the case not
  echoed goes to TCP at once (a lucky forgery, or an upstream that does not echo case: TCP
  settles both). A question sent all lowercase may come back in any case (the upstream may
  apply its own 0x20). The client still sees its own case: its answer is built from its own
  question (:func:`pkdns.dns.cache.render`).
"""

from __future__ import annotations

import struct
from collections.abc import Set as AbstractSet
from typing import Final

from pkdns.config import HostPort
from pkdns.dns import wire
from pkdns.dns.actions import AGAIN, FIRST, PLAIN, Action, Attempt, Close, Done, Tcp, Timer, matches
from pkdns.dns.upstreams import Policy

_NONE_OUT: Final[frozenset[int]] = frozenset()   # shared until an upstream is taken out
_RCODE_FAILURES: Final = (wire.FORMERR, wire.SERVFAIL, wire.NOTIMP, wire.REFUSED)
TCP_TIMEOUT: Final = 2.0
"""The longest a TCP retry may take (less when the deadline is nearer)."""


class Exchange:
    """One question's exchange with the upstreams of ``policy``; the rules are the module's.

    ``question`` is the lowercased wire qname + qtype + qclass; ``deadline`` is in the same
    time as every ``now`` passed in. ``packet``, when given, is a caller's complete query sent
    as it is (its ID, flags and EDNS; NS delegation), instead of one built from ``question``.

    Every event method returns the actions to carry out, in order (:data:`Action`). The list
    is the exchange's own and is reused: the driver empties it (:meth:`taken`) once done with
    it, and an event it feeds meanwhile (a send that failed) appends to it.
    """

    __slots__ = ("pol", "question", "do", "cd", "deadline", "packet", "attempts", "out",
                 "error_reply", "tries", "tcp", "done", "spoofed", "armed", "actions")

    def __init__(self, policy: Policy, question: bytes, do: bool, cd: bool, deadline: float,
                 packet: bytes = b"") -> None:
        self.pol = policy
        self.question, self.do, self.cd = question, do, cd
        self.deadline, self.packet = deadline, packet
        self.attempts: list[Attempt] = []          # the live ones, oldest first
        self.out: AbstractSet[int] = _NONE_OUT     # upstreams refused or failed with an rcode
        self.error_reply: bytes | None = None
        self.tries = 0
        self.tcp = False                           # a TCP retry is under way
        self.done = False
        self.spoofed = 0                           # attempts dropped for near misses
        self.armed = False                         # a timer is armed
        self.actions: list[Action] = []

    # ------------------------------------------------------------------ events

    def start(self, now: float) -> list[Action]:
        """Begin: the first attempt and its timer (or Done at once: no usable upstream)."""
        self._advance(now)
        return self.actions

    def received(self, att: Attempt, data: bytes, now: float) -> list[Action]:
        """A datagram arrived on ``att``'s socket (the socket is connected: it came from the
        upstream's address and port). Our reply, or a near miss."""
        if self.done or not att.live:
            return self.actions
        if matches(data, att.qid, att.question):
            srv = att.server
            srv.answers += 1
            if srv.silent:
                self.pol.health.replied(srv)
            if not data[2] & 0x02 and (data[3] & 0x0F) not in _RCODE_FAILURES:
                self.pol.preferred = att.idx
                self._finish(data)               # closes every socket, this one too
                return self.actions
            self._close(att)
            if data[2] & 0x02:
                if not self.tcp:                 # else a TCP retry is already under way
                    self._retry_tcp(att, now)
            else:
                self._failed(att.idx, att.addr, att.packet, data, now)
        else:
            self._near_miss(att, data, now)
        return self.actions

    def broken(self, att: Attempt, refused: bool, reason: str, now: float) -> list[Action]:
        """``att``'s socket reported an error (``reason``, e.g. "network: ..."). ICMP port
        unreachable (``refused``) takes the upstream out for this exchange; either way it is
        a hard no-reply for the upstream's health."""
        if self.done or not att.live:
            return self.actions
        self._close(att)
        if refused:
            self._exclude(att.idx)
            self.pol.report.fail(att.addr, "refused")
        else:
            self.pol.report.fail(att.addr, reason)
        self.pol.health.no_reply(att.server, None, now)
        self._advance(now)
        return self.actions

    def unsent(self, att: Attempt, reason: str, now: float) -> list[Action]:
        """The driver could not open or send ``att`` (``reason``: "network: ..."): a hard
        no-reply. An ordinary attempt takes its upstream out and moves on; a retry on a fresh
        socket after near misses goes to TCP instead; a retry without OPT ends that upstream
        with the FORMERR it answered."""
        if self.done or not att.live:
            return self.actions
        self._close(att)
        self.pol.report.fail(att.addr, reason)
        self.pol.health.no_reply(att.server, None, now)
        if att.kind == AGAIN:
            if not self.tcp:
                self._retry_tcp(att, now)
            return self.actions
        if att.kind == PLAIN:                    # the FORMERR stands
            self.pol.report.fail(att.addr, "rcode1")
        self._exclude(att.idx)
        self._advance(now)
        return self.actions

    def timer(self, now: float) -> list[Action]:
        """The armed timer fired (``now`` is at least the time it was armed for): the latest
        attempt stayed silent; start the next one, or end at the deadline."""
        self.armed = False
        if self.done:
            return self.actions
        if self.attempts:
            att = self.attempts[-1]
            if not att.server.answered_since(att.mark):    # else the name is slow, not it
                self.pol.health.no_reply(att.server, self.question, now)
        if not self.tcp:
            self._advance(now)
        return self.actions

    def tcp_done(self, tcp: Tcp, reply: bytes | None, reason: str, now: float) -> list[Action]:
        """The :class:`Tcp` retry ended: ``reply`` (one that matches), or None and why
        (``reason``, counted as a failure of that upstream)."""
        self.tcp = False
        if self.done:
            return self.actions
        if reply is None:
            self.pol.report.fail(tcp.addr, reason)
            self._advance(now)
        elif (reply[3] & 0x0F) in _RCODE_FAILURES:
            self._failed(tcp.idx, tcp.addr, tcp.packet, reply, now)
        else:
            self.pol.preferred = tcp.idx
            self._finish(reply)
        return self.actions

    def cancel(self) -> list[Action]:
        """Stop (the asker went away): Done with no reply."""
        self._finish(None)
        return self.actions

    def taken(self) -> None:
        """The driver carried out every action returned so far."""
        if self.actions:
            self.actions = []          # cheaper than clear() once compiled

    # --------------------------------------------------------------- the rules

    def _advance(self, now: float) -> None:
        """Start the next attempt, or finish when out of upstreams or time."""
        pol = self.pol
        n = len(pol.upstreams)
        while len(self.out) < n and now < self.deadline:
            idx = pol.pick(self.tries, self.out, self.question, now)
            if idx < 0:                          # every upstream left is down
                if self.attempts:                # earlier ones may still answer: keep them
                    self._timer(self.deadline, False)
                    return
                break
            self.tries += 1
            self._send(idx, FIRST, True)
            self._arm(now)
            return
        self._finish(self.error_reply if len(self.out) >= n else None)

    def _send(self, idx: int, kind: int, edns: bool) -> None:
        pol = self.pol
        addr = pol.upstreams[idx]
        if self.packet:                          # the caller's own query
            packet, question = self.packet, self.question
            qid = (packet[0] << 8) | packet[1]
            if self.tries > 1 or kind != FIRST:
                qid = pol.entropy.qid()
                packet = struct.pack(">H", qid) + packet[2:]
        else:
            qid = pol.entropy.qid()
            question = pol.entropy.case(self.question) if pol.use_0x20 else self.question
            packet = wire.build_query_for(qid, question, self.do, self.cd, edns)
        att = Attempt(idx, addr, qid, packet, question, pol.servers[idx], kind)
        self.attempts.append(att)
        self.actions.append(att)

    def _arm(self, now: float) -> None:
        """The timer for the next attempt, or the deadline when that comes first."""
        due = now + self.pol.attempt_timeout
        if due <= self.deadline:
            self._timer(due, True)
        else:
            self._timer(self.deadline, False)

    def _timer(self, at: float, regular: bool) -> None:
        self.armed = at > 0
        self.actions.append(Timer(at, regular))

    def _exclude(self, idx: int) -> None:
        """Take upstream ``idx`` out for this exchange (the set is made on the first one)."""
        out = self.out
        if isinstance(out, set):
            out.add(idx)
        else:
            self.out = {idx}

    def _close(self, att: Attempt) -> None:
        att.live = False
        self.attempts.remove(att)
        self.actions.append(Close(att))

    def _near_miss(self, att: Attempt, data: bytes, now: float) -> None:
        """A datagram on ``att``'s socket that is not our reply: from the upstream's address
        and port, a wrong ID or question there is what a spoofer who learned the port sends.
        Our ID with the 0x20 case not echoed drops the attempt at once; otherwise past
        ``nearmiss_max`` of them."""
        report = self.pol.report
        if att.question is not self.question and matches(data, att.qid, self.question):
            report.fail(att.addr, "case_mismatch")
            self._spoofed(att, "case", now)
            return
        report.fail(att.addr, "unwanted_reply")
        att.misses += 1
        if 0 < self.pol.nearmiss_max < att.misses:
            self._spoofed(att, "nearmiss", now)

    def _spoofed(self, att: Attempt, why: str, now: float) -> None:
        """Drop ``att`` (whoever sends the forgeries knows its port) and ask its upstream
        again: after near misses the first time on a fresh UDP socket, else over TCP."""
        self._close(att)
        self.spoofed += 1
        self.pol.report.spoof_suspected(att.addr, self.question, why, att.misses, now)
        if (why == "nearmiss" and self.spoofed == 1 and now < self.deadline
                and self.pol.fresh_udp):
            self._send(att.idx, AGAIN, True)
            self._arm(now)
            return
        if not self.tcp:
            self._retry_tcp(att, now)

    def _failed(self, idx: int, addr: HostPort, sent: bytes, reply: bytes, now: float) -> None:
        """An error rcode from upstream ``idx`` to the query ``sent`` (over UDP or TCP):
        FORMERR to our OPT first gets one more try without it, over UDP."""
        if ((reply[3] & 0x0F) == wire.FORMERR and sent[11] and self.pol.edns_fallback
                and not self.packet):
            self.pol.report.fail(addr, "rcode1_edns")
            self.error_reply = reply             # the result if this upstream ends out
            self._send(idx, PLAIN, False)
            if not self.armed:                   # after a TCP retry: nothing is timing us
                self._arm(now)
            return
        self._rcode(idx, addr, reply, now)

    def _rcode(self, idx: int, addr: HostPort, reply: bytes, now: float) -> None:
        """Upstream ``idx`` is out for this exchange; its reply is the result if all are."""
        self._exclude(idx)
        self.error_reply = reply
        self.pol.report.fail(addr, f"rcode{reply[3] & 0x0F}")
        self._advance(now)

    def _retry_tcp(self, att: Attempt, now: float) -> None:
        """Ask ``att``'s upstream over TCP with a fresh ID, within what is left of the
        deadline (at most :data:`TCP_TIMEOUT`); no timer meanwhile."""
        left = min(self.deadline - now, TCP_TIMEOUT)
        if left <= 0:
            self._advance(now)                   # out of time: finishes
            return
        self.tcp = True
        self._timer(0.0, False)
        qid = self.pol.entropy.qid()
        self.actions.append(Tcp(att.idx, att.addr, struct.pack(">H", qid) + att.packet[2:], qid,
                                self.question, left))

    def _finish(self, reply: bytes | None) -> None:
        if self.done:
            return
        self.done = True
        self.armed = False
        for att in self.attempts:
            att.live = False
        self.attempts.clear()
        self.actions.append(Done(reply))
