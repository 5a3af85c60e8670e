"""Run the installed ``pkdns`` (``.venv/bin/pkdns``) as a subprocess for black-box tests.

The daemon listens on 127.0.0.1 port 0 (UDP+TCP on one port); its JSON log goes to a file and
the ``listening`` event tells us the port. Stopped with SIGTERM (then SIGKILL) by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PKDNS = str(Path(sys.executable).with_name("pkdns"))


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    log_path: Path
    host: str
    port: int
    extra: dict[str, Any] = field(default_factory=dict)

    def events(self) -> list[dict[str, Any]]:
        """Every JSON log line so far."""
        return json_lines(self.log_path)

    def query_events(self, qname: str, count: int = 1,
                     timeout: float = 5.0) -> list[dict[str, Any]]:
        """The query log's lines for ``qname``, once ``count`` are in or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events()
                     if e.get("event") == "query" and e.get("qname") == qname]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; the exit code."""
        return stop_process(self.proc, signal.SIGTERM, timeout)


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects among the lines of ``path`` (other lines, e.g. a banner, skipped)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def stop_process(proc: subprocess.Popen[Any], sig: int, timeout: float) -> int:
    """Send ``sig``, wait up to ``timeout``, then SIGKILL; the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@contextlib.contextmanager
def run_daemon(tmp: Path, *args: str, upstreams: tuple[str, ...] = (),
               config: str | None = None, verbose: bool = False) -> Iterator[Daemon]:
    """Start ``pkdns serve --listen 127.0.0.1:0 --no-http`` and wait for its listening line."""
    tmp.mkdir(parents=True, exist_ok=True)
    log_path = tmp / f"pkdns-{time.monotonic_ns()}.log"
    cmd = [PKDNS, "serve", "--listen", "127.0.0.1:0", "--no-http", "--log-format", "json",
           "--state-dir", str(tmp / "state")]
    for u in upstreams:
        cmd += ["--upstream", u]
    if config is not None:
        cmd += ["--config", str(write_config(tmp / "pkdns.toml", config))]
    if verbose:
        cmd.append("-v")
    if "--bootstrap" not in args and "--testnet" not in args:
        # keep the embedded DHT node on loopback: no public routers in tests
        cmd += ["--dht-port", "0", "--bootstrap", "127.0.0.1:9"]
    cmd += list(args)
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONWARNINGS": "default"})
    d = Daemon(proc, log_path, "127.0.0.1", 0)
    try:
        d.port = _wait_listening(d)
        yield d
    finally:
        d.stop()


def _wait_listening(d: Daemon, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev in d.events():
            if ev.get("event") == "listening":
                return int(ev["udp"][0].rsplit(":", 1)[1])
        if d.proc.poll() is not None:
            raise RuntimeError(f"pkdns exited {d.proc.returncode}: {d.log_path.read_text()}")
        time.sleep(0.05)
    raise RuntimeError(f"pkdns did not start: {d.log_path.read_text()}")
