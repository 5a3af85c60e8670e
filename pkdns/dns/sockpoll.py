"""Readiness for many short-lived upstream sockets through one epoll set.

RFC 5452 wants a fresh socket (random source port) per upstream query, so every cache miss
opens, watches and closes one. Watching it with ``loop.add_reader`` costs, in uvloop, a poll
handle, two ``epoll_ctl`` calls and two Python-level ``WeakValueDictionary`` lookups that end in
a ``KeyError`` (add and remove) -- about a tenth of a miss's CPU. Here the loop watches only
our own epoll descriptor; each socket costs one ``epoll_ctl(ADD)`` and nothing to remove (the
kernel drops a descriptor from every epoll set when it is closed). One wake-up of the loop
also drains every socket that became ready at once.

Level-triggered, like the loop: a socket that is still readable after its callback is reported
again. A callback may be woken with nothing to read (the descriptor number was closed and
reused within one batch), so callbacks must treat EAGAIN as "nothing yet". Without
``select.epoll`` (not Linux) it falls back to ``loop.add_reader``.
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import Callable

from pkdns import log

_log = log.get("sockpoll")
_BATCH = 256


class SocketPoller:
    """``watch(sock, callback)`` until ``release(sock)``; bound to one running event loop.

    The sockets it watches are closed by ``release``, or all at once when the loop shuts down
    (one guard task per poller is cancelled then), so an exchange still waiting when the
    daemon or a test stops leaks no descriptor.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._watched: dict[int, tuple[socket.SocketType, Callable[[], None]]] = {}
        self._epoll: select.epoll | None = None
        if hasattr(select, "epoll"):
            self._epoll = select.epoll()
            loop.add_reader(self._epoll.fileno(), self._ready)
        self._guard = loop.create_task(self._hold())

    def watch(self, sock: socket.SocketType, callback: Callable[[], None]) -> None:
        """Call ``callback()`` whenever ``sock`` is readable (or has a pending error)."""
        fd = sock.fileno()
        if self._epoll is None:
            self.loop.add_reader(fd, callback)
        else:
            try:
                self._epoll.register(fd, select.EPOLLIN)
            except FileExistsError:
                self._epoll.modify(fd, select.EPOLLIN)
        self._watched[fd] = (sock, callback)

    def release(self, sock: socket.SocketType) -> None:
        """Stop watching ``sock`` and close it."""
        fd = sock.fileno()
        if fd >= 0 and self._watched.pop(fd, None) is not None and self._epoll is None:
            self.loop.remove_reader(fd)
        sock.close()

    def _ready(self) -> None:
        assert self._epoll is not None
        watched = self._watched
        for fd, _events in self._epoll.poll(0, _BATCH):
            found = watched.get(fd)
            if found is not None:
                try:
                    found[1]()
                except Exception:
                    _log.exception("socket_callback_failed")

    async def _hold(self) -> None:
        try:
            await self.loop.create_future()
        finally:
            self.close()

    def close(self) -> None:
        """Close every watched socket and stop watching."""
        for sock, _ in list(self._watched.values()):
            self.release(sock)
        if self._epoll is not None and not self._epoll.closed:
            if not self.loop.is_closed():
                self.loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
        if not self._guard.done() and not self.loop.is_closed():
            self._guard.cancel()
