#!/usr/bin/env python3
"""In-process CPU cost of the pkdns UDP front end: µs per cache hit and per cache miss.

Why: on the shared 2-core box dnsperf QPS swings ±30 % with other people's load; the CPU time
our own process spends per query is far steadier, so this is the loop used while optimising.
The daemon's real parts (Daemon -> Resolver, WireCache, Forwarder, UdpServer) run on uvloop;
only the client side is faked: queries are handed to ``datagram_received`` directly and the
listening transport's ``sendto`` just counts (so the client-facing sendto syscall is NOT in the
figures; upstream sockets are real). knotd serves bench.test. on 127.0.0.1:5390.

    .venv/bin/python bench/dnsbench/micro.py [--hits 300000] [--misses 30000] [--profile hit]

Prints CPU µs per query split into user (mostly Python) and system (socket calls) time, and
the time the garbage collector took per generation during the miss run.

Confirm any gain with the dnsperf harness (bench-pkdns.sh) before believing it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import random
import resource
import struct
import sys
import time
from typing import Any

import uvloop

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lab  # noqa: E402  (the harness library next to this file)

from pkdns.app import Daemon, tune_gc  # noqa: E402
from pkdns.config import Config, DnsConfig, LogConfig  # noqa: E402
from pkdns.server.udp import UdpServer  # noqa: E402

AUTH_PORT = 5390
CLIENT = ("127.0.0.1", 40000)


def query(name: str, qtype: int = 1) -> bytes:
    """What dnsperf sends: RD=1, one question, no EDNS."""
    q = struct.pack("!HHHHHH", random.getrandbits(16), 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack("!HH", qtype, 1)


class Sink:
    """The listening socket's transport: counts replies, wakes the miss driver."""

    def __init__(self) -> None:
        self.replies = 0
        self.on_reply: Any = None

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.replies += 1
        if self.on_reply is not None:
            self.on_reply()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


async def run_misses(proto: UdpServer, sink: Sink, names: list[str], window: int) -> str:
    """Send ``names`` keeping ``window`` outstanding; CPU per query."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    it = iter(names)
    sent = [0]
    base = sink.replies

    def send_one() -> None:
        name = next(it, None)
        if name is not None:
            sent[0] += 1
            proto.datagram_received(query(name), CLIENT)

    def on_reply() -> None:
        if sink.replies - base >= len(names):
            if not done.done():
                done.set_result(None)
        else:
            loop.call_soon(send_one)

    sink.on_reply = on_reply
    c0 = cpu()
    for _ in range(window):
        send_one()
    await asyncio.wait_for(done, 120)
    sink.on_reply = None
    return split(c0, len(names))


def cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def split(c0: tuple[float, float], n: int) -> str:
    """Total µs/q with the user/system split (Python work vs syscalls)."""
    u, s = (b - a for a, b in zip(c0, cpu(), strict=True))
    return f"{1e6 * (u + s) / n:6.2f} µs/q CPU (user {1e6 * u / n:.2f}, sys {1e6 * s / n:.2f})"


def run_hits(proto: UdpServer, packets: list[bytes], n: int) -> str:
    c0 = cpu()
    m = len(packets)
    for i in range(n):
        proto.datagram_received(packets[i % m], CLIENT)
    return split(c0, n)


async def main(a: argparse.Namespace) -> None:
    cfg = Config(dns=DnsConfig(listen=(("127.0.0.1", 0),), upstream=(("127.0.0.1", AUTH_PORT),),
                               rate_limit=0.0), log=LogConfig(level="warning"))
    d = Daemon(cfg)
    if not a.default_gc:
        tune_gc()                  # what the daemon's main() does
    sink = Sink()
    proto = UdpServer(d.resolver, cfg.dns.udp_payload_max)
    proto.connection_made(sink)  # type: ignore[arg-type]
    hit_names = [f"n{i}.bench.test" for i in range(1000)]
    await run_misses(proto, sink, hit_names, 50)
    packets = [query(n) for n in hit_names]
    prof = cProfile.Profile() if a.profile else None
    if a.hits:
        if prof and a.profile == "hit":
            prof.enable()
        cost = run_hits(proto, packets, a.hits)
        if prof:
            prof.disable()
        print(f"hit : {cost} ({a.hits} queries)")
    if a.misses:
        salt = f"{time.time_ns() & 0xffffff:x}"
        names = [f"q{i}-{salt}.m.bench.test" for i in range(a.misses)]
        if prof and a.profile == "miss":
            prof.enable()
        stats = GcStats()
        cost = await run_misses(proto, sink, names, a.window)
        gc.callbacks.remove(stats.callback)
        if prof:
            prof.disable()
        print(f"gc  : {stats.report(a.misses)}")
        print(f"miss: {cost} ({a.misses} queries, "
              f"window {a.window}, upstream sent {d.forwarder.sent})")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


class GcStats:
    """Time spent in each garbage-collector generation (gc.callbacks)."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.time = [0.0, 0.0, 0.0]
        self.runs = [0, 0, 0]
        gc.callbacks.append(self.callback)

    def callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.t0 = time.perf_counter()
        else:
            g = info["generation"]
            self.time[g] += time.perf_counter() - self.t0
            self.runs[g] += 1

    def report(self, n: int) -> str:
        return " ".join(f"gen{g}: {self.runs[g]} runs {1e6 * self.time[g] / n:.2f} µs/q"
                        for g in range(3))


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hits", type=int, default=300_000)
    ap.add_argument("--misses", type=int, default=30_000)
    ap.add_argument("--window", type=int, default=100, help="misses outstanding")
    ap.add_argument("--default-gc", action="store_true",
                    help="keep Python's GC settings (the daemon calls pkdns.app.tune_gc)")
    ap.add_argument("--profile", choices=["hit", "miss"], default=None)
    a = ap.parse_args()
    os.makedirs(lab.RUN, exist_ok=True)
    auth = lab.start("auth", port=AUTH_PORT)
    try:
        uvloop.run(main(a))
    finally:
        auth.stop()


if __name__ == "__main__":
    cli()
