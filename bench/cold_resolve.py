"""A cold ``pkdns resolve`` from spawn to answer, side by side with libtorrent's client.

    flock /work/bench.lock .venv/bin/python bench/startup.py --resolve [--rounds 20] \\
        [--before COMMIT]

Issue 12's kernel lab times a cold lookup from the spawn of the client to its answer on
stdout; on a lossy swarm most of pkdns's time there was its own start-up. This bench isolates
that start-up: a clean loopback testnet (``pkdns testnet --nodes 20``) holds one key's packet
and each round spawns, in random order, what the lab spawns --
``python -m pkdns resolve KEY --bootstrap HOST:PORT --json`` and libtorrent's one-shot client
(``python -m tests.support.lt_proc get``, whose first item is its answer) -- plus, for the
split, the interpreter alone, pkdns's imports alone and libtorrent's imports alone.
``--before COMMIT``: the same ``pkdns resolve`` from that commit's tree, in the same rounds.

Per spawn: seconds to the answer line, to the exit (libtorrent is killed at its answer, as in
the lab: its lookup would go on), and the CPU time (user + sys) it used. Python code runs
from bytecode compiled beforehand, as an installed package's does; the row "no bytecode"
runs the tree from source each time, which is what a checkout gets when
PYTHONDONTWRITEBYTECODE is set (as on the machine the lab ran on).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
ZONE = '@ 300 IN A 192.0.2.10\nwww 300 IN CNAME @\n_lab 60 IN TXT "v=new"\n'


@dataclass
class Shot:
    answer: float | None   # spawn -> answer line (None: no answer)
    exit: float            # spawn -> exit (or kill)
    cpu: float             # user + sys seconds of the process


def spawn(cmd: list[str], cwd: Path, answer_key: str | None, timeout: float = 20.0,
          env: dict[str, str] | None = None) -> Shot:
    """Run ``cmd``; the first stdout JSON line with ``answer_key`` is its answer (None: the
    process just runs to its end). A process still running after its answer is killed."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    answer, buf = None, b""
    while answer_key is not None and answer is None and time.monotonic() - t0 < timeout:
        ready, _, _ = select.select([proc.stdout], [], [], 0.05)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        for line in buf.split(b"\n")[:-1]:
            if line.startswith(b"{") and answer_key in json.loads(line):
                answer = time.monotonic() - t0
        buf = buf.rsplit(b"\n", 1)[-1]
    if answer is not None and answer_key == "first":
        proc.kill()   # libtorrent: the lab takes its first item and kills it
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    if proc.returncode is None:
        proc.kill()
        proc.wait()
    end = time.monotonic() - t0
    usage = _children_cpu()
    proc.stdout.close()
    return Shot(answer, end, usage)


_last_cpu = [0.0]


def _children_cpu() -> float:
    """CPU of the child reaped last: the growth of RUSAGE_CHILDREN (one child at a time)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = ru.ru_utime + ru.ru_stime
    used, _last_cpu[0] = total - _last_cpu[0], total
    return used


def compile_tree(tree: Path) -> None:
    """Bytecode for the tree's Python code, as ``pip install`` leaves it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([PY, "-m", "compileall", "-q", "pkdns", "tests/__init__.py", "tests/support"],
                   cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)


