"""A real authoritative server for tests: Debian's knotd on a free loopback port.

``knot_server(tmp_path, {"example.test.": ZONE_TEXT})`` writes the zones and a knot.conf into
``tmp_path``, runs ``knotd`` as the current user (rundir and storage in ``tmp_path``), waits until
it answers the first zone's SOA, yields a :class:`Knot`, and stops it (by pid) afterwards.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

KNOTD = shutil.which("knotd") or "/usr/sbin/knotd"


@dataclass
class Knot:
    host: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP right now (best effort)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((host, port))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no free port")


def _conf(d: Path, host: str, port: int, zones: dict[str, str]) -> str:
    zone_lines = "".join(f"  - domain: {name}\n    file: {d}/{name}zone\n" for name in zones)
    return (f'server:\n    rundir: "{d}"\n    listen: {host}@{port}\n'
            f'log:\n  - target: stderr\n    any: warning\n'
            f'database:\n    storage: "{d}/db"\n'
            f'template:\n  - id: default\n    storage: "{d}"\n    zonefile-sync: -1\n'
            f'    zonefile-load: whole\n    journal-content: none\n    semantic-checks: off\n'
            f'zone:\n{zone_lines}')


@contextlib.contextmanager
def knot_server(tmp: Path, zones: dict[str, str], host: str = "127.0.0.1") -> Iterator[Knot]:
    """Run knotd serving ``zones`` (name with trailing dot -> zone file text)."""
    d = tmp / "knot"
    d.mkdir(parents=True, exist_ok=True)
    for name, text in zones.items():
        (d / f"{name}zone").write_text(text)
    port = free_port(host)
    (d / "knot.conf").write_text(_conf(d, host, port, zones))
    log = open(d / "knotd.log", "wb")
    proc = subprocess.Popen([KNOTD, "-c", str(d / "knot.conf")], stdout=log, stderr=log)
    try:
        _wait_ready(host, port, next(iter(zones)), proc, d)
        yield Knot(host, port, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_ready(host: str, port: int, zone: str, proc: subprocess.Popen[bytes], d: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"knotd exited: {(d / 'knotd.log').read_text()}")
        try:
            r = dns.query.udp(dns.message.make_query(zone, "SOA"), host, port=port, timeout=0.3)
            if r.rcode() == dns.rcode.NOERROR and r.answer:
                return
        except (OSError, dns.exception.Timeout):
            pass
        time.sleep(0.05)
    raise RuntimeError("knotd did not come up")
