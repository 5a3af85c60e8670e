"""Load through the HTTPS gateway (issue 16): parallel page loads, handshakes/s, added latency.

    .venv/bin/python bench/gateway_load.py [--parallel 200] [--rounds 5] [--sequential 100]

One ``pkdns --testnet`` daemon with the default configuration plus a ``[gateway]`` on loopback
(and the zone of one key with an A record and the TLSA record of the origin's certificate);
one HTTPS origin (``tests/gateway/origin.py``, a self-signed P-256 certificate). A "page load"
is what a browser does for a new site: TCP connect, TLS handshake (verifying the chain: the
pkdns CA for the gateway, the self-signed certificate for the origin), ``GET /`` and the
whole response. Each round runs ``--parallel`` loads at once through the gateway and then
directly to the origin (alternating which goes first), so both see the same machine;
``--sequential`` loads one at a time give the latency without queueing. The gateway's own
work per load: one TLS handshake with the browser, one with the origin, the TLSA check, the
relay. Prints a Markdown table (bench/RESULTS.md, "issue 16: gateway").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parents[1]
PKDNS = str(Path(sys.executable).with_name("pkdns"))
TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "origin.crt", tmp / "origin.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=bench-origin"],
                   check=True, capture_output=True)
    return cert, key


def _events(path: Path) -> list[dict[str, object]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def _wait(path: Path, event: str, proc: subprocess.Popen[bytes], timeout: float = 30
          ) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev in _events(path):
            if ev.get("event") == event:
                return ev
        if proc.poll() is not None:
            raise RuntimeError(path.read_text())
        time.sleep(0.1)
    raise RuntimeError(f"no {event}: {path.read_text()[-3000:]}")


async def _load(port: int, host: str, ctx: ssl.SSLContext) -> float:
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                   server_hostname=host)
    writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    if not data.startswith(b"HTTP/1.1 200 OK"):
        reason = data.split(b'id="reason">')[-1].split(b"<")[0] if b"reason" in data else data
        raise RuntimeError(f"{host}:{port}: {reason[:300]!r}")
    return time.perf_counter() - start


async def _parallel(n: int, port: int, host: str, ctx: ssl.SSLContext) -> tuple[float, list[float]]:
    start = time.perf_counter()
    latencies = await asyncio.gather(*(_load(port, host, ctx) for _ in range(n)))
    return time.perf_counter() - start, list(latencies)


async def _sequential(n: int, port: int, host: str, ctx: ssl.SSLContext) -> list[float]:
    return [await _load(port, host, ctx) for _ in range(n)]


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--parallel", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--sequential", type=int, default=100)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="pkdns-gwbench-") as d:
        run(Path(d), args)


def run(tmp: Path, args: argparse.Namespace) -> None:
    cert, key = _self_signed(tmp)
    origin = subprocess.Popen([sys.executable, "-m", "tests.gateway.origin", "--cert", str(cert),
                               "--key", str(key), "--time-limit", "3600", "--quiet"], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert origin.stdout is not None
    origin_port = int(origin.stdout.readline().split()[1])
    seed = subprocess.run([PKDNS, "keygen"], capture_output=True, text=True, check=True)
    (tmp / "seed").write_text(seed.stdout)
    (tmp / "seed").chmod(0o600)
    z = seed.stderr.split()[-1]
    tlsa = subprocess.run([PKDNS, "tlsa", str(cert)], capture_output=True, text=True,
                          check=True).stdout.strip()
    (tmp / "zone").write_text(f"@ IN A 127.0.0.1\n_443._tcp IN TLSA {tlsa}\n")
    (tmp / "pkdns.toml").write_text(
        f'state_dir = "{tmp / "state"}"\n[[zones]]\nseed = "seed"\nzone = "zone"\n'
        f'[gateway]\nenabled = true\nlisten = ["127.0.0.1:0"]\nhttp_listen = []\n'
        f"origin_port = {origin_port}\n")
    log = tmp / "pkdns.log"
    with open(log, "wb") as out:
        daemon = subprocess.Popen([PKDNS, "--testnet", "--config", str(tmp / "pkdns.toml"),
                                   "--no-http", "--listen", "127.0.0.1:0", "--log-format",
                                   "json"], stdout=out, stderr=subprocess.STDOUT)
    try:
        gw_port = int(str(_wait(log, "gateway_listening", daemon)["https"]).split(":")[-1]
                      .rstrip("']"))
        _wait(log, "zone_published", daemon)
        uvloop.run(measure(args, daemon.pid, gw_port, origin_port, f"{z}.key",
                           tmp / "state" / "gateway-ca.crt"))
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(20)
        origin.terminate()
        origin.wait(10)
        origin.stdout.close()


async def measure(args: argparse.Namespace, pid: int, gw_port: int, origin_port: int,
                  host: str, ca_file: Path) -> None:
    gw_ctx = ssl.create_default_context(cafile=str(ca_file))
    direct_ctx = ssl.create_default_context(cafile=str(ca_file))
    direct_ctx.check_hostname = False       # the origin is self-signed: TLS cost without a CA
    direct_ctx.verify_mode = ssl.CERT_NONE
    targets = {"gateway": (gw_port, gw_ctx), "direct": (origin_port, direct_ctx)}
    await _parallel(20, gw_port, host, gw_ctx)          # warm: leaf minted, packet cached
    await _parallel(20, origin_port, host, direct_ctx)
    rates: dict[str, list[float]] = {t: [] for t in targets}
    lat: dict[str, list[float]] = {t: [] for t in targets}
    cpu: list[float] = []
    for r in range(args.rounds):
        order = list(targets) if r % 2 == 0 else list(reversed(targets))
        for t in order:
            port, ctx = targets[t]
            before = _cpu_seconds(pid)
            wall, latencies = await _parallel(args.parallel, port, host, ctx)
            if t == "gateway":
                cpu.append((_cpu_seconds(pid) - before) / args.parallel)
            rates[t].append(args.parallel / wall)
            lat[t] += latencies
    seq = {t: await _sequential(args.sequential, targets[t][0], host, targets[t][1])
           for t in targets}
    print(f"| target | {args.parallel} parallel loads x {args.rounds}: loads/s min / median / "
          "max | p50 ms | p90 ms | sequential p50 ms | p90 ms |")
    print("|---|---|---|---|---|---|")
    for t in targets:
        rs = rates[t]
        print(f"| {t} | {min(rs):.0f} / {statistics.median(rs):.0f} / {max(rs):.0f} | "
              f"{_pct(lat[t], .5) * 1e3:.1f} | {_pct(lat[t], .9) * 1e3:.1f} | "
              f"{_pct(seq[t], .5) * 1e3:.2f} | {_pct(seq[t], .9) * 1e3:.2f} |")
    added = _pct(seq["gateway"], .5) - _pct(seq["direct"], .5)
    print(f"\nadded latency per sequential page load (p50): {added * 1e3:.2f} ms; "
          f"gateway / direct loads/s (medians): "
          f"{statistics.median(rates['gateway']) / statistics.median(rates['direct']):.2f}; "
          f"pkdns CPU per load through the gateway: {statistics.median(cpu) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
