"""Start-up time to the first answer with a warm state dir (target: <= 1 s).

    .venv/bin/python bench/startup.py [--packets 10000] [--nodes 1000] [--rounds 5] [--write]
    .venv/bin/python bench/startup.py --relay [--rounds 5]   # issue 12's relay fallback
    .venv/bin/python bench/startup.py --resolve [--rounds 20] [--before COMMIT]

The state dir holds ``--packets`` signed packets (the default ``state.max_packets``) and
``--nodes`` DHT contacts, as a long-running daemon leaves it. The DHT and the upstream are dead
loopback addresses, so the answer can only come from the restored state. Measured from
``exec`` of ``pkdns serve`` to the first NOERROR answer for a saved key (a UDP query every
5 ms); also the time to the ``state_loaded`` and ``listening`` log events.

``--relay``: an empty state dir, the DHT silent (as when UDP to it is blocked), one pkarr relay
configured (a stub on loopback serving one key's packet) and the HTTP face on, as in the
kernel lab's relay phase: seconds from ``exec`` to DNS listening and to the first answer from
the relay (issue 12 target: <= 1 s after start-up).

``--resolve``: a cold ``pkdns resolve`` from spawn to answer next to libtorrent's one-shot
client, on a clean loopback testnet (``bench/cold_resolve.py`` says what each row is).
"""

from __future__ import annotations

import argparse
import http.server
import os
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def stub_relay(payload: bytes) -> Iterator[str]:
    """A pkarr relay on loopback answering every GET with ``payload`` (the relay body)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "application/pkarr.org.relays.v1+octet-stream")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def relay_round(tmp: Path, relay: str, key: str, i: int) -> dict[str, float]:
    """One start with the DHT silent and ``relay`` configured: exec -> listening, first answer."""
    conf = tmp / f"relay-{i}.toml"
    conf.write_text(f'[pkarr]\nrelays = ["{relay}"]\n')
    port, http_port = opsbench.free_port(), opsbench.free_port()
    log = tmp / f"relay-{i}.log"
    wall0, t0 = time.time(), time.monotonic()
    with opsbench.daemon(tmp / f"relay-state-{i}", port, "--config", str(conf), "--http",
                         f"127.0.0.1:{http_port}", "--upstream", "127.0.0.1:1",
                         log=log) as proc:
        t1 = _first_answer(port, key, t0 + 30)
        cpu = _cpu_seconds(proc.pid)
    listening = opsbench.events(log, "listening")[0]
    return {"answer": t1 - t0, "listening": _stamp(listening) - wall0, "cpu": cpu}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` so far: start-up's cost whatever else the machine runs
    (single-threaded start-up: on an idle machine, about its wall-clock time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def relay_main(args: argparse.Namespace) -> None:
    kp = opsbench.Keypair.from_seed(b"\x07" * 32)
    packet = opsbench.SignedPacket.sign(kp, [opsbench.rr("@ 300 IN A 192.0.2.12")],
                                        int(time.time() * 1e6))
    runs = []
    with tempfile.TemporaryDirectory() as d, stub_relay(packet.relay_payload()) as relay:
        for i in range(args.rounds):
            runs.append(relay_round(Path(d), relay, kp.public_key.z32, i))
            r = runs[-1]
            print(f"relay: DNS listening {r['listening']:.3f} s, first answer "
                  f"{r['answer']:.3f} s after exec ({r['cpu']:.2f} s of CPU)")

    def col(name: str) -> str:
        xs = sorted(r[name] for r in runs)
        return f"{xs[0]:.3f} / {statistics.median(xs):.3f} / {xs[-1]:.3f}"

    print(f"\n{args.rounds} rounds on {opsbench.machine()}, load average "
          f"{os.getloadavg()[0]:.1f}; seconds from exec (min / median / max)\n"
          f"| relay fallback, DHT silent | seconds |\n|---|---|\n"
          f"| DNS listening | {col('listening')} |\n"
          f"| first answer (from the relay) | {col('answer')} |\n"
          f"| CPU time of the daemon at its first answer | {col('cpu')} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packets", type=int, default=10000)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    ap.add_argument("--relay", action="store_true",
                    help="the relay fallback: DHT silent, one relay, first answer")
    ap.add_argument("--resolve", action="store_true",
                    help="cold pkdns resolve vs libtorrent's client, spawn to answer")
    ap.add_argument("--before", metavar="COMMIT",
                    help="--resolve: also time this commit's pkdns resolve")
    args = ap.parse_args()
    if args.resolve:
        import cold_resolve

        print(cold_resolve.run(args.rounds, args.before))
        return
    if args.relay:
        relay_main(args)
        return
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
