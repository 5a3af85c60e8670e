"""TCP clients that pipeline queries and never read the answers (issue 13 item 2).

    .venv/bin/python bench/attacks/tcp_nonreading.py [--conns 64] [--spacing 0.5] [--hold 15]

The installed daemon runs with its default configuration (TCP caps and timeouts included)
except ``dns.rate_limit``, off by default here (``--rate-limit`` sets it): the per-IP rate
limit answers most of a flood with short REFUSED replies, while what is measured is how much
a client that does not read can make the server hold, and a client under its limit (or a
forwarder exempt from it) gets full answers. A fake upstream on loopback answers every TXT
question with ~900 bytes. ``--conns`` connections from one address (127.0.0.1), one every
``--spacing`` seconds (so the per-IP cap of 32 live connections does not stop them), each
send :data:`BATCH` pipelined queries for the cached name, then hold the connection open
without reading until ``--hold`` seconds after the last one started (an attacker keeps them;
closing a socket with unread data would reset the server's orphan).

Sampled every 100 ms over the server side of the port (``ss -m``): the summed kernel memory of
those sockets (receive queue + send queue + forward allocation) and their states; and
``/proc/net/sockstat`` TCP ``mem`` (pages, every TCP socket on the machine: it includes the
attacking clients' own buffers). At the end, 5 s after the clients gave up: what the server
side still holds, and how many clients saw their connection reset (RST) or closed (FIN).
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dns.message

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.daemon import run_daemon  # noqa: E402
from tests.support.upstream import FakeUpstream, Reply, answer  # noqa: E402

_TCP_CLOSE, _TCP_CLOSE_WAIT = 7, 8       # tcp_states.h
TXT = " ".join(f'"{k:02d}{"x" * 170}"' for k in range(5))


def big_txt(data: bytes, _t: str) -> Reply:
    name = dns.message.from_wire(data).question[0].name
    return answer(data, f"{name} 300 IN TXT {TXT}")


def server_side(port: int, side: str = "sport") -> list[tuple[str, int, int]]:
    """(state, Send-Q, kernel bytes) of every server-side connection of ``port`` (with
    ``side="dport"``: the clients' side); the bytes are ``ss -m``'s rmem_alloc +
    wmem_queued + forward_alloc (what the socket holds)."""
    out = subprocess.run(["ss", "-tnmH", "state", "all", "exclude", "listening",
                          f"( {side} = :{port} )"], capture_output=True, text=True, timeout=5)
    rows = []
    for line in out.stdout.replace("\n\t", " ").splitlines():
        r = line.split()
        m = re.search(r"skmem:\(r(\d+),rb\d+,t\d+,tb\d+,f(\d+),w(\d+)", line)
        if r:
            held = sum(int(g) for g in m.groups()) if m else 0
            rows.append((r[0], int(r[2]), held))
    return rows


def sockstat() -> dict[str, int]:
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            f = line.split()[1:]
            return {f[i]: int(f[i + 1]) for i in range(0, len(f), 2)}
    return {}


BATCH = 7000       # queries per connection: ~6.3 MB of answers, beyond every bound, and few
                   # enough that the server has read them all by the time it gives up


def attacker(port: int, query: bytes, until: float, rcvbuf: int, outcome: list[str]) -> None:
    """One non-reading client: send a batch of pipelined queries, then hold without reading."""
    frame = struct.pack(">H", len(query)) + query
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(frame * BATCH)
        # TCP_INFO's state tells a reset (CLOSE) from a FIN (CLOSE_WAIT)
        while time.monotonic() < until:
            state = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
            if state in (_TCP_CLOSE, _TCP_CLOSE_WAIT):
                outcome.append("reset" if state == _TCP_CLOSE else "fin")
                return
            time.sleep(0.1)
        outcome.append("held")
    except ConnectionResetError:
        outcome.append("reset")
    except OSError as exc:
        outcome.append(f"error:{exc.errno}")
    finally:
        s.close()


def run(conns: int, spacing: float, hold: float, rate_limit: float,
        rcvbuf: int) -> dict[str, object]:
    base = sockstat()
    samples: list[tuple[float, int, int, int, int]] = []
    with tempfile.TemporaryDirectory() as tmp, FakeUpstream(big_txt) as up, \
            run_daemon(Path(tmp), upstreams=(up.addr,),
                       config=f"[dns]\nrate_limit = {rate_limit}\n") as d:
        subprocess.run(["dig", "@127.0.0.1", "-p", str(d.port), "big.bench.test", "TXT",
                        "+tries=1", "+time=3"], capture_output=True, timeout=10, check=True)
        query = dns.message.make_query("big.bench.test", "TXT").to_wire()
        outcome: list[str] = []
        stop = threading.Event()

        def sample() -> None:
            t0 = time.monotonic()
            while not stop.is_set():
                rows, st = server_side(d.port), sockstat()
                clients = server_side(d.port, "dport")
                fin_wait = sum(1 for r in rows if r[0].lower() == "fin-wait-1")
                samples.append((time.monotonic() - t0, sum(r[2] for r in rows),
                                st.get("mem", 0), fin_wait,
                                sum(r[2] for r in clients)))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        until = time.monotonic() + conns * spacing + hold
        threads = [threading.Thread(target=attacker, args=(d.port, query, until, rcvbuf,
                                                           outcome)) for _ in range(conns)]
        for t in threads:
            t.start()
            time.sleep(spacing)
        for t in threads:
            t.join()
        time.sleep(5.0)
        stop.set()
        sampler.join()
        left = server_side(d.port)
        alive = d.proc.poll() is None
    page = 4096
    return {
        "connections": conns, "spacing_s": spacing, "hold_s": hold, "rate_limit": rate_limit,
        "client_rcvbuf": rcvbuf or "default",
        "peak_server_socket_memory_MB": round(max(s[1] for s in samples) / 2**20, 2),
        "peak_client_socket_memory_MB": round(max(s[4] for s in samples) / 2**20, 2),
        "peak_sockstat_mem_delta_MB": round((max(s[2] for s in samples) - base.get("mem", 0))
                                            * page / 2**20, 1),
        "peak_fin_wait_1": max(s[3] for s in samples),
        "after_5s_server_sockets": len(left),
        "after_5s_server_socket_memory_MB": round(sum(r[2] for r in left) / 2**20, 2),
        "clients": {k: outcome.count(k) for k in sorted(set(outcome))},
        "daemon_alive": alive,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--spacing", type=float, default=0.5)
    ap.add_argument("--hold", type=float, default=15.0)
    ap.add_argument("--rate-limit", type=float, default=0.0)
    ap.add_argument("--client-rcvbuf", type=int, default=0,
                    help="the attacking sockets' SO_RCVBUF (0: the system's autotuning)")
    args = ap.parse_args()
    print(json.dumps(run(args.conns, args.spacing, args.hold, args.rate_limit,
                         args.client_rcvbuf), indent=2))


if __name__ == "__main__":
    main()
