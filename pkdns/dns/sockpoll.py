"""Many short-lived upstream UDP sockets: opened, watched through one epoll set, closed.

RFC 5452 wants a fresh socket (random source port) per upstream query, so every cache miss
opens, watches and closes one. Watching it with ``loop.add_reader`` costs, in uvloop, a poll
handle, two ``epoll_ctl`` calls and two Python-level ``WeakValueDictionary`` lookups that end in
a ``KeyError`` (add and remove) -- about a tenth of a miss's CPU. Here the loop watches only
our own epoll descriptor; each socket costs one ``epoll_ctl(ADD)`` and nothing to remove (the
kernel drops a descriptor from every epoll set when it is closed). One wake-up of the loop
also drains every socket that became ready at once.

The sockets are plain descriptors, not Python socket objects: when the C module
``pkdns.dns._udpsock`` is built (setup.py; Linux), "socket + connect + epoll_ctl + send" is one
call and reads and closes are C calls that keep the GIL (why: see its source). Without it, the
plain-Python equivalents below do the same through the socket and os modules.

Level-triggered, like the loop: a socket that is still readable after its callback is reported
again. A callback may be woken with nothing to read (the descriptor number was closed and
reused within one batch), so callbacks must treat "nothing yet" (:func:`recv` returns None) as
normal. Without ``select.epoll`` (not Linux) it falls back to ``loop.add_reader``.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
from collections import deque
from collections.abc import Callable
from typing import Protocol

from pkdns import log
from pkdns.config import HostPort

try:
    from pkdns.dns import _udpsock
    COMPILED = True
except ImportError:            # not built (no compiler, PKDNS_PURE, not Linux): plain Python
    COMPILED = False

_log = log.get("sockpoll")
_BATCH = 256
_MAX_DATAGRAM = 65535
_EPOLLIN = int(getattr(select, "EPOLLIN", 1))
_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)   # Linux: no extra fcntl per socket
_INET, _INET6 = int(socket.AF_INET), int(socket.AF_INET6)
_UDP = int(socket.SOCK_DGRAM) | _NONBLOCK


def _open_plain(host: str, port: int, packet: bytes) -> int:
    """:func:`_udpsock.open_send` without the epoll part, through the socket module."""
    sock = socket.socket(_INET6 if ":" in host else _INET, _UDP)
    with sock:                                   # closed if connect or send fails
        if not _NONBLOCK:
            sock.setblocking(False)
        sock.connect((host, port))
        sock.send(packet)
        return sock.detach()


def _recv_plain(fd: int) -> bytes | None:
    try:
        return os.read(fd, _MAX_DATAGRAM)        # read(2) on a datagram socket: one datagram
    except BlockingIOError:
        return None


_LETTERS = bytes(0x20 if 0x61 <= c <= 0x7A else 0 for c in range(256))   # a-z -> 0x20


def mix_case_with(question: bytes, rnd: int) -> bytes:
    """:func:`mix_case` with the random bits given (bit k of ``rnd`` is for byte k from the
    end): bit arithmetic on the whole question, the last 4 bytes (qtype, qclass) left alone."""
    flip = int.from_bytes(question.translate(_LETTERS), "big") & rnd & ~0xFFFFFFFF
    if not flip:
        return question
    return (int.from_bytes(question, "big") ^ flip).to_bytes(len(question), "big")


def _mix_case_plain(question: bytes) -> bytes:
    return mix_case_with(question, int.from_bytes(os.urandom(len(question)), "big"))


mix_case: Callable[[bytes], bytes] = _udpsock.mix_case if COMPILED else _mix_case_plain
"""0x20: ``question`` (lowercased wire qname + qtype + qclass) with each letter of the name
in random case, from the kernel CSPRNG: one bit a forged reply must echo per letter. Label
length bytes are never letters (at most 63)."""
recv: Callable[[int], bytes | None] = _udpsock.recv if COMPILED else _recv_plain
"""One datagram from a socket :meth:`SocketPoller.open` made, or None when none is waiting;
a pending socket error (ICMP port unreachable: ConnectionRefusedError) is raised."""
_close: Callable[[int], None] = _udpsock.close if COMPILED else os.close


class Timed(Protocol):
    """What :class:`FifoTimers` times."""

    def expired(self) -> None: ...


class FifoTimers:
    """Timeouts whose due times never decrease, all on one loop timer.

    Why: every upstream attempt needs a timeout (``upstream_timeout`` after its send), and a
    uvloop ``TimerHandle`` per attempt (made, scheduled, cancelled) cost about 7 % of a cache
    miss in user space. Due times that are "now + one fixed length" arrive in order, so a
    queue is enough: :meth:`arm` appends, and the one loop timer fires at the head's time and
    pops what is due. A due time earlier than the tail's (``upstream_timeout`` lowered by a
    reload) gets a loop timer of its own instead of waiting behind later ones.

    Why tokens: :meth:`arm` returns an int and :meth:`disarm` forgets the item at once, while
    the queue keeps only (due time, token) in two deques of plain numbers. Keeping the items
    themselves queued until their due time held every finished exchange for
    ``upstream_timeout`` -- thousands of objects under load that each garbage collection
    had to walk (half the collector's cost per miss).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._dues: deque[float] = deque()
        self._tokens: deque[int] = deque()
        self._armed: dict[int, Timed] = {}
        self._last = 0
        self._tick: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        """How many items are armed."""
        return len(self._armed)

    def arm(self, item: Timed, due: float) -> int:
        """Call ``item.expired()`` at ``due`` unless :meth:`disarm` gets the returned token
        (never 0) first."""
        token = self._last = self._last + 1
        self._armed[token] = item
        dues = self._dues
        if dues and due < dues[-1]:
            self.loop.call_at(due, self._fire_one, token)
            return token
        dues.append(due)
        self._tokens.append(token)
        if self._tick is None:
            self._tick = self.loop.call_at(due, self._fire)
        return token

    def disarm(self, token: int) -> None:
        """Forget the item armed with ``token`` (nothing if it fired or was disarmed)."""
        self._armed.pop(token, None)

    def _fire_one(self, token: int) -> None:
        item = self._armed.pop(token, None)
        if item is not None:
            item.expired()

    def _fire(self) -> None:
        self._tick = None
        dues, tokens, armed, now = self._dues, self._tokens, self._armed, self.loop.time()
        while dues and dues[0] <= now:
            dues.popleft()
            item = armed.pop(tokens.popleft(), None)
            if item is not None:
                try:
                    item.expired()
                except Exception:
                    _log.exception("timer_callback_failed")
        self._rearm()

    def _rearm(self) -> None:
        """The loop timer for the queue's head, unless a callback of :meth:`_fire` (arming
        again) made one. A method of its own on purpose: inside ``_fire`` mypy narrows
        ``self._tick`` to None after the assignment at its top, and the compiled code then
        rejects the TimerHandle that ``expired()`` may have stored there meanwhile."""
        if self._dues and self._tick is None:
            self._tick = self.loop.call_at(self._dues[0], self._fire)

    def close(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        self._dues.clear()
        self._tokens.clear()
        self._armed.clear()


class SocketPoller:
    """Opens upstream sockets and calls back when they are readable; bound to one running loop.

    The sockets it opens are closed by ``release``, or all at once when the loop shuts down
    (one guard task per poller is cancelled then), so an exchange still waiting when the
    daemon or a test stops leaks no descriptor.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.timers = FifoTimers(loop)
        self._watched: dict[int, Callable[[], None]] = {}
        self._epoll: select.epoll | None = None
        self._epfd = -1
        if hasattr(select, "epoll"):
            self._epoll = select.epoll()
            self._epfd = self._epoll.fileno()
            loop.add_reader(self._epfd, self._ready)
        self._guard = loop.create_task(self._hold())

    def open(self, addr: HostPort, packet: bytes, callback: Callable[[], None]) -> int:
        """A new non-blocking UDP socket connected to ``addr`` (so bound to a random port the
        kernel picks), with ``packet`` sent; ``callback()`` runs whenever it is readable (or
        has a pending error) until :meth:`release`. Returns its descriptor. Raises OSError
        with nothing left open. ``addr`` is an IP literal (config and delegations make sure);
        the C path refuses anything else, the socket module would look a name up."""
        if COMPILED and self._epfd >= 0:
            fd = _udpsock.open_send(self._epfd, addr[0], addr[1], packet)
        else:
            fd = _open_plain(addr[0], addr[1], packet)
            try:
                if self._epoll is None:
                    self.loop.add_reader(fd, self._dispatch, fd)
                else:
                    self._epoll.register(fd, _EPOLLIN)
            except OSError:
                os.close(fd)
                raise
        self._watched[fd] = callback
        return fd

    def release(self, fd: int) -> None:
        """Stop watching ``fd`` and close it (nothing for a descriptor not open here)."""
        if self._watched.pop(fd, None) is not None:
            if self._epoll is None:
                self.loop.remove_reader(fd)
            _close(fd)

    def _ready(self) -> None:
        assert self._epoll is not None
        if COMPILED:
            fds = _udpsock.ready(self._epfd)
        else:
            fds = [fd for fd, _events in self._epoll.poll(0, _BATCH)]
        for fd in fds:
            self._dispatch(fd)

    def _dispatch(self, fd: int) -> None:
        callback = self._watched.get(fd)
        if callback is not None:
            try:
                callback()
            except Exception:
                _log.exception("socket_callback_failed")

    async def _hold(self) -> None:
        try:
            await self.loop.create_future()
        finally:
            self.close()

    def close(self) -> None:
        """Close every socket opened here and stop watching (and timing)."""
        self.timers.close()
        for fd in list(self._watched):
            self.release(fd)
        if self._epoll is not None and not self._epoll.closed:
            if not self.loop.is_closed():
                self.loop.remove_reader(self._epfd)
            self._epoll.close()
            self._epfd = -1
        if not self._guard.done() and not self.loop.is_closed():
            self._guard.cancel()
