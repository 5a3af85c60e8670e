"""Shared pieces of ``bench/startup.py`` and ``bench/memory.py``: a warm state dir, the daemon
as a subprocess, RSS from /proc, and writing our section of ``bench/RESULTS.md``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pkdns.pkarr.keys import Keypair  # noqa: E402
from pkdns.pkarr.signed_packet import SignedPacket  # noqa: E402
from pkdns.state import SavedPacket, StateStore  # noqa: E402
from tests.support.pkarr_factory import rr  # noqa: E402

PKDNS = str(ROOT / ".venv" / "bin" / "pkdns")
RESULTS = ROOT / "bench" / "RESULTS.md"


def warm_state(state_dir: Path, packets: int, nodes: int) -> list[str]:
    """Write ``packets`` signed packets (seen a minute ago) and ``nodes`` contacts; the keys."""
    now = time.time()
    store = StateStore(state_dir, now)
    saved, keys = [], []
    for i in range(packets):
        kp = Keypair.from_seed(i.to_bytes(4, "big") * 8)
        p = SignedPacket.sign(kp, [rr(f"@ 300 IN A 192.0.{i % 250}.{i % 200 + 1}"),
                                   rr("www 300 IN TXT hello-from-the-bench")],
                              int(now * 1e6))
        # the last key was seen most recently (60 s ago), the first one packets/100 s earlier
        saved.append(SavedPacket(kp.public_key.raw, p.timestamp, p.to_bytes(),
                                 now - 60 - (packets - i) / 100))
        keys.append(kp.public_key.z32)
    store.save_packets(saved, now, max_packets=packets, max_age=86400)
    # unreachable loopback contacts: the bench never leaves the machine
    store.save_nodes([(i.to_bytes(20, "big"), "127.0.0.1", 1) for i in range(1, nodes + 1)],
                     nodes)
    store.close()
    return keys


def free_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket() as t, contextlib.suppress(OSError):
                t.bind(("127.0.0.1", port))
                return port
    raise RuntimeError("no free port")


@contextlib.contextmanager
def daemon(state_dir: Path, port: int, *extra: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``pkdns serve`` on 127.0.0.1:PORT, DHT and upstream on dead loopback addresses."""
    cmd = [PKDNS, "serve", "--listen", f"127.0.0.1:{port}", "--state-dir", str(state_dir),
           "--dht-port", "0", "--bootstrap", "127.0.0.1:1", "--log-format", "json", *extra]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def rss_mb(pid: int) -> float:
    """Resident set size (VmRSS) of ``pid`` in MiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    if not m:
        raise RuntimeError("no VmRSS")
    return int(m.group(1)) / 1024


def events(log: Path, name: str) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            e = json.loads(line)
            if e.get("event") == name:
                out.append(e)
    return out


def write_section(name: str, body: str) -> None:
    """Replace (or append) ``<!-- name:begin -->...<!-- name:end -->`` in RESULTS.md."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({cpu}), Python {sys.version.split()[0]}"
