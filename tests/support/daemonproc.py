"""The installed ``pkdns`` as an asyncio-friendly subprocess (tests can run a testnet meanwhile).

JSON log to a file; the ``listening`` event gives the DNS port; ``stop()`` sends SIGTERM and
waits (SIGKILL after a timeout), always by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message

PKDNS = str(Path(sys.executable).with_name("pkdns"))


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if name is None or event.get("event") == name:
                    out.append(event)
        return out

    async def wait_for(self, name: str, count: int = 1, timeout: float = 20.0,
                       where: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        """The ``count``-th ``name`` event (matching ``where``), polling the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events(name) if where is None or where(e)]
            if len(found) >= count:
                return found[count - 1]
            if self.proc.poll() is not None:
                raise AssertionError(f"pkdns exited {self.proc.returncode}:\n{self.text()}")
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {name} event:\n{self.text()}")

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    async def query(self, name: str, qtype: str = "A", tcp: bool = False,
                    port: int | None = None) -> dns.message.Message:
        q = dns.message.make_query(name, qtype)
        how = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
        return await how(q, "127.0.0.1", port=port or self.port, timeout=5)


@contextlib.asynccontextmanager
async def pkdns(tmp: Path, *args: str, env: Mapping[str, str] | None = None,
                argv0: list[str] | None = None, pass_fds: tuple[int, ...] = (),
                wait: bool = True) -> AsyncIterator[Proc]:
    """Run ``pkdns serve ARGS`` (JSON log); wait for ``listening`` unless ``wait`` is False."""
    tmp.mkdir(parents=True, exist_ok=True)
    log_path = tmp / f"pkdns-{time.monotonic_ns()}.log"
    cmd = [*(argv0 or []), PKDNS, "serve", "--log-format", "json", *args]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, pass_fds=pass_fds,
                                env={**os.environ, **(env or {})})
    p = Proc(proc, log_path)
    try:
        if wait:
            listening = await p.wait_for("listening")
            p.port = int(listening["udp"][0].rsplit(":", 1)[1])
        yield p
    finally:
        await p.stop()
