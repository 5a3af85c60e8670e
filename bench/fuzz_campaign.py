"""The longer fuzzing campaign (issue 13): every target of fuzz/targets.py for N seconds each.

    flock /work/bench.lock python bench/fuzz_campaign.py [SECONDS] [WORKDIR] [TARGET ...]

Runs ``python -m fuzz.run --all`` (plain-Python pkdns under atheris, one forked libFuzzer
process per target, seeds from fuzz/corpus/) and prints a Markdown table of executions,
executions per second, coverage (edges), features and the corpus grown, and crashes, for
bench/RESULTS.md. The inputs found stay in WORKDIR/<target>/; a crash is
WORKDIR/<target>-crash-* (replay it with fuzz.targets.replay, fix, and keep it in
fuzz/corpus/<target>/ as regress-*).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(r"^(\w+): exit (-?\d+), (.*)$")


def main(argv: list[str]) -> int:
    seconds = int(argv[1]) if len(argv) > 1 else 300
    work = Path(argv[2]) if len(argv) > 2 else Path("/tmp/pkdns-fuzz-campaign")
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "fuzz.run", "--all", str(seconds), str(work),
                           *argv[3:]], cwd=ROOT, capture_output=True, text=True)
    print(f"{seconds} s per target, {time.time() - started:.0f} s in all, work dir {work}\n")
    print("| target | executions | exec/s | coverage (edges) | features | corpus | crashes |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for line in proc.stdout.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        name, code, rest = m.group(1), m.group(2), m.group(3)
        stats = dict(item.rsplit(" ", 1) for item in rest.split(", ") if " " in item
                     and not item.startswith("crashes"))
        crashes = rest.split("crashes ")[1].split(" ")[0] if "crashes " in rest else "?"
        execs, secs = int(stats.get("execs", 0)), max(int(stats.get("seconds", 1)), 1)
        print(f"| {name} | {execs} | {execs // secs} | {stats.get('cov', '?')} | "
              f"{stats.get('ft', '?')} | {stats.get('corpus', '?')} | "
              f"{crashes}{'' if code == '0' else f' (exit {code})'} |")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
