"""Upstream faults seen by a client of the running daemon."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.support.blackbox import query
from tests.support.daemon import Daemon, run_daemon
from tests.support.knot import free_port
from tests.support.upstream import FakeUpstream, answer

pytestmark = pytest.mark.slow

MODE: dict[str, str] = {}
STALE_SERVED = threading.Event()
"""Set by the test once its client has had the stale answer: the "late" upstream answers only
then, so its reply lands after the stale one (1.8 s) whatever the load, with the rest of the
query deadline (3 s) to spare."""


def scripted(data: bytes, transport: str) -> bytes | None:
    name = str(dns.message.from_wire(data).question[0].name).lower()
    mode = MODE.get(name, "ok")
    if mode == "silent":
        return None
    if mode == "late":
        MODE[name] = "ok"           # only the first query is late (the thread is blocked):
        STALE_SERVED.wait(10)       # after stale (1.8 s), before the deadline (3 s)
        return answer(data, f"{name} 1 IN A 192.0.2.2")     # told apart from a later fetch
    if mode == "garbage":
        return data[:2] + b"\x81\x80\x00\x01\x00\x09junk"
    if mode == "servfail":
        return answer(data, rcode=dns.rcode.SERVFAIL)
    if mode == "tc" and transport == "udp":
        return answer(data, tc=True)
    return answer(data, f"{name} 1 IN A 192.0.2.1")


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(scripted) as up:
        yield up


@pytest.fixture(scope="module")
def daemon(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    cfg = "[dns]\nrate_limit = 0.0\n"
    with run_daemon(tmp_path_factory.mktemp("faults"), upstreams=(upstream.addr,),
                    config=cfg) as d:
        yield d


def timed(d: Daemon, name: str) -> tuple[dns.message.Message, float]:
    start = time.monotonic()
    r = dns.query.udp(query(name), "127.0.0.1", port=d.port, timeout=6)
    return r, time.monotonic() - start


def asked(upstream: FakeUpstream, word: str) -> int:
    """Queries the upstream saw for names containing ``word`` (in any 0x20 case)."""
    return len([s for s in upstream.queries() if word in str(s.message.question[0].name).lower()])


def test_silent_upstream_servfail_after_retransmits_then_remembered(
        daemon: Daemon, upstream: FakeUpstream) -> None:
    """SERVFAIL after retransmits (1 s apart: the exact times are tested on the pure exchange,
    test_exchange.py), then the failure is remembered: the upstream is not asked again."""
    MODE["silent.example.test."] = "silent"
    r, _ = timed(daemon, "silent.example.test")
    assert r.rcode() == dns.rcode.SERVFAIL
    tries = asked(upstream, "silent")
    assert tries >= 2
    r, _ = timed(daemon, "silent.example.test")
    assert r.rcode() == dns.rcode.SERVFAIL
    again = asked(upstream, "silent")
    assert again == tries


def test_stale_answer_at_1_8s_with_ttl_30(daemon: Daemon) -> None:
    r, _ = timed(daemon, "stale.example.test")
    assert r.answer and r.answer[0].ttl == 1
    MODE["stale.example.test."] = "silent"
    time.sleep(1.2)
    r, took = timed(daemon, "stale.example.test")
    assert r.rcode() == 0 and r.answer[0].ttl == 30
    assert took < 2.6             # at stale_client_timeout (1.8 s), not the deadline (2.9 s)


def test_late_answer_is_cached_for_the_next_client(tmp_path: Path) -> None:
    """Its own upstream and daemon: after the silent tests above, the shared upstream may
    count as down (8 silent attempts in a row) and the refresh fail at once."""
    with FakeUpstream(scripted) as upstream, run_daemon(
            tmp_path, upstreams=(upstream.addr,), config="[dns]\nrate_limit = 0.0\n") as d:
        _late_answer_cached(d)


def _late_answer_cached(daemon: Daemon) -> None:
    timed(daemon, "late.example.test")
    MODE["late.example.test."] = "late"
    STALE_SERVED.clear()
    time.sleep(1.2)                             # past the answer's TTL (1 s)
    try:
        r, _ = timed(daemon, "late.example.test")
        assert r.answer[0].ttl == 30            # stale while it waits for the upstream
    finally:
        STALE_SERVED.set()                      # now the upstream answers
    for _ in range(15):     # the late reply lands in a moment (later on a loaded machine);
        time.sleep(0.2)     # a query meanwhile waits for it (or for stale, at 1.8 s)
        r, _ = timed(daemon, "late.example.test")
        if r.answer[0].ttl != 30:
            break
    assert r.answer[0].ttl == 1 and r.answer[0][0].address == "192.0.2.2"   # the late reply


def test_truncated_upstream_retried_over_tcp(daemon: Daemon, upstream: FakeUpstream) -> None:
    MODE["tc.example.test."] = "tc"
    r, _ = timed(daemon, "tc.example.test")
    assert r.answer[0][0].address == "192.0.2.1"
    assert any(s.transport == "tcp" for s in upstream.queries())


@pytest.mark.parametrize("mode", ["garbage", "servfail"])
def test_garbage_and_servfail_become_servfail(daemon: Daemon, mode: str) -> None:
    MODE[f"{mode}.example.test."] = mode
    r, _ = timed(daemon, f"{mode}.example.test")
    assert r.rcode() == dns.rcode.SERVFAIL


def test_refused_port_servfail_fast(tmp_path: Path) -> None:
    """Port unreachable ends the exchange at once (test_exchange.py): SERVFAIL well before
    the first attempt timeout (1 s), let alone the deadline (3 s)."""
    with run_daemon(tmp_path, upstreams=(f"127.0.0.1:{free_port()}",)) as d:
        r, took = timed(d, "refused.example.test")
    assert r.rcode() == dns.rcode.SERVFAIL and took < 1.0


def test_late_truncation_still_servfail_by_the_3s_deadline(tmp_path: Path) -> None:
    """The TCP retry after a late TC=1 (at 2.4 s) gets only what is left of
    dns.query_deadline (3 s), not 1.5 s more. (TC=1 at 2.8 s, as this test once had, could
    land after the deadline on a loaded machine, and then no TCP retry was made at all.)"""
    def late_tc(data: bytes, transport: str) -> bytes:
        if transport == "udp":
            if not any(s.transport == "udp" for s in up.queries()[:-1]):
                time.sleep(2.4)             # only the first attempt is late
            return answer(data, tc=True)
        time.sleep(1.5)
        return answer(data, "tclate.example.test. 300 IN A 192.0.2.1")

    with FakeUpstream(late_tc) as up, run_daemon(tmp_path, upstreams=(up.addr,)) as d:
        r, _ = timed(d, "tclate.example.test")
        assert r.rcode() == dns.rcode.SERVFAIL       # the TCP answer, at 3.9 s, is not waited for
        assert any(s.transport == "tcp" for s in up.queries())
