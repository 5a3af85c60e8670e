"""systemd integration without libsystemd: readiness notification and socket activation.

Notification (sd_notify(3)): systemd passes ``NOTIFY_SOCKET``, a path to a unix datagram socket
(or, with a leading ``@``, a name in the abstract namespace). We send newline-separated
``KEY=VALUE`` assignments to it: ``READY=1`` once the listeners are up (``Type=notify``),
``RELOADING=1`` during SIGHUP, ``STOPPING=1`` when draining, ``STATUS=...`` free text shown by
``systemctl status`` and ``WATCHDOG=1`` keep-alives when ``WatchdogSec=`` is set. Without
``NOTIFY_SOCKET`` every call is a no-op, so the daemon runs the same outside systemd.

Socket activation (sd_listen_fds(3)): when ``LISTEN_PID`` equals our pid, file descriptors
``3 .. 3+LISTEN_FDS-1`` are already-bound sockets handed over by a ``.socket`` unit. We classify
them by type (SOCK_DGRAM -> DNS over UDP, SOCK_STREAM -> DNS over TCP) and unset the variables
so child processes do not inherit them.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START


def _address(value: str) -> str | bytes:
    """``NOTIFY_SOCKET`` to a sockaddr: ``@name`` is the abstract namespace (leading NUL)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


class Notifier:
    """Sends sd_notify messages; silently does nothing when not run by systemd."""

    def __init__(self, env: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._addr = _address(env["NOTIFY_SOCKET"]) if env.get("NOTIFY_SOCKET") else None
        self.watchdog_usec = _watchdog_usec(env)

    @property
    def enabled(self) -> bool:
        """True when systemd (or a test) gave us a notification socket."""
        return self._addr is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` lines (keys upper-cased); False if not sent."""
        if self._addr is None:
            return False
        payload = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto(payload, self._addr)
            except OSError:
                # systemd went away or the socket is gone: readiness is best effort.
                return False
        return True

    def ready(self, status: str = "") -> bool:
        """Listeners are up: ``Type=notify`` start-up is complete."""
        return self.notify(ready=1, status=status) if status else self.notify(ready=1)

    def reloading(self) -> bool:
        """SIGHUP reload started; finish it with :meth:`ready` (systemd.service(5))."""
        return self.notify(reloading=1, monotonic_usec=time.monotonic_ns() // 1000)

    def stopping(self, status: str = "draining") -> bool:
        """Shutdown started."""
        return self.notify(stopping=1, status=status)

    def status(self, text: str) -> bool:
        """Free-text status line for ``systemctl status``."""
        return self.notify(status=text)

    def watchdog(self) -> bool:
        """Keep-alive for ``WatchdogSec=``."""
        return self.notify(watchdog=1)

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between keep-alives (half the watchdog timeout), or None when disabled."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2e6


def _watchdog_usec(env: MutableMapping[str, str]) -> int | None:
    """``WATCHDOG_USEC`` when it is meant for this process (``WATCHDOG_PID`` unset or ours)."""
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec)


@dataclass
class ActivatedSockets:
    """Sockets passed by systemd, split by what the DNS front end does with them."""

    udp: list[socket.socket] = field(default_factory=list)
    tcp: list[socket.socket] = field(default_factory=list)
    names: list[str] = field(default_factory=list)   # LISTEN_FDNAMES, informational

    def __bool__(self) -> bool:
        return bool(self.udp or self.tcp)

    def close(self) -> None:
        for sock in [*self.udp, *self.tcp]:
            sock.close()


def listen_fds(env: MutableMapping[str, str] | None = None, unset: bool = True) -> ActivatedSockets:
    """The sockets systemd passed us (empty when not socket-activated).

    Args:
        env: the environment (``os.environ`` by default).
        unset: remove ``LISTEN_*`` so children do not think the sockets are theirs.
    """
    env = os.environ if env is None else env
    pid, count = env.get("LISTEN_PID", ""), env.get("LISTEN_FDS", "")
    out = ActivatedSockets(names=[n for n in env.get("LISTEN_FDNAMES", "").split(":") if n])
    if unset:
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(key, None)
    if not (pid.isdigit() and int(pid) == os.getpid() and count.isdigit()):
        return ActivatedSockets()
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + int(count)):
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        if sock.type == socket.SOCK_DGRAM:
            out.udp.append(sock)
        elif sock.type == socket.SOCK_STREAM:
            out.tcp.append(sock)
        else:
            sock.close()
    return out
