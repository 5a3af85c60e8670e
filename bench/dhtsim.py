"""Our lookups at Mainline's scale, in virtual time: success, latency and cost vs the targets.

    .venv/bin/python bench/dhtsim.py [--nodes 10000] [--lookups 200] [--seed 1] \
        [--write bench/RESULTS.md]

Drives pkdns's own ``GetMutableLookup`` and ``RoutingTable`` (``tests/support/dhtsim.py``) over
a simulated network: heavy-tailed round trips (median 150 ms, ~3 % over 1 s), 30 % of listed
nodes unresponsive, 10 % gone, 5 % loss per packet each way, churn between lookups, a fifth
of each key's holders gone since the put. Each scenario publishes and looks up fresh keys one
after the other from one warm client. Deterministic for a seed; runs in seconds.

Targets (issue 12): >= 99 % of lookups find the newest packet; median time to the first
verified value <= 1.5 x (median hops x median round trip); KRPC messages per lookup <= 1.5 x
alpha * log2(N), alpha = 4. A Sybil cluster (16 nodes nearest the key, fast, pointing at each
other, holding an older packet or nothing) must not keep the newest packet from winning.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pkdns.dht.resend import RETRANSMIT  # noqa: E402
from tests.support.dhtsim import Config, Summary, simulate  # noqa: E402

BEGIN, END = "<!-- dhtsim:now:begin -->", "<!-- dhtsim:now:end -->"

SCENARIOS: list[tuple[str, dict[str, object]]] = [
    ("mainline", {}),
    ("loss 30 %", {"loss": 0.30}),
    ("sybil 16, older packet", {"sybils": 16}),
    ("sybil 16, no packet", {"sybils": 16, "sybil_value": "none"}),
    ("mainline, resends", {"retransmit": RETRANSMIT}),
    ("loss 50 %, a third gone, resends", {"loss": 0.50, "down": 0.33, "retransmit": RETRANSMIT}),
]


def verdict(name: str, s: Summary) -> str:
    """Which targets this scenario meets (latency and cost are judged on the two Mainline
    rows: "mainline, resends" is what the node runs)."""
    checks = [s.success >= 0.99]
    if name.startswith("mainline"):
        checks += [s.first_p50 <= s.first_budget, s.messages <= s.message_budget]
    return "yes" if all(checks) else "**no**"


def row(name: str, s: Summary) -> str:
    return (f"| {name} | {len(s.results)} | {s.success:.1%} | {s.answered_newest:.1%} | "
            f"{s.first_p50 * 1000:.0f} | {s.first_budget * 1000:.0f} ({s.hops_p50:g} hops) | "
            f"{s.done_p50:.2f} / {s.done_p90:.2f} | {s.messages:.1f} | "
            f"{s.message_budget:.0f} | {verdict(name, s)} |")


HEADER = ("| scenario | lookups | newest found | newest in the first answer | first value p50 (ms) "
          "| target (ms) | complete p50 / p90 (s) | KRPC msgs / lookup | target | targets met |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def run(base: Config) -> str:
    lines = [HEADER]
    for name, changes in SCENARIOS:
        t0 = time.perf_counter()
        summary = simulate(dataclasses.replace(base, **changes))  # type: ignore[arg-type]
        lines.append(row(name, summary))
        print(f"{name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return "\n".join(lines)


def write(path: Path, table: str, base: Config) -> None:
    text = path.read_text()
    head = (f"{base.nodes} nodes, {base.lookups} lookups per scenario, seed {base.seed} "
            f"(`bench/dhtsim.py`, {time.strftime('%Y-%m-%d')}):\n\n")
    block = f"{BEGIN}\n{head}{table}\n{END}"
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--lookups", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--write", type=Path, help="replace the dhtsim table in this RESULTS.md")
    args = ap.parse_args()
    base = Config(nodes=args.nodes, lookups=args.lookups, seed=args.seed)
    table = run(base)
    print(table)
    if args.write:
        write(args.write, table, base)


if __name__ == "__main__":
    main()
