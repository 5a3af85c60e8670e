"""The kernel lab at full size (issue 12): pkdns vs libtorrent vs bittorrent-dht on a lossy,
partly dead, NAT'd, Sybil-infested swarm in a network namespace of its own.

    flock /work/bench.lock .venv/bin/python bench/dhtlab.py [--write bench/RESULTS.md] \\
        [--config '{"keys": 100, ...}'] [--json out.json]

Needs root (ip netns, nft), node with ``tests/interop/node_modules`` and libtorrent 2.1.1.
The swarm: 40 bittorrent-dht@11 + 20 libtorrent 2.1.1 + 6 pkdns server nodes, 4 BEP 5-only
nodes (get/put -> error 204), 2 nodes answering every query with error 202; 10 % of the
foreign nodes NAT'd (no new inbound flows). Items are put while the network is clean, a
warm pkdns daemon joins (its DHT port NAT'd too: read-only client mode, no inbound UDP),
then a third of the nodes is killed. Then, with every implementation in the same run:

* cold: one-shot lookups, a fresh process each (``pkdns resolve``, libtorrent's
  ``dht_get_mutable_item`` in a fresh session, bittorrent-dht's ``get``) at 30 % loss; time
  is from spawn to the answer (libtorrent: its first item; the others print at the end);
* Sybil: keys whose 16 closest ids are Sybils holding the key's packet from an hour earlier;
* warm: DNS TXT queries to the daemon at 50 % loss (a stub's retries every 1 s, 3 s budget);
* relay: a daemon whose DHT port is blocked, the warm daemon's relay API as its one relay.

The mechanics are in ``tests/support/klab*.py`` (``tests/dht/integration/test_klab.py`` runs a small
version in the suite).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.klab import LabConfig, run_lab, unavailable  # noqa: E402

BEGIN, END = "<!-- dhtlab:begin -->", "<!-- dhtlab:end -->"


def fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def table(res: dict[str, Any]) -> str:
    cfg = res["config"]
    lines = ["| phase | client | found newest | older | median s | p90 s | max s "
             "| keys both found; top failure |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for phase in ("cold", "sybil"):
        for impl in cfg["cold_impls"]:
            r = res.get(phase, {}).get(impl)
            if not r:
                continue
            err = next(iter(r["errors"]), "")
            if (both := r.get("common")) and both["keys"]:
                err = (f"keys both found: {both['keys']}, median {fmt(both[impl])} s vs "
                       f"{cfg['cold_impls'][0]} {fmt(both[cfg['cold_impls'][0]])} s; {err}")
            lines.append(f"| {phase} ({res[phase].get('loss', cfg['cold_loss'])} % loss) | {impl} "
                         f"| {r['newest']}/{r['lookups']} | {r['older']} | {fmt(r['median_s'])} "
                         f"| {fmt(r['p90_s'])} | {fmt(r['max_s'])} | {err[:140]} |")
    w = res["warm"]
    lines.append(f"| warm daemon ({w['loss']} % loss) | pkdns serve "
                 f"| {w['answered']}/{w['queries']} "
                 f"within 3 s | SERVFAIL {w['servfail']}, NXDOMAIN {w['nxdomain']}, no answer "
                 f"{w['timeout']}, wrong {w['wrong']} | {fmt(w['median_s'])} | {fmt(w['p90_s'])} "
                 f"| {fmt(w['max_s'])} | Sybil keys: newest {w['sybil']['newest']}/"
                 f"{w['sybil']['queries']} |")
    if "relay" in res:
        r = res["relay"]
        lines.append(f"| relay, DHT port blocked | pkdns serve | first answer "
                     f"{fmt(r['first_answer_s'])} s after spawn, {fmt(r['first_after_up_s'])} s "
                     f"after DNS was up ({fmt(r['dns_up_s'])} s); daemon CPU "
                     f"{fmt(r.get('cpu_at_first_answer_s'))} s | | | | | next keys "
                     f"{r['more_keys_s']} |")
    return "\n".join(lines)


def write(path: Path, res: dict[str, Any], note: str) -> None:
    text = path.read_text()
    block = (f"{BEGIN}\n{note}\n\n{table(res)}\n\nSet-up: {json.dumps(res['setup'])}; "
             f"puts stored on {res['put']['stored_min']}–{res['put']['stored_median']} "
             f"(min–median) nodes; run took {res['seconds']} s.\n{END}")
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n## issue 12: kernel lab\n\n" + block + "\n"
    path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="", help="JSON overrides of LabConfig fields")
    ap.add_argument("--write", type=Path, help="update this RESULTS.md section")
    ap.add_argument("--json", type=Path, help="save the raw result")
    ap.add_argument("--note", default="", help="a line for RESULTS.md (commit, machine load)")
    args = ap.parse_args()
    if (why := unavailable()) is not None:
        print(f"dhtlab: {why}", file=sys.stderr)
        return 2
    base = dataclasses.asdict(LabConfig())
    base.update(json.loads(args.config or "{}"))
    cfg = LabConfig.from_json(json.dumps(base))
    from cold_resolve import compile_tree

    # bytecode for pkdns and the lab's Python clients, as an installed package has it: with
    # PYTHONDONTWRITEBYTECODE set, a checkout would otherwise compile pkdns's modules from
    # source in every cold `pkdns resolve` (~0.12 s of CPU each; libtorrent's client ~0.01 s)
    compile_tree(ROOT)
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"dhtlab-{int(time.time())}.log"
    print(f"dhtlab: running (log {log})", file=sys.stderr)
    res = run_lab(cfg, log=log)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    print(table(res))
    if args.write:
        write(args.write, res, args.note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
