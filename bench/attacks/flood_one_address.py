#!/usr/bin/env python3
"""Flood from one address, victim on another (issue 13 item 9): does the victim still get
answers while one address sends as fast as this machine can?

Everything runs in a private network namespace (only ``lo``, addresses 10.77.0.x on it, so
the flooder and the victim are strangers, not loopback): a tiny upstream (10.77.0.1:5300), the
server under test (10.77.0.1:5301), the flooder (bench/attacks/flood.c, compiled here with cc:
sendmmsg of one cached query from 10.77.0.2, as fast as possible) and the victim (Python, 50
queries/s of another cached name from 10.77.0.3, under every per-client limit). Servers take
turns, each fresh: pkdns with its default configuration (per-client limit 100/s, burst 200),
``pkdns-eventloop`` (the same, reading through the event loop instead of the batched C reader,
i.e. the code before the change) and unbound 1 thread with ``ip-ratelimit: 100``.

    sudo .venv/bin/python bench/attacks/flood_one_address.py [--seconds 8] [--rounds 2]
        [--servers pkdns,pkdns-eventloop,unbound] [--pps 0]

Prints one line per run and a table of medians. Needs root (ip netns), cc, unbound; bounded by
--seconds per run. Run under ``flock /work/bench.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, Netns, need_root, server, stop, wait_answering  # noqa: E402

SERVER, FLOODER, VICTIM = "10.77.0.1", "10.77.0.2", "10.77.0.3"
UPSTREAM = (SERVER, 5300)
PORT = 5301
VICTIM_QPS = 50


def compile_flooder(tmp: Path) -> Path:
    exe = tmp / "flood"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(HERE / "flood.c")], check=True)
    return exe


def one_run(ns: Netns, kind: str, tmp: Path, flooder: Path, seconds: float,
            pps: float) -> dict[str, object]:
    with server(ns, kind, tmp / kind, SERVER, PORT, UPSTREAM):
        wait_answering(ns, VICTIM, SERVER, PORT)
        wait_answering(ns, FLOODER, SERVER, PORT)     # the flood's name is cached too
        victim = subprocess.Popen(
            ns.cmd([sys.executable, str(HERE / "common.py"), "victim", VICTIM, SERVER,
                    str(PORT), str(seconds), str(VICTIM_QPS), "victim.bench.test"]),
            stdout=subprocess.PIPE, text=True)  # type: ignore[call-overload]
        time.sleep(0.2)
        flood = subprocess.run(
            ns.cmd([str(flooder), FLOODER, SERVER, str(PORT), str(seconds - 0.4), str(pps),
                    "flood.bench.test"]), capture_output=True, text=True, check=True)
        out, _ = victim.communicate(timeout=seconds + 10)
        stop(victim)
    sent, secs = flood.stdout.split()[1], flood.stdout.split()[3]
    result: dict[str, object] = json.loads(out)
    result.update(server=kind, flood_pps=round(int(sent) / float(secs)))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--servers", default="pkdns,pkdns-eventloop,unbound")
    ap.add_argument("--pps", type=float, default=0, help="flood rate (0: as fast as possible)")
    args = ap.parse_args()
    need_root()
    kinds = args.servers.split(",")
    runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="pkatk-") as t, \
            Netns([SERVER, FLOODER, VICTIM]) as ns:
        tmp = Path(t)
        flooder = compile_flooder(tmp)
        upstream = ns.popen([sys.executable, str(HERE / "common.py"), "upstream",
                             *map(str, UPSTREAM)])
        try:
            for r in range(args.rounds):
                for kind in kinds:
                    res = one_run(ns, kind, tmp, flooder, args.seconds, args.pps)
                    res["round"] = r + 1
                    print(json.dumps(res), flush=True)
                    runs.append(res)
        finally:
            stop(upstream)
    print(f"\n{'server':16} {'flood pps':>10} {'victim answered':>16} {'p50 ms':>8} {'p99 ms':>8}")
    for kind in kinds:
        mine = [r for r in runs if r["server"] == kind]

        def med(key: str, rows: list[dict[str, object]] = mine) -> float:
            return statistics.median(float(str(r[key])) for r in rows)
        print(f"{kind:16} {med('flood_pps'):>10.0f} {med('answered_pct'):>15.1f}% "
              f"{med('p50_ms'):>8.2f} {med('p99_ms'):>8.2f}")


if __name__ == "__main__":
    main()
