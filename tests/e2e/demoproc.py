"""Run ``pkdns --testnet`` (the installed console script) as a subprocess and read its banner.

The banner is the block the demo prints once it serves: ``demo key: <z>`` and the ``dig`` /
``kdig`` / ``curl`` lines to try, ending with ``Ctrl-C to stop.``. JSON log lines share the
same output file (``--log-format json``); banner lines are the ones that are not JSON.
``prefix`` runs the command through something else first (``ip netns exec NAME``,
``setpriv --reuid nobody``). Stopped with SIGINT (as a user's Ctrl-C), then SIGKILL, by pid.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.daemon import PKDNS, json_lines, stop_process

END = "Ctrl-C to stop."


@dataclass
class Demo:
    proc: subprocess.Popen[bytes]
    out_path: Path
    key: str = ""
    tries: list[str] = field(default_factory=list)

    def text(self) -> str:
        return self.out_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        return json_lines(self.out_path)

    def interrupt(self, timeout: float = 15.0) -> int:
        """Ctrl-C and wait; the exit code (SIGKILL, and -9, if it hangs)."""
        return stop_process(self.proc, signal.SIGINT, timeout)


def _read_banner(d: Demo, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = d.text()
        if END in text:
            lines = [ln for ln in text.splitlines() if not ln.startswith("{")]
            d.key = next(ln.split()[-1] for ln in lines if ln.startswith("demo key: "))
            d.tries = [ln.strip() for ln in lines if ln.startswith("  ")]
            return
        if d.proc.poll() is not None:
            raise RuntimeError(f"pkdns --testnet exited {d.proc.returncode}: {text}")
        time.sleep(0.05)
    raise RuntimeError(f"pkdns --testnet printed no banner in {timeout} s: {d.text()}")


@contextlib.contextmanager
def run_demo(tmp: Path, *args: str, prefix: Sequence[str] = (),
             timeout: float = 30.0) -> Iterator[Demo]:
    """``[prefix] pkdns --testnet --log-format json ARGS``, until its banner is out."""
    tmp.mkdir(parents=True, exist_ok=True)
    out_path = tmp / f"demo-{time.monotonic_ns()}.out"
    cmd = [*prefix, PKDNS, "--testnet", "--log-format", "json", *args]
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    d = Demo(proc, out_path)
    try:
        _read_banner(d, timeout)
        yield d
    finally:
        d.interrupt()
