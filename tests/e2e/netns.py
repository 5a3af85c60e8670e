"""A throw-away network namespace whose system resolver is pkdns (needs root and ``ip netns``).

``ip netns exec NAME cmd`` bind-mounts every file in ``/etc/netns/NAME/`` over its ``/etc``
twin for ``cmd``, so writing ``/etc/netns/NAME/resolv.conf`` with ``nameserver 127.0.0.1``
makes glibc, and Chromium's own DNS client (it reads resolv.conf too), ask the pkdns we start
on 127.0.0.1:53 inside the namespace. The namespace has only ``lo``: nothing can leave it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

IP = shutil.which("ip") or "/usr/sbin/ip"
ETC_NETNS = Path("/etc/netns")


def unavailable() -> str | None:
    """Why namespaces cannot be used here (None: they can)."""
    if os.geteuid() != 0:
        return "needs root (ip netns add, port 53 and port 80 inside the namespace)"
    if not Path(IP).exists():
        return "the ip command (iproute2) is not installed"
    probe = f"pkdns-probe-{secrets.token_hex(4)}"
    made = subprocess.run([IP, "netns", "add", probe], capture_output=True, text=True,
                          check=False)
    if made.returncode != 0:
        return f"ip netns add fails here: {made.stderr.strip()}"
    subprocess.run([IP, "netns", "del", probe], check=False)
    return None


@dataclass
class Netns:
    name: str

    def prefix(self) -> list[str]:
        return [IP, "netns", "exec", self.name]

    def run(self, cmd: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.prefix(), *cmd], capture_output=True, text=True,
                              timeout=timeout, check=False)


@contextlib.contextmanager
def netns(resolv_conf: str) -> Iterator[Netns]:
    """``pkdns-e2e-<random>`` with ``lo`` up and its own resolv.conf; deleted afterwards."""
    ns = Netns(f"pkdns-e2e-{secrets.token_hex(4)}")
    etc = ETC_NETNS / ns.name
    try:
        subprocess.run([IP, "netns", "add", ns.name], check=True, capture_output=True)
        subprocess.run([IP, "-n", ns.name, "link", "set", "lo", "up"], check=True,
                       capture_output=True)
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text(resolv_conf)
        yield ns
    finally:
        subprocess.run([IP, "netns", "del", ns.name], check=False, capture_output=True)
        shutil.rmtree(etc, ignore_errors=True)


def run_group(cmd: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in its own process group; the whole group is killed afterwards.

    Chromium forks helpers (zygote, renderer, network service); a timeout or a crash must
    not leave any of them behind.
    """
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\n(killed after {timeout} s)"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