def export_tree(commit: str, into: Path) -> Path:
    """``commit``'s pkdns and tests/support, unpacked (pure Python: the resolve path has no
    compiled modules)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "pkdns",
                              "tests/__init__.py", "tests/support"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def testnet_with_key(tmp: Path) -> tuple[subprocess.Popen[str], str, str, str]:
    """A 20-node loopback testnet holding one key's packet: (process, bootstrap, z32, hex)."""
    net = subprocess.Popen([PY, "-m", "pkdns", "testnet", "--nodes", "20"], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert net.stdout is not None
    boot = net.stdout.readline().strip()
    seed, zone = tmp / "seed", tmp / "zone"
    seed.write_text(os.urandom(32).hex() + "\n")
    zone.write_text(ZONE)
    z32 = subprocess.run([PY, "-m", "pkdns", "pubkey", str(seed)], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    subprocess.run([PY, "-m", "pkdns", "publish", str(seed), str(zone), "--bootstrap", boot],
                   cwd=ROOT, check=True, capture_output=True)
    hexkey = subprocess.run([PY, "-c", "import sys; from pkdns.pkarr.keys import PublicKey; "
                             "print(PublicKey.parse(sys.argv[1]).raw.hex())", z32], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout.strip()
    return net, boot, z32, hexkey


def clients(boot: str, z32: str, hexkey: str, before: Path | None, source: Path
            ) -> dict[str, tuple[list[str], Path, str | None, dict[str, str] | None]]:
    """Row name -> (command, cwd, answer key, environment)."""
    resolve = [PY, "-m", "pkdns", "resolve", z32, "--bootstrap", boot, "--json"]
    no_pyc = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    rows: dict[str, tuple[list[str], Path, str | None, dict[str, str] | None]] = {
        "python -c pass (interpreter, site)": ([PY, "-c", "pass"], ROOT, None, None),
        "pkdns resolve: imports only": (
            [PY, "-c", "from pkdns.cli import build_parser; build_parser('resolve')"],
            ROOT, None, None),
        "pkdns resolve": (resolve, ROOT, "records", None),
        "pkdns resolve, no bytecode": (resolve, source, "records", no_pyc),
        "libtorrent client: imports only": (
            [PY, "-c", "import libtorrent, tests.support.lt_proc"], ROOT, None, None),
        "libtorrent client": ([PY, "-m", "tests.support.lt_proc", "get", "--bootstrap", boot,
                               "--pubkey", hexkey, "--timeout", "10"], ROOT, "first", None),
    }
    rows["libtorrent client, no bytecode"] = (rows["libtorrent client"][0], source, "first",
                                              no_pyc)
    if before is not None:
        rows["pkdns resolve, before"] = (resolve, before, "records", None)
    return rows


def run(rounds: int, before_commit: str | None) -> str:
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        compile_tree(ROOT)
        source = export_tree("HEAD", tmp / "source")   # never compiled
        before = None
        if before_commit:
            before = export_tree(before_commit, tmp / "before")
            compile_tree(before)
        net, boot, z32, hexkey = testnet_with_key(tmp)
        try:
            rows = clients(boot, z32, hexkey, before, source)
            shots: dict[str, list[Shot]] = {name: [] for name in rows}
            spawn([PY, "-c", "pass"], ROOT, None)   # prime the rusage baseline
            for _ in range(rounds):
                for name in random.sample(list(rows), len(rows)):
                    cmd, cwd, key, env = rows[name]
                    shots[name].append(spawn(cmd, cwd, key, env=env))
        finally:
            net.terminate()
            net.wait(10)
    return table(shots, rounds, load0, os.getloadavg(), before_commit)


def table(shots: dict[str, list[Shot]], rounds: int, load0: tuple[float, ...],
          load1: tuple[float, ...], before: str | None) -> str:
    def med(xs: list[float]) -> str:
        return f"{statistics.median(xs):.3f}" if xs else "–"

    def p90(xs: list[float]) -> str:   # as tests/support/klab.py's summary
        return f"{sorted(xs)[min(len(xs) - 1, int(0.9 * len(xs)))]:.3f}" if xs else "–"

    lines = [f"{rounds} rounds, order shuffled per round; {os.cpu_count()} CPUs shared, load "
             f"average {load0[0]:.1f} at the start, {load1[0]:.1f} at the end"
             + (f"; before = {before}" if before else ""), "",
             "| client | answered | answer s (median / p90) | exit s (median) "
             "| CPU s (median) |", "| --- | --- | --- | --- | --- |"]
    for name, xs in shots.items():
        answers = [s.answer for s in xs if s.answer is not None]
        shown = (f"{med(answers)} / {p90(answers)}" if "imports" not in name
                 and "pass" not in name else "–")
        answered = f"{len(answers)}/{len(xs)}" if shown != "–" else "–"
        lines.append(f"| {name} | {answered} | {shown} | {med([s.exit for s in xs])} "
                     f"| {med([s.cpu for s in xs])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--before", metavar="COMMIT", help="also time this commit's resolve")
    args = ap.parse_args(argv)
    if shutil.which("tar") is None:
        sys.exit("cold_resolve: needs tar")
    print(run(args.rounds, args.before))


if __name__ == "__main__":
    main()
