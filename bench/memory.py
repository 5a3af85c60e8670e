"""Resident memory of the daemon: idle, and with the default cache budgets full.

    .venv/bin/python bench/memory.py [--fill-factor 1.0] [--write]

Targets (a home router): <= 60 MB idle, <= 200 MB full. "Full" means both default budgets are
used up: the answer cache (``cache.max_bytes`` = 32 MiB of DNS wire data), filled with unique
names answered by a local knotd wildcard zone and sent by dnsperf, and the signed-packet cache
(``pkarr.packet_cache_size`` = 10,000 packets), filled from a warm state dir. RSS is VmRSS from
/proc after the load stops; cache fill is read from ``/metrics``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import opsbench

from pkdns.config import CacheConfig, PkarrConfig
from pkdns.dns.cache import ENTRY_OVERHEAD
from tests.support.knot import knot_server

ZONE = ("$ORIGIN m.bench.test.\n$TTL 86400\n@ SOA ns host 1 3600 600 86400 300\n@ NS ns\n"
        "ns A 127.0.0.1\n* A 192.0.2.1\n")


def _metric(http_port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5).read()
    m = re.search(rf"^{name} ([0-9.e+]+)$", text.decode(), re.M)
    return float(m.group(1)) if m else 0.0


def _fill(port: int, http_port: int, tmp: Path, target: float) -> tuple[int, float]:
    """dnsperf unique names in batches until the cache holds ``target`` bytes."""
    sent, batch = 0, 100_000
    while _metric(http_port, "pkdns_cache_bytes") < target and sent < 2_000_000:
        names = tmp / "names.txt"
        names.write_text("".join(f"q{i}.m.bench.test A\n" for i in range(sent, sent + batch)))
        subprocess.run(["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(names),
                        "-n", "1", "-c", "8", "-q", "200", "-l", "300"],
                       check=True, capture_output=True, timeout=400)
        sent += batch
        time.sleep(1.5)  # the cache gauges refresh once a second
        print(f"{sent} names sent, cache {_metric(http_port, 'pkdns_cache_bytes') / 2**20:.1f}"
              " MiB", flush=True)
    return sent, _metric(http_port, "pkdns_cache_bytes")


def measure(tmp: Path, fill_factor: float) -> dict[str, float]:
    packets = PkarrConfig().packet_cache_size
    opsbench.warm_state(tmp / "full", packets, 200)
    out: dict[str, float] = {}
    with knot_server(tmp, {"m.bench.test.": ZONE}) as knot:
        for label, state in (("idle", tmp / "empty"), ("full", tmp / "full")):
            port, http = opsbench.free_port(), opsbench.free_port()
            log = tmp / f"{label}.log"
            conf = tmp / "pkdns.toml"
            conf.write_text("[dns]\nrate_limit = 0.0\n")   # one client sends everything
            with opsbench.daemon(state, port, "--config", str(conf), "--upstream", knot.addr,
                                 "--http", f"127.0.0.1:{http}", log=log) as proc:
                _wait(log, "listening")
                if label == "idle":
                    time.sleep(3)
                    out["idle_rss"] = opsbench.rss_mb(proc.pid)
                    continue
                _wait(log, "state_restored", timeout=120)
                t = time.monotonic()
                sent, used = _fill(port, http, tmp, fill_factor * CacheConfig().max_bytes)
                out.update(full_rss=opsbench.rss_mb(proc.pid), queries=sent, cache_bytes=used,
                           entries=_metric(http, "pkdns_cache_entries"), packets=packets,
                           fill_seconds=time.monotonic() - t)
    return out


def _wait(log: Path, event: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not opsbench.events(log, event):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {event}: {log.read_text()[-2000:]}")
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fill-factor", type=float, default=0.97,
                    help="fill the answer cache to this share of cache.max_bytes")
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        r = measure(Path(d), args.fill_factor)
    table = (
        f"### Memory (`bench/memory.py`)\n\n"
        f"RSS (VmRSS) of `pkdns serve` on {opsbench.machine()}, load average "
        f"{os.getloadavg()[0]:.1f}. Full = answer cache at {r['cache_bytes'] / 2**20:.1f} MiB of "
        f"{CacheConfig().max_bytes / 2**20:.0f} MiB wire data ({r['entries']:.0f} answers, "
        f"{r['queries']:.0f} unique names via dnsperf from a knotd wildcard zone, "
        f"{r['fill_seconds']:.0f} s) + {r['packets']:.0f} signed packets restored from the "
        f"state dir.\n\n"
        f"| state | RSS MiB | target |\n|---|---|---|\n"
        f"| idle (just started, empty caches) | {r['idle_rss']:.1f} | <= 60 |\n"
        f"| default caches full | {r['full_rss']:.1f} | <= 200 |\n\n"
        f"The answers here are small (about {r['cache_bytes'] / r['entries'] - ENTRY_OVERHEAD:.0f}"
        f" bytes of wire each, the worst case for entry count): the cache counts wire + "
        f"{ENTRY_OVERHEAD} bytes per "
        f"answer against `cache.max_bytes`, while the process grows by about "
        f"{(r['full_rss'] - r['idle_rss']) * 1024 / r['entries']:.2f} KiB per answer "
        f"(packets included).\n")
    print(table)
    if args.write:
        opsbench.write_section("memory", table)


if __name__ == "__main__":
    main()
