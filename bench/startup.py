"""Start-up time to the first answer with a warm state dir (target: <= 1 s).

    .venv/bin/python bench/startup.py [--packets 10000] [--nodes 1000] [--rounds 5] [--write]

The state dir holds ``--packets`` signed packets (the default ``state.max_packets``) and
``--nodes`` DHT contacts, as a long-running daemon leaves it. The DHT and the upstream are dead
loopback addresses, so the answer can only come from the restored state. Measured from
``exec`` of ``pkdns serve`` to the first NOERROR answer for a saved key (a UDP query every
5 ms); also the time to the ``state_loaded`` and ``listening`` log events.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import dns.message
import dns.rcode
import opsbench


def _first_answer(port: int, key: str, deadline: float) -> float:
    q = dns.message.make_query(key, "A").to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.005)
        while time.monotonic() < deadline:
            s.sendto(q, ("127.0.0.1", port))
            try:
                data = s.recv(4096)
            except (TimeoutError, ConnectionRefusedError):
                continue
            reply = dns.message.from_wire(data)
            if reply.rcode() == dns.rcode.NOERROR and reply.answer:
                return time.monotonic()
    raise RuntimeError("no answer within the deadline")


def _stamp(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def one_round(state: Path, key: str | None, tmp: Path, i: int) -> dict[str, float]:
    """One start; ``key`` None: an empty state dir, time to ``listening`` only."""
    port = opsbench.free_port()
    log = tmp / f"startup-{i}-{key is None}.log"
    wall0, t0 = time.time(), time.monotonic()
    with opsbench.daemon(state, port, "--no-http", "--upstream", "127.0.0.1:1", log=log):
        if key is not None:
            t1 = _first_answer(port, key, t0 + 30)
            while not opsbench.events(log, "state_restored") and time.monotonic() < t0 + 60:
                time.sleep(0.02)
        else:
            while not opsbench.events(log, "listening") and time.monotonic() < t0 + 30:
                time.sleep(0.01)
            t1 = float("nan")
    loaded = opsbench.events(log, "state_loaded")[0]
    listening = opsbench.events(log, "listening")[0]
    restored = opsbench.events(log, "state_restored")
    return {"answer": t1 - t0, "state_loaded": _stamp(loaded) - wall0,
            "listening": _stamp(listening) - wall0, "packets": float(loaded["packets"]),
            "restored": _stamp(restored[0]) - wall0 if restored else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packets", type=int, default=10000)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t = time.monotonic()
        keys = opsbench.warm_state(tmp / "state", args.packets, args.nodes)
        print(f"state dir: {args.packets} packets, {args.nodes} nodes "
              f"({time.monotonic() - t:.1f} s to write)")
        runs, empty = [], []
        for i in range(args.rounds):  # interleaved, so machine load hits both alike
            empty.append(one_round(tmp / f"empty-{i}", None, tmp, i))
            runs.append(one_round(tmp / "state", keys[-1 - i % len(keys)], tmp, i))
    for r in runs:
        print(f"first answer {r['answer']:.3f} s  (state_loaded {r['state_loaded']:.3f} s, "
              f"listening {r['listening']:.3f} s, {r['packets']:.0f} packets)")
    table = _table(runs, empty, args)
    print(table)
    if args.write:
        opsbench.write_section("startup", table)


def _table(runs: list[dict[str, float]], empty: list[dict[str, float]],
           args: argparse.Namespace) -> str:
    def col(name: str, rows: list[dict[str, float]] = runs) -> str:
        xs = sorted(r[name] for r in rows)
        return f"{xs[0]:.3f} / {statistics.median(xs):.3f} / {xs[-1]:.3f}"

    return (
        f"### Start-up with a warm state dir (`bench/startup.py`)\n\n"
        f"{args.packets} saved packets, {args.nodes} saved DHT contacts, DHT and upstream "
        f"unreachable; {args.rounds} rounds on {opsbench.machine()}, load average "
        f"{os.getloadavg()[0]:.1f} at the end. Seconds from exec "
        f"(min / median / max); target: first answer <= 1 s.\n\n"
        f"| milestone | seconds |\n|---|---|\n"
        f"| empty state dir: DNS listening (interpreter + imports + start) | "
        f"{col('listening', empty)} |\n"
        f"| state loaded (nodes; newest packets verified into the cache for 0.1 s) | "
        f"{col('state_loaded')} |\n"
        f"| DNS listening | {col('listening')} |\n"
        f"| first answer for a saved key | {col('answer')} |\n"
        f"| all {args.packets} packets restored (in the background, while serving) | "
        f"{col('restored')} |\n")


if __name__ == "__main__":
    main()
