"""The kernel lab: pkdns, libtorrent and bittorrent-dht in one network namespace with real
packet loss, dead nodes, NAT'd nodes, broken nodes and Sybils (issue 12).

    python -m tests.support.klab '{"bt": 10, "lt": 4, ...}'   # prints one JSON result line

:func:`run_lab` makes a namespace ``pkdns-lab-<pid>-<hex>`` (only ``lo``; nothing leaves it),
runs :func:`scenario` inside it (``ip netns exec``), kills whatever is left in it and deletes
it. Inside, one nft table does the network's faults on the input hook -- dropping on output
would hand the sender EPERM, which no real network does:

* loss: ``meta l4proto udp numgen random mod 100 < N drop``, every UDP datagram once;
* spared: the DNS ports of the daemons under test (DNS clients are not the subject), accepted
  before the loss rule;
* NAT'd: ``udp dport @nat ct state new drop``: a node behind NAT answers only peers it wrote
  to first (conntrack sees their queries as replies);
* blocked: ``udp dport @block drop``: a host whose DHT traffic is firewalled;
* ICMP port-unreachable is dropped on output, so a killed node is silent as on the internet
  (on ``lo`` the kernel would otherwise tell the sender at once).

The scenario (:class:`LabConfig`): bittorrent-dht and libtorrent swarms plus the lab's own
peers (:mod:`tests.support.klab_peers`), items put while the network is clean, a warm daemon,
then a share of the nodes killed; cold one-shot lookups by each implementation at
``cold_loss``; Sybil keys; DNS queries to the warm daemon at ``warm_loss``; a daemon whose
DHT port is blocked answering from a relay (the warm daemon's relay API).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
INTEROP = ROOT / "tests" / "interop"
IP = shutil.which("ip") or "/usr/sbin/ip"
NFT = shutil.which("nft") or "/usr/sbin/nft"
Address = tuple[str, int]


@dataclass
class LabConfig:
    """Sizes, faults and budgets of one lab run (the defaults are issue 12's full size)."""

    bt: int = 40                 # bittorrent-dht nodes
    lt: int = 20                 # libtorrent nodes
    honest: int = 6              # pkdns server-mode nodes
    no_bep44: int = 4            # BEP 5 only: get/put answered with error 204
    errors: int = 2              # every query answered with error 202
    nat_share: float = 0.1       # of the bittorrent-dht and libtorrent nodes
    dead_share: float = 1 / 3    # killed after the items are stored
    keys: int = 100
    cold_lookups: int = 50
    cold_impls: tuple[str, ...] = ("pkdns", "libtorrent", "bittorrent-dht")
    cold_loss: int = 30
    warm_loss: int = 50
    warm_queries: int = 100
    warm_settle: float = 12.0    # seconds the daemon warms up on the clean network
    sybil_keys: int = 5
    sybil_size: int = 16
    sybil_lookups: int = 20      # cold pkdns resolves per Sybil key
    sybil_holds_old: bool = True  # False: the Sybils hold nothing
    announce_every: float = 5.0  # seconds between the Sybils' (and broken nodes') announcements
    relay: bool = True
    one_shot_timeout: float = 15.0
    warm_toml: str = ""          # extra config for the warm daemon (default: none, as shipped)
    seed: int = 12

    @classmethod
    def from_json(cls, text: str) -> LabConfig:
        data = json.loads(text) if text else {}
        if "cold_impls" in data:
            data["cold_impls"] = tuple(data["cold_impls"])
        return cls(**data)


# -- the namespace (from outside) -----------------------------------------------------------
def unavailable() -> str | None:
    """Why the lab cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (ip netns, nft)"
    for tool in (IP, NFT):
        if not Path(tool).exists():
            return f"{tool} is not installed"
    if shutil.which("node") is None or not (INTEROP / "node_modules").is_dir():
        return "needs node and tests/interop/node_modules (npm install --prefix tests/interop)"
    return None


def run_lab(cfg: LabConfig, timeout: float = 3600.0,
            log: Path | None = None) -> dict[str, Any]:
    """Run :func:`scenario` in a fresh namespace; its result. Everything is torn down."""
    ns = f"pkdns-lab-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run([IP, "netns", "add", ns], check=True, capture_output=True)
    try:
        subprocess.run([IP, "-n", ns, "link", "set", "lo", "up"], check=True,
                       capture_output=True)
        cmd = [IP, "netns", "exec", ns, sys.executable, "-m", "tests.support.klab",
               json.dumps(dataclasses.asdict(cfg))]
        err = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err,
                                  text=True, timeout=timeout, check=False)
        finally:
            if log is not None and not isinstance(err, int):
                err.close()
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(f"the lab printed no result (exit {proc.returncode})")
        result: dict[str, Any] = json.loads(lines[-1])
        return result
    finally:
        _kill_namespace(ns)


def _kill_namespace(ns: str) -> None:
    """Kill the processes still in our namespace (all started by the lab), then delete it."""
    pids = subprocess.run([IP, "netns", "pids", ns], capture_output=True, text=True,
                          check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)
    subprocess.run([IP, "netns", "del", ns], check=False, capture_output=True)


# -- the firewall (inside) -------------------------------------------------------------------
class Firewall:
    """The lab's nft table; loss, NAT'd ports and blocked ports can change during a run."""

    def __init__(self, name: str, spared: Sequence[int]) -> None:
        self.name = name
        spare = ", ".join(str(p) for p in spared) or "9"
        self._nft(f"""
table inet {name} {{
  set spare {{ type inet_service; elements = {{ {spare} }} }}
  set nat {{ type inet_service; }}
  set block {{ type inet_service; }}
  chain out {{ type filter hook output priority 0; policy accept;
    icmp type destination-unreachable drop
  }}
  chain loss {{ }}
  chain inp {{ type filter hook input priority 0; policy accept;
    udp dport @spare accept
    udp sport @spare accept
    udp dport @block drop
    udp dport @nat ct state new drop
    meta l4proto udp jump loss
  }}
}}""")

    def _nft(self, script: str) -> None:
        subprocess.run([NFT, "-f", "-"], input=script, text=True, check=True,
                       capture_output=True)

    def loss(self, percent: int) -> None:
        rule = f"add rule inet {self.name} loss numgen random mod 100 < {percent} drop\n"
        self._nft(f"flush chain inet {self.name} loss\n" + (rule if percent > 0 else ""))

    def add(self, set_name: str, ports: Sequence[int]) -> None:
        if ports:
            elements = ", ".join(str(p) for p in ports)
            self._nft(f"add element inet {self.name} {set_name} {{ {elements} }}\n")

    def delete(self) -> None:
        subprocess.run([NFT, "delete", "table", "inet", self.name], check=False,
                       capture_output=True)


# -- child processes (inside) ----------------------------------------------------------------
class Child:
    """A long-lived lab process speaking JSON lines; it exits when its stdin closes."""

    def __init__(self, proc: asyncio.subprocess.Process, what: str) -> None:
        self.proc, self.what = proc, what

    @classmethod
    async def start(cls, what: str, *cmd: str) -> Child:
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=None, limit=1 << 22)
        return cls(proc, what)

    async def line(self, key: str, timeout: float = 60.0) -> dict[str, Any]:
        """The next JSON line that has ``key``."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while raw := await self.proc.stdout.readline():
                with contextlib.suppress(ValueError):
                    obj: dict[str, Any] = json.loads(raw)
                    if key in obj:
                        return obj
        raise RuntimeError(f"{self.what} exited before printing {key!r}")

    async def command(self, text: str, key: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.line(key)

    async def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


@dataclass
class Shot:
    """One one-shot client run: when its answer line came (s after spawn) and what it said."""

    t: float | None
    out: dict[str, Any] | None
    stderr: str = ""


async def one_shot(cmd: Sequence[str], answer_key: str, timeout: float) -> Shot:
    """Run ``cmd``; the first stdout JSON line with ``answer_key`` is its answer (the process
    is then killed: libtorrent would otherwise finish its lookup for 15 s more)."""
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stderr is not None
    shot = Shot(None, None)
    try:
        async with asyncio.timeout(timeout):
            while raw := await proc.stdout.readline():
                with contextlib.suppress(ValueError):
                    obj = json.loads(raw)
                    if answer_key in obj:
                        shot = Shot(time.monotonic() - t0, obj)
                        break
    except TimeoutError:
        pass
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        err = await proc.stderr.read()
        await proc.wait()
    shot.stderr = err.decode(errors="replace").strip().splitlines()[-1:][0] if err.strip() else ""
    return shot


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summary(times: list[float]) -> dict[str, float | None]:
    if not times:
        return {"median_s": None, "p90_s": None, "max_s": None}
    s = sorted(times)
    return {"median_s": round(statistics.median(s), 3),
            "p90_s": round(s[min(len(s) - 1, int(0.9 * len(s)))], 3),
            "max_s": round(s[-1], 3)}


def hostport(a: Sequence[Any]) -> str:
    return f"{a[0]}:{a[1]}"


@contextlib.asynccontextmanager
async def children() -> AsyncIterator[list[Child]]:
    kids: list[Child] = []
    try:
        yield kids
    finally:
        await asyncio.gather(*(k.stop() for k in kids), return_exceptions=True)


def main() -> int:
    from tests.support.klab_scenario import scenario

    cfg = LabConfig.from_json(sys.argv[1] if len(sys.argv) > 1 else "")
    with tempfile.TemporaryDirectory(prefix="pkdns-lab-") as tmp:
        result = asyncio.run(scenario(cfg, Path(tmp), random.Random(cfg.seed)))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
