"""libtorrent 2.1.1 as separate processes for the kernel lab (``tests/support/klab.py``).

    python -m tests.support.lt_proc swarm --n 20 --join 127.0.0.1:4000 [--time-limit S]
    python -m tests.support.lt_proc get --bootstrap 127.0.0.1:4000 --pubkey HEX [--timeout S]

``swarm`` runs N sessions (the loopback settings of :mod:`tests.support.peers`), prints one
``{"ready": true, "nodes": [[host, port], ...]}`` line, then reads commands from stdin:
``kill 1,5,9`` turns those sessions' DHT off (they fall silent, as a dead peer does) and
prints ``{"killed": [...]}``; it exits when stdin closes or at the time limit.

``get`` is libtorrent as a one-shot client, for cold-lookup comparisons: a fresh read-only
session joins through ``--bootstrap`` (``add_dht_node`` repeated until the table is
non-empty: it is fire-and-forget) and asks ``dht_get_mutable_item``. It prints
``{"first": ...}`` as soon as the first item arrives -- the moment a libtorrent client has an
answer -- and the final line once libtorrent calls the lookup authoritative or the timeout
passes. libtorrent cannot be told to stop early and its full lookup waits out a 15 s RPC
timeout per dead node, so the lab takes the first line as libtorrent's answer time.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
from typing import Any

from tests.support.peers import LOOPBACK_DHT_SETTINGS, LibtorrentSwarm


def _addr(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def swarm(args: argparse.Namespace) -> int:
    join = [_addr(a) for a in args.join.split(",") if a]
    lt = LibtorrentSwarm(args.n, join)
    _emit({"ready": True, "pid": os.getpid(), "nodes": [list(n) for n in lt.nodes],
           "routing_table_sizes": [lt.routing_table_size(i) for i in (0, args.n - 1)]})
    deadline = time.monotonic() + args.time_limit
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sys.stdin.buffer], [], [], 0.2)
        for ses in lt.sessions:
            ses.pop_alerts()  # keep the alert queues short
        if not ready:
            continue
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            break  # the lab went away: so do we
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            cmd, _, rest = line.decode().strip().partition(" ")
            if cmd != "kill":
                _emit({"error": f"unknown command {cmd!r}"})
                continue
            killed = [int(i) for i in rest.split(",") if i]
            for i in killed:
                lt.sessions[i].apply_settings({"enable_dht": False})
            _emit({"killed": killed})
    for ses in lt.sessions:
        ses.pause()
    os._exit(0)


def get(args: argparse.Namespace) -> int:
    import libtorrent as lt

    t0 = time.monotonic()
    settings: Any = dict(LOOPBACK_DHT_SETTINGS)
    settings.update({"listen_interfaces": "127.0.0.1:0", "dht_read_only": True,
                     "alert_mask": lt.alert.category_t.dht_notification})
    params = lt.session_params()
    params.settings = settings
    ses = lt.session(params)
    boot = [_addr(a) for a in args.bootstrap.split(",") if a]
    pk = bytes.fromhex(args.pubkey)
    deadline = t0 + args.timeout
    joined = False
    while not joined and time.monotonic() < deadline:
        for node in boot:
            ses.add_dht_node(node)
        ses.post_dht_stats()
        end = time.monotonic() + 0.25
        while time.monotonic() < end and not joined:
            ses.wait_for_alert(50)
            for a in ses.pop_alerts():
                if isinstance(a, lt.dht_stats_alert):
                    joined = sum(b["num_nodes"] for b in a.routing_table) > 0
    ses.dht_get_mutable_item(pk, b"")
    best: dict[str, Any] | None = None
    authoritative = False
    while not authoritative and time.monotonic() < deadline:
        ses.wait_for_alert(100)
        for a in ses.pop_alerts():
            if not (isinstance(a, lt.dht_mutable_item_alert) and bytes(a.key) == pk):
                continue
            authoritative = authoritative or bool(a.authoritative)
            if a.seq > 0 and (best is None or a.seq > best["seq"]):
                item: Any = a.item
                v = item.encode("latin-1") if isinstance(item, str) else bytes(item)
                first = best is None
                best = {"seq": int(a.seq), "v": v.hex(), "t": round(time.monotonic() - t0, 4)}
                if first:
                    _emit({"first": best})
    _emit({"done": True, "found": best is not None, "best": best, "joined": joined,
           "authoritative": authoritative, "t": round(time.monotonic() - t0, 4)})
    ses.pause()
    os._exit(0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("swarm")
    s.add_argument("--n", type=int, default=10)
    s.add_argument("--join", default="")
    s.add_argument("--time-limit", type=float, default=1200)
    g = sub.add_parser("get")
    g.add_argument("--bootstrap", required=True)
    g.add_argument("--pubkey", required=True)
    g.add_argument("--timeout", type=float, default=20)
    args = ap.parse_args()
    return swarm(args) if args.cmd == "swarm" else get(args)


if __name__ == "__main__":
    sys.exit(main())
