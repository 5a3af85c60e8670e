"""SocketPoller: one epoll set for the forwarder's per-query sockets (real loopback sockets)."""

from __future__ import annotations

import asyncio
import socket

import uvloop

from pkdns.dns.sockpoll import FifoTimers, SocketPoller


def udp_pair() -> tuple[socket.socket, socket.socket]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname())
    return rx, tx


async def wait_for(cond: object, timeout: float = 1.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if callable(cond) and cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met")


async def test_callbacks_on_readable_and_release_closes() -> None:
    poller = SocketPoller(asyncio.get_running_loop())
    rx, tx = udp_pair()
    got: list[bytes] = []
    poller.watch(rx, lambda: got.append(rx.recv(100)))
    with tx:
        tx.send(b"one")
        await wait_for(lambda: got == [b"one"])
        poller.release(rx)
        assert rx.fileno() == -1
        poller.close()


async def test_a_reused_descriptor_number_is_watched_afresh() -> None:
    poller = SocketPoller(asyncio.get_running_loop())
    first, tx1 = udp_pair()
    fd = first.fileno()
    poller.watch(first, lambda: None)
    poller.release(first)
    tx1.close()
    second, tx2 = udp_pair()          # the kernel hands out the lowest free number again
    assert second.fileno() == fd
    got: list[bytes] = []
    poller.watch(second, lambda: got.append(second.recv(100)))
    with tx2:
        tx2.send(b"two")
        await wait_for(lambda: got == [b"two"])
    poller.close()
    assert second.fileno() == -1


def test_loop_shutdown_closes_watched_sockets() -> None:
    rx, tx = udp_pair()

    async def leave_it_watched() -> SocketPoller:
        poller = SocketPoller(asyncio.get_running_loop())
        poller.watch(rx, lambda: None)
        return poller

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(leave_it_watched())
        assert rx.fileno() >= 0
    tx.close()
    assert rx.fileno() == -1


async def test_many_ready_sockets_in_one_wakeup() -> None:
    poller = SocketPoller(asyncio.get_running_loop())
    pairs = [udp_pair() for _ in range(50)]
    got: list[bytes] = []
    for rx, _ in pairs:
        poller.watch(rx, lambda rx=rx: got.append(rx.recv(100)))   # type: ignore[misc]
    for i, (_, tx) in enumerate(pairs):
        tx.send(str(i).encode())
    await wait_for(lambda: len(got) == 50)
    assert sorted(int(g) for g in got) == list(range(50))
    for _, tx in pairs:
        tx.close()
    poller.close()
    assert all(rx.fileno() == -1 for rx, _ in pairs)


class Item:
    """A FifoTimers client that records when it expired (loop time)."""

    def __init__(self, log: list[tuple[str, float]], name: str,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.due = 0.0
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
    timers.arm(b, t0 + 0.10)
    timers.arm(c, t0 + 0.15)
    b.due = 0.0                          # disarmed: its entry is dropped, not fired
    timers.arm(c, t0 + 0.25)             # re-armed: fires once, at the new time
    timers.arm(d, t0 + 0.20)
    try:
        await wait_for(lambda: len(fired) == 3)
        await asyncio.sleep(0.1)
        assert [n for n, _ in fired] == ["a", "d", "c"]
        times = dict(fired)
        assert times["a"] >= t0 + 0.05 and times["d"] >= t0 + 0.20 and times["c"] >= t0 + 0.25
        assert times["c"] < t0 + 0.25 + 0.2          # not late by another timeout
        assert a.due == 0.0 and c.due == 0.0 and len(timers) == 0
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
