"""What an upstream exchange (:mod:`pkdns.dns.exchange`) asks its driver to do, and the
reply-matching rule both use.

Split from the exchange's state machine along the sans-IO seam: these are the values that
cross it. :class:`Attempt` is an action and the attempt's own state at once (the driver keys
its socket by the object). Pure, no I/O; compiled with the hot path.
"""

from __future__ import annotations

from typing import Final

from pkdns.config import HostPort
from pkdns.dns.health import Server

# Attempt.kind: why it was sent, which decides what a failed send does (Final: compiled
# code reads them as constants, not from the module's dict).
FIRST: Final = 0                # an ordinary attempt
AGAIN: Final = 1                # a fresh socket after near misses
PLAIN: Final = 2                # without OPT, after FORMERR


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


class Attempt:
    """Action: send ``packet`` to upstream ``idx`` (``addr``) on a fresh connected UDP socket.

    Also the attempt's state: ``question`` is what was sent (with 0x20 case); ``server`` and
    ``mark`` tell whether the upstream answered anything else while this one waited;
    ``misses`` counts near misses on its socket; ``live`` is False once it is closed. The
    driver keys its socket by the object; the exchange never sees a descriptor.
    """

    __slots__ = ("idx", "addr", "qid", "packet", "question", "server", "mark", "misses",
                 "kind", "live")

    def __init__(self, idx: int, addr: HostPort, qid: int, packet: bytes, question: bytes,
                 server: Server, kind: int) -> None:
        self.idx, self.addr, self.qid, self.packet = idx, addr, qid, packet
        self.question, self.server, self.mark = question, server, server.answers
        self.misses = 0
        self.kind = kind
        self.live = True


class Close:
    """Action: close ``attempt``'s socket (the exchange goes on with the others)."""

    __slots__ = ("attempt",)

    def __init__(self, attempt: Attempt) -> None:
        self.attempt = attempt


class Timer:
    """Action: call :meth:`Exchange.timer` at ``at`` instead of any time armed before (0: no
    timer). ``regular``: ``at`` is "now + attempt_timeout", so due times of such timers never
    decrease (the driver queues them, :class:`~pkdns.dns.sockpoll.FifoTimers`)."""

    __slots__ = ("at", "regular")

    def __init__(self, at: float, regular: bool) -> None:
        self.at, self.regular = at, regular


class Tcp:
    """Action: ask upstream ``idx`` (``addr``) over a new TCP connection (``packet``, ID
    ``qid``, expecting ``question``) within ``timeout`` seconds; report with
    :meth:`Exchange.tcp_done`."""

    __slots__ = ("idx", "addr", "packet", "qid", "question", "timeout")

    def __init__(self, idx: int, addr: HostPort, packet: bytes, qid: int, question: bytes,
                 timeout: float) -> None:
        self.idx, self.addr, self.packet, self.qid = idx, addr, packet, qid
        self.question, self.timeout = question, timeout


class Done:
    """Action: the exchange is over; close every socket, drop the timer and any TCP retry,
    and hand ``reply`` (None: no usable reply) to the asker."""

    __slots__ = ("reply",)

    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply


Action = Attempt | Close | Timer | Tcp | Done


__all__ = ["AGAIN", "FIRST", "PLAIN", "Action", "Attempt", "Close", "Done", "Tcp", "Timer",
           "matches"]
