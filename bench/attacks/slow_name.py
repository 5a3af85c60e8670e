"""A slow name against ICANN resolution for everyone (issue 13 item 1), pkdns beside unbound.

    .venv/bin/python bench/attacks/slow_name.py [--seconds 20] [--servers pkdns,unbound]
                                                [--pkdns PATH] [--out FILE.json]

Fake upstreams on loopback answer every question at once, except names under
``slow.example``, for which they stay silent (as a recursive upstream does for a domain whose
servers never answer). An attacker (127.0.0.3) asks random names under ``slow.example`` at
``--attack-qps`` (5 by default: far under the per-IP rate limit); legitimate clients
(127.0.0.2) ask random uncached names under other domains at ``--legit-qps``; each query
waits up to 3 s (pkdns's ``query_deadline``). Figure: the share of legitimate queries
answered with their A record. Scenarios:

* ``one``: one upstream, legitimate 20 q/s;
* ``two-20`` / ``two-50``: two upstreams, legitimate 20 / 50 q/s;
* ``burst``: no steady attack; one burst of 8 slow names, nothing else for 0.9 s, then
  legitimate 20 q/s for 4 s (the burst alone caused a ~1 s outage).

pkdns runs with its default configuration (``--pkdns`` picks another build, e.g. an older
checkout's ``.venv/bin/pkdns``); unbound with a forward-zone "." to the same upstreams, cache
on, no validation (as bench/dnsbench/lab.py). Loopback only; every process is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.message
import dns.rcode

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import tests.support.daemon as daemon_support  # noqa: E402
from bench.attacks.common import loopback_unbound  # noqa: E402
from tests.support.knot import free_port  # noqa: E402
from tests.support.upstream import FakeUpstream, Reply, a_record  # noqa: E402

SLOW = "slow.example"
LEGIT_IP, ATTACK_IP = "127.0.0.2", "127.0.0.3"
TIMEOUT = 3.0


def all_but_slow(data: bytes, transport: str) -> Reply:
    name = str(dns.message.from_wire(data).question[0].name).lower()
    return None if name.endswith(f".{SLOW}.") else a_record()(data, transport)


def label(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))


async def ask(server: tuple[str, int], source: str, name: str) -> bool:
    """One UDP query from ``source``; True when answered NOERROR with an A record."""
    loop = asyncio.get_running_loop()
    q = dns.message.make_query(name, "A")
    fut: asyncio.Future[bytes] = loop.create_future()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, _addr: object) -> None:
            if not fut.done():
                fut.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=(source, 0),
                                                       remote_addr=server)
    try:
        transport.sendto(q.to_wire())
        data = await asyncio.wait_for(fut, TIMEOUT)
        r = dns.message.from_wire(data)
        return r.rcode() == dns.rcode.NOERROR and bool(r.answer)
    except (TimeoutError, OSError, dns.exception.DNSException):
        return False
    finally:
        transport.close()


async def steady(server: tuple[str, int], source: str, qps: float, seconds: float,
                 name: str, rng: random.Random) -> list[bool]:
    """``qps`` queries a second for ``seconds``, each a fresh random name under ``name``."""
    tasks = []
    start = time.monotonic()
    for k in range(int(qps * seconds)):
        delay = start + k / qps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        zone = name.replace("*", label(rng))
        tasks.append(asyncio.create_task(ask(server, source, f"{label(rng)}.{zone}")))
    return list(await asyncio.gather(*tasks))


async def scenario(server: tuple[str, int], kind: str, seconds: float, attack_qps: float,
                   legit_qps: float, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    if kind == "burst":
        burst = [ask(server, ATTACK_IP, f"{label(rng)}.{SLOW}") for _ in range(8)]
        burst_task = asyncio.gather(*burst)
        await asyncio.sleep(0.9)         # nothing else asked until their first timeouts
        legit = await steady(server, LEGIT_IP, legit_qps, 4.0, "*.example.net", rng)
        await burst_task
    else:
        attack = asyncio.create_task(steady(server, ATTACK_IP, attack_qps, seconds, SLOW, rng))
        await asyncio.sleep(1.0)         # the attack is under way before the first victim
        legit = await steady(server, LEGIT_IP, legit_qps, seconds - 1.0, "*.example.net", rng)
        await attack
    return {"legit_sent": len(legit), "legit_answered": sum(legit),
            "legit_answered_pct": round(100.0 * sum(legit) / max(1, len(legit)), 2)}


@contextmanager
def unbound(upstreams: list[FakeUpstream], tmp: Path) -> Iterator[tuple[str, int]]:
    with loopback_unbound([(u.host, u.port) for u in upstreams], tmp, free_port()) as port:
        yield ("127.0.0.1", port)


@contextmanager
def pkdns(upstreams: list[FakeUpstream], tmp: Path, binary: str) -> Iterator[tuple[str, int]]:
    daemon_support.PKDNS = binary
    with daemon_support.run_daemon(tmp, upstreams=tuple(u.addr for u in upstreams)) as d:
        yield ("127.0.0.1", d.port)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--attack-qps", type=float, default=5.0)
    ap.add_argument("--servers", default="pkdns,unbound")
    ap.add_argument("--scenarios", default="one,two-20,two-50,burst")
    ap.add_argument("--pkdns", default=daemon_support.PKDNS, help="pkdns executable")
    ap.add_argument("--out", help="also write the figures as JSON here")
    args = ap.parse_args()
    if "unbound" in args.servers and shutil.which("unbound") is None:
        print("unbound is not installed", file=sys.stderr)
        return 2
    results = []
    for kind in args.scenarios.split(","):
        n_up = 2 if kind.startswith("two") else 1
        legit_qps = 50.0 if kind == "two-50" else 20.0
        for server in args.servers.split(","):
            with tempfile.TemporaryDirectory(prefix="pkdns-slowname-") as tmp_s:
                tmp = Path(tmp_s)
                ups = [FakeUpstream(all_but_slow) for _ in range(n_up)]
                for u in ups:
                    u.__enter__()
                try:
                    run = (pkdns(ups, tmp, args.pkdns) if server == "pkdns"
                           else unbound(ups, tmp))
                    with run as addr:
                        fig = asyncio.run(scenario(addr, kind, args.seconds, args.attack_qps,
                                                   legit_qps, seed=13))
                finally:
                    for u in ups:
                        u.__exit__()
            row = {"scenario": kind, "server": server, "upstreams": n_up,
                   "legit_qps": legit_qps, "attack_qps": 0 if kind == "burst"
                   else args.attack_qps, **fig}
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
