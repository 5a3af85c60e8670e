"""The listener's C reader (pkdns/server/_udprecv.c) on real sockets: batches, addresses,
replies, and the flood filter that drops a limited address's datagrams before Python sees them."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from pkdns.server import udp
from tests.support.require import require

require(None if udp.BATCHED else "pkdns.server._udprecv is not built (no C compiler?)")
from pkdns.server import _udprecv  # noqa: E402


@pytest.fixture
def server() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        yield s


def send_from(source: str, dest: socket.socket, payloads: list[bytes]) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.bind((source, 0))
        for p in payloads:
            c.sendto(p, dest.getsockname())
        return int(c.getsockname()[1])


def drain(s: socket.socket) -> list[tuple[bytes, tuple[str, int]]]:
    got: list[tuple[bytes, tuple[str, int]]] = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        batch = _udprecv.recv_batch(s.fileno())
        if batch is None:
            if got:
                break
            time.sleep(0.01)
            continue
        got += batch
    return got


def test_batches_carry_data_and_addresses_and_none_means_empty(server: socket.socket) -> None:
    assert _udprecv.recv_batch(server.fileno()) is None
    port = send_from("127.0.0.1", server, [b"x" * n for n in (1, 1500, 60000)])
    got = drain(server)
    assert [len(d) for d, _ in got] == [1, 1500, 60000]      # nothing cut
    assert {a for _, a in got} == {("127.0.0.1", port)}


def test_a_blocked_address_is_dropped_but_one_in_32_and_others_pass(
        server: socket.socket) -> None:
    _udprecv.take_filtered()
    _udprecv.block("127.0.99.2", 2.0)
    flood = send_from("127.0.99.2", server, [b"flood"] * 64)
    victim = send_from("127.0.99.3", server, [b"victim"] * 2)
    got = drain(server)
    assert [d for d, a in got if a == ("127.0.99.3", victim)] == [b"victim"] * 2
    assert [d for d, a in got if a == ("127.0.99.2", flood)] == [b"flood"] * 2
    assert _udprecv.take_filtered() == 62 and _udprecv.take_filtered() == 0


def test_a_block_ends_when_the_limiter_has_a_token_again(server: socket.socket) -> None:
    _udprecv.block("127.0.99.4", 0.05)
    time.sleep(0.1)
    send_from("127.0.99.4", server, [b"later"] * 3)
    assert [d for d, _ in drain(server)] == [b"later"] * 3


def test_send_answers_the_address_a_batch_gave() -> None:
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_DGRAM) as s, \
                socket.socket(family, socket.SOCK_DGRAM) as c:
            s.bind((host, 0))
            s.setblocking(False)
            c.settimeout(1.0)
            c.sendto(b"ping", s.getsockname())
            (data, addr), = drain(s)
            _udprecv.send(s.fileno(), b"pong " + data, addr)
            assert c.recv(100) == b"pong ping"
