"""SocketPoller: one epoll set for the forwarder's per-query sockets (real loopback sockets)."""

from __future__ import annotations

import asyncio
import socket

import uvloop

from pkdns.dns.sockpoll import SocketPoller


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
