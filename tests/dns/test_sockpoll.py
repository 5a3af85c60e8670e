"""SocketPoller: the forwarder's per-query sockets, opened, watched and closed (real loopback)."""

from __future__ import annotations

import asyncio
import os
import socket
import weakref

import pytest
import uvloop

from pkdns.dns import sockpoll
from pkdns.dns.sockpoll import FifoTimers, SocketPoller
from tests.support.require import stop


@pytest.fixture(params=["c", "plain"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a socket is opened, read and closed: the C module and the plain-Python
    equivalents (what a machine without a compiler runs). The C one is there in CI
    (test_build checks it is built); elsewhere its run is skipped."""
    if request.param == "c":
        if os.environ.get("PKDNS_PURE"):
            pytest.skip("PKDNS_PURE: the plain-Python build")
        if not sockpoll.COMPILED:
            stop("pkdns.dns._udpsock is not built here (setup.py)")
    elif sockpoll.COMPILED:
        monkeypatch.setattr(sockpoll, "COMPILED", False)
        monkeypatch.setattr(sockpoll, "recv", sockpoll._recv_plain)
        monkeypatch.setattr(sockpoll, "_close", os.close)
    return str(request.param)


def server() -> socket.socket:
    """An 'upstream' on loopback that the test answers by hand."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    srv.settimeout(2)
    return srv


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


async def wait_for(cond: object, timeout: float = 1.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if callable(cond) and cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met")


async def test_open_sends_from_a_fresh_port_and_calls_back_on_the_reply(mode: str) -> None:
    poller = SocketPoller(asyncio.get_running_loop())
    got: list[bytes | None] = []
    with server() as srv:
        fd = poller.open(srv.getsockname(), b"ping", lambda: got.append(sockpoll.recv(fd)))
        data, client = srv.recvfrom(100)
        assert data == b"ping" and client[1] != srv.getsockname()[1]
        srv.sendto(b"pong", client)
        await wait_for(lambda: got == [b"pong"])
        assert sockpoll.recv(fd) is None                 # nothing more: None, not an error
        poller.release(fd)
        assert not is_open(fd)
        poller.release(fd)                               # twice: nothing (no one else's fd)
    poller.close()


async def test_only_the_address_asked_can_answer(mode: str) -> None:
    """A connected UDP socket: the kernel drops datagrams from anyone else (RFC 5452 §9.2)."""
    poller = SocketPoller(asyncio.get_running_loop())
    got: list[bytes | None] = []
    with server() as srv, server() as forger:
        fd = poller.open(srv.getsockname(), b"q", lambda: got.append(sockpoll.recv(fd)))
        _, client = srv.recvfrom(100)
        forger.sendto(b"forged", client)
        srv.sendto(b"real", client)
        await wait_for(lambda: b"real" in got)
        assert got == [b"real"]
    poller.close()


async def test_icmp_port_unreachable_is_raised_by_recv(mode: str) -> None:
    poller = SocketPoller(asyncio.get_running_loop())
    with server() as srv:
        addr = srv.getsockname()
    errors: list[type[BaseException]] = []

    def readable() -> None:
        try:
            sockpoll.recv(fd)
        except OSError as exc:
            errors.append(type(exc))

    fd = poller.open(addr, b"nobody home", readable)
    await wait_for(lambda: bool(errors))
    assert errors[0] is ConnectionRefusedError
    poller.close()


async def test_open_fails_cleanly(mode: str) -> None:
    poller = SocketPoller(asyncio.get_running_loop())
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError):
        poller.open(("127.0.0.1", 53), b"x" * 70000, lambda: None)    # too big for UDP
    if mode == "c":                    # the socket module would ask the resolver instead
        with pytest.raises(OSError):
            poller.open(("not-an-ip", 53), b"x", lambda: None)
    with pytest.raises(OSError):
        poller.open(("::1%no-such-interface0", 53), b"x", lambda: None)
    assert len(os.listdir("/proc/self/fd")) == before
    poller.close()


async def test_a_reused_descriptor_number_is_watched_afresh(mode: str) -> None:
    poller = SocketPoller(asyncio.get_running_loop())
    with server() as srv:
        first = poller.open(srv.getsockname(), b"1", lambda: None)
        poller.release(first)
        got: list[bytes | None] = []
        second = poller.open(srv.getsockname(), b"2", lambda: got.append(sockpoll.recv(second)))
        assert second == first             # the kernel hands out the lowest free number again
        srv.recvfrom(10)
        data, client = srv.recvfrom(10)
        assert data == b"2"
        srv.sendto(b"two", client)
        await wait_for(lambda: got == [b"two"])
    poller.close()
    assert not is_open(second)


def test_loop_shutdown_closes_open_sockets(mode: str) -> None:
    with server() as srv:
        async def leave_it_open() -> int:
            poller = SocketPoller(asyncio.get_running_loop())
            return poller.open(srv.getsockname(), b"x", lambda: None)

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            fd = runner.run(leave_it_open())
            assert is_open(fd)
        assert not is_open(fd)


async def test_many_ready_sockets_in_one_wakeup(mode: str) -> None:
    poller = SocketPoller(asyncio.get_running_loop())
    got: list[bytes | None] = []
    with server() as srv:
        fds = [poller.open(srv.getsockname(), str(i).encode(),
                           lambda i=i: got.append(sockpoll.recv(fds[i])))  # type: ignore[misc]
               for i in range(50)]
        for _ in range(50):
            data, client = srv.recvfrom(10)
            srv.sendto(data, client)
        await wait_for(lambda: len(got) == 50)
    assert sorted(int(g or b"") for g in got) == list(range(50))
    poller.close()
    assert not any(is_open(fd) for fd in fds)


class Item:
    """A FifoTimers client that records when it expired (loop time)."""

    def __init__(self, log: list[tuple[str, float]], name: str,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.log, self.name, self.loop = log, name, loop

    def expired(self) -> None:
        self.log.append((self.name, self.loop.time()))


async def test_fifo_timers_fire_in_order_and_skip_disarmed_and_rearmed() -> None:
    loop = asyncio.get_running_loop()
    timers = FifoTimers(loop)
    fired: list[tuple[str, float]] = []
    a, b, c, d = (Item(fired, n, loop) for n in "abcd")
    t0 = loop.time()
    timers.arm(a, t0 + 0.05)
    b_token = timers.arm(b, t0 + 0.10)
    c_token = timers.arm(c, t0 + 0.15)
    timers.disarm(b_token)               # disarmed: dropped at once, never fired
    timers.disarm(c_token)               # re-armed: fires once, at the new time
    timers.arm(c, t0 + 0.25)
    timers.arm(d, t0 + 0.20)
    assert len(timers) == 3
    try:
        await wait_for(lambda: len(fired) == 3)
        await asyncio.sleep(0.1)
        assert [n for n, _ in fired] == ["a", "d", "c"]
        times = dict(fired)
        assert times["a"] >= t0 + 0.05 and times["d"] >= t0 + 0.20 and times["c"] >= t0 + 0.25
        assert times["c"] < t0 + 0.25 + 0.2          # not late by another timeout
        assert len(timers) == 0
    finally:
        timers.close()


async def test_fifo_timers_an_earlier_due_time_is_not_kept_waiting() -> None:
    """upstream_timeout lowered by a reload: a shorter timeout after longer ones."""
    loop = asyncio.get_running_loop()
    timers = FifoTimers(loop)
    fired: list[tuple[str, float]] = []
    slow, quick = Item(fired, "slow", loop), Item(fired, "quick", loop)
    t0 = loop.time()
    timers.arm(slow, t0 + 0.5)
    timers.arm(quick, t0 + 0.05)
    try:
        await wait_for(lambda: len(fired) == 1)
        assert fired[0][0] == "quick" and fired[0][1] < t0 + 0.4
    finally:
        timers.close()
    await asyncio.sleep(0.6)
    assert [n for n, _ in fired] == ["quick"]        # close() dropped the pending one


async def test_fifo_timers_keep_no_reference_to_a_disarmed_item() -> None:
    """A finished exchange must not stay alive until its due time (garbage-collector load)."""
    loop = asyncio.get_running_loop()
    timers = FifoTimers(loop)
    item = Item([], "x", loop)
    gone = weakref.ref(item)
    token = timers.arm(item, loop.time() + 30)
    timers.disarm(token)
    del item
    assert gone() is None and len(timers) == 0
    timers.close()


async def test_fifo_timers_an_expired_callback_may_arm_again() -> None:
    """What an attempt timeout does (the next attempt arms a new timeout). Compiled, this once
    raised TypeError inside ``_fire`` (mypy had narrowed its loop timer attribute to None)."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    timers = FifoTimers(loop)
    fired: list[tuple[str, float]] = []

    class Rearming(Item):
        def expired(self) -> None:
            super().expired()
            if [n for n, _ in fired].count("r") < 3:
                timers.arm(self, loop.time() + 0.02)

    t0 = loop.time()
    timers.arm(Rearming(fired, "r", loop), t0 + 0.02)
    timers.arm(Item(fired, "later", loop), t0 + 0.03)
    try:
        await wait_for(lambda: len(fired) == 4)
    finally:
        timers.close()
        loop.set_exception_handler(None)
    assert [n for n, _ in fired].count("r") == 3 and not errors
