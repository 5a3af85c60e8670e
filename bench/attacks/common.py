"""Shared parts of the attack benchmarks: a private network namespace, a tiny upstream, a
victim client that measures what fraction of its queries are answered and how fast, and the
servers under test (pkdns with its defaults, unbound beside it).

Also runnable, for use inside the namespace (``ip netns exec``):
    python3 common.py upstream HOST PORT
    python3 common.py victim SRC DST PORT SECONDS QPS NAME     (prints one JSON line)
Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
IP = shutil.which("ip") or "/usr/sbin/ip"


# ----------------------------------------------------------------------------- namespace

class Netns:
    """A throw-away network namespace with only ``lo`` and the given /32 addresses on it."""

    def __init__(self, addresses: Sequence[str]) -> None:
        self.name = f"pkatk-{os.getpid()}-{secrets.token_hex(2)}"
        self.addresses = tuple(addresses)

    def __enter__(self) -> Netns:
        subprocess.run([IP, "netns", "add", self.name], check=True)
        subprocess.run([IP, "-n", self.name, "link", "set", "lo", "up"], check=True)
        for a in self.addresses:
            subprocess.run([IP, "-n", self.name, "addr", "add", f"{a}/32", "dev", "lo"],
                           check=True)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run([IP, "netns", "del", self.name], check=False)

    def cmd(self, argv: Sequence[str]) -> list[str]:
        return [IP, "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.cmd(argv), **kw)  # type: ignore[call-overload,no-any-return]


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL: by the process we started, never by name."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def need_root() -> None:
    if os.geteuid() != 0:
        sys.exit("needs root (ip netns add)")


# ----------------------------------------------------------------------------- DNS bytes

def query(qid: int, name: str) -> bytes:
    wire = b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split(".")) + b"\0"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + wire + b"\0\x01\0\x01"


def answer(q: bytes) -> bytes | None:
    """An authoritative A 192.0.2.1 (TTL 3600) for any query."""
    if len(q) < 17 or q[2] & 0x80:
        return None
    end = 12
    while end < len(q) and q[end]:
        end += q[end] + 1
    question = q[12:end + 5]
    rr = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 3600, 4) + socket.inet_aton("192.0.2.1")
    return q[:2] + b"\x84\x00" + struct.pack(">HHHH", 1, 1, 0, 0) + question + rr


def serve_upstream(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, port))
        while True:
            data, addr = s.recvfrom(4096)
            reply = answer(data)
            if reply:
                s.sendto(reply, addr)


# ----------------------------------------------------------------------------- victim

def victim(src: str, dst: str, port: int, seconds: float, qps: float,
           name: str) -> dict[str, float]:
    """Send ``qps`` queries/s for ``seconds`` (distinct ids); answered share and latency."""
    sent: dict[int, float] = {}
    rtts: list[float] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        s.settimeout(0.2)
        done = threading.Event()

        def receive() -> None:
            while not done.is_set():
                try:
                    data = s.recv(4096)
                except TimeoutError:
                    continue
                t0 = sent.pop(struct.unpack(">H", data[:2])[0], None)
                if t0 is not None and not data[2] & 0x02 and data[3] & 0x0F == 0:
                    rtts.append(time.monotonic() - t0)

        reader = threading.Thread(target=receive)
        reader.start()
        start = time.monotonic()
        n = 0
        while (now := time.monotonic()) < start + seconds:
            if n < (now - start) * qps:
                qid = n % 65536
                sent[qid] = time.monotonic()
                s.sendto(query(qid, name), (dst, port))
                n += 1
            else:
                time.sleep(0.0005)
        time.sleep(1.0)                     # late answers still count (a stub waits longer)
        done.set()
        reader.join()
    rtts.sort()

    def pct(p: float) -> float:
        return round(rtts[min(len(rtts) - 1, int(p * len(rtts)))] * 1000, 2) if rtts else -1.0

    return {"sent": n, "answered": len(rtts), "answered_pct": round(100 * len(rtts) / max(n, 1), 1),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


# ----------------------------------------------------------------------------- servers

def unbound_conf(d: Path, host: str, port: int, forwards: Sequence[tuple[str, int]],
                 ratelimit: int | None = None, zone: str = "test.") -> Path:
    """An unbound config: one thread, iterator only, forwarding ``.`` to ``forwards``, which
    may be on loopback (``zone`` is opened from unbound's built-in local zones for that)."""
    conf = d / "unbound.conf"
    limit = f"\n    ip-ratelimit: {ratelimit}" if ratelimit is not None else ""
    addrs = "\n".join(f"    forward-addr: {h}@{p}" for h, p in forwards)
    conf.write_text(f"""server:
    interface: {host}@{port}
    port: {port}
    num-threads: 1
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{d}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 0
    access-control: 10.0.0.0/8 allow
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    so-rcvbuf: 4m{limit}
    do-ip6: no
    module-config: "iterator"
    local-zone: "{zone}" nodefault
forward-zone:
    name: "."
{addrs}
""")
    return conf


def _answers(host: str, port: int) -> bool:
    """Does a DNS server at ``host:port`` answer anything within 0.3 s?"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        try:
            s.sendto(query(1, "ready.example.org"), (host, port))
            return len(s.recv(4096)) >= 12
        except OSError:
            return False


@contextlib.contextmanager
def loopback_unbound(forwards: Sequence[tuple[str, int]], d: Path, port: int,
                     zone: str = "example.") -> Iterator[int]:
    """unbound on 127.0.0.1:``port`` forwarding to ``forwards``, once it answers; stopped
    on exit (the comparison server of the loopback attack benches)."""
    conf = unbound_conf(d, "127.0.0.1", port, forwards, zone=zone)
    proc = subprocess.Popen(["unbound", "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _answers("127.0.0.1", port):
            time.sleep(0.1)
        yield port
    finally:
        stop(proc)


def wait_answering(ns: Netns, src: str, dst: str, port: int, timeout: float = 15.0) -> None:
    """Until the server answers a query (it is up and the cache is warm for ``warm.``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(ns.cmd([sys.executable, str(HERE / "common.py"), "victim", src, dst,
                                     str(port), "0.05", "100", "warm.bench.test"]),
                             capture_output=True, text=True, check=False)
        if out.returncode == 0 and json.loads(out.stdout)["answered"] > 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"no answer from {dst}:{port}")


@contextlib.contextmanager
def server(ns: Netns, kind: str, d: Path, host: str, port: int,
           upstream: tuple[str, int]) -> Iterator[None]:
    """pkdns (defaults; ``pkdns-eventloop``: without the batched C reader) or unbound."""
    d.mkdir(parents=True, exist_ok=True)
    if kind.startswith("pkdns"):
        (d / "pkdns.toml").write_text('[log]\nlevel = "warning"\n')
        pre = ("import pkdns.server.udp as u; u.BATCHED = False; " if kind == "pkdns-eventloop"
               else "")
        argv = [str(ROOT / ".venv/bin/python"), "-c",
                pre + "import sys; from pkdns.cli import main; sys.exit(main())",
                "serve", "--listen", f"{host}:{port}", "--upstream", f"{upstream[0]}:{upstream[1]}",
                "--config", str(d / "pkdns.toml"), "--no-http", "--state-dir", str(d / "state"),
                "--dht-port", "0", "--bootstrap", "127.0.0.1:9"]
    elif kind == "unbound":
        argv = ["unbound", "-d", "-c", str(unbound_conf(d, host, port, [upstream], 100))]
    else:
        raise ValueError(kind)
    log = open(d / f"{kind}.log", "wb")
    proc = ns.popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)  # -c imports from cwd
    try:
        yield
    finally:
        stop(proc)
        log.close()


if __name__ == "__main__":
    if sys.argv[1] == "upstream":
        serve_upstream(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "victim":
        src, dst, port, secs, qps, name = sys.argv[2:8]
        print(json.dumps(victim(src, dst, int(port), float(secs), float(qps), name)))
