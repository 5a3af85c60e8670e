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


recv: Callable[[int], bytes | None] = _udpsock.recv if COMPILED else _recv_plain
"""One datagram from a socket :meth:`SocketPoller.open` made, or None when none is waiting;
a pending socket error (ICMP port unreachable: ConnectionRefusedError) is raised."""
_close: Callable[[int], None] = _udpsock.close if COMPILED else os.close


class Timed(Protocol):
    """What :class:`FifoTimers` times: ``due`` is the armed time (0.0: disarmed)."""

    due: float

    def expired(self) -> None: ...


class FifoTimers:
    """Timeouts whose due times never decrease, all on one loop timer.

    Why: every upstream attempt needs a timeout (``upstream_timeout`` after its send), and a
    uvloop ``TimerHandle`` per attempt (made, scheduled, cancelled) cost about 7 % of a cache
    miss in user space. Due times that are "now + one fixed length" arrive in order, so a
    deque is enough: :meth:`arm` appends, and the one loop timer fires at the head's time and
    pops what is due. Disarming is lazy: the owner sets ``due = 0.0`` (or re-arms, changing
    it) and the stale entry is dropped when it reaches the head, so a finished item stays
    referenced until its due time (at most ``upstream_timeout``). A due time earlier than the
    tail's (``upstream_timeout`` lowered by a reload) gets a loop timer of its own instead of
    waiting behind later ones.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._queue: deque[tuple[float, Timed]] = deque()
        self._tick: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def arm(self, item: Timed, due: float) -> None:
        """Call ``item.expired()`` at ``due`` unless ``item.due`` changed by then."""
        item.due = due
        queue = self._queue
        if queue and due < queue[-1][0]:
            self.loop.call_at(due, self._fire_one, item, due)
            return
        queue.append((due, item))
        if self._tick is None:
            self._tick = self.loop.call_at(due, self._fire)

    def _fire_one(self, item: Timed, due: float) -> None:
        if item.due == due:
            item.due = 0.0
            item.expired()

    def _fire(self) -> None:
        self._tick = None
        queue, now = self._queue, self.loop.time()
        while queue and queue[0][0] <= now:
            due, item = queue.popleft()
            if item.due == due:
                item.due = 0.0
                try:
                    item.expired()
                except Exception:
                    _log.exception("timer_callback_failed")
        if queue and self._tick is None:
            self._tick = self.loop.call_at(queue[0][0], self._fire)

    def close(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        self._queue.clear()


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
        (also for a host that is not an IP literal) with nothing left open."""
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
