"""Run fuzz targets under atheris (libFuzzer), on plain-Python pkdns.

    python -m fuzz.run TARGET [libFuzzer options and corpus directories ...]
    python -m fuzz.run TARGET -max_total_time=300 /tmp/work fuzz/corpus/TARGET
    python -m fuzz.run --all SECONDS WORKDIR [TARGET ...]
    python -m fuzz.run --list

pkdns is imported from source (:mod:`fuzz.pure`: the mypyc-compiled modules give atheris no
coverage) and instrumented together with dnslib, which parses DNS packets inside pkdns's
parsers; the target's own contract checks are in :mod:`fuzz.targets`. libFuzzer writes new
inputs to the first corpus directory and a crashing input to ``-artifact_prefix``.

``--all`` instruments and imports once, then runs each target for SECONDS in a forked child
(libFuzzer ends its process when done) with WORKDIR/<target>/ as the new-input directory and
the seeds of ``fuzz/corpus/<target>/``; each child's log is WORKDIR/<target>.log and a crash
is WORKDIR/<target>-crash-*. It prints one line per target (runs, coverage, features,
crashes) and exits 1 if any target crashed.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from fuzz.pure import prefer_source

INSTRUMENT = ("pkdns", "dnslib")
CORPUS = Path(__file__).resolve().parent / "corpus"
_STATUS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
_RUNS = re.compile(r"Done (\d+) runs in (\d+) second")
_EXECUTED = re.compile(r"stat::number_of_executed_units: (\d+)")


def load_targets() -> dict[str, Callable[[bytes], None]]:
    """:data:`fuzz.targets.TARGETS`, imported from source under atheris instrumentation."""
    prefer_source()
    import atheris

    with atheris.instrument_imports(include=list(INSTRUMENT)):
        from fuzz.targets import TARGETS
    return TARGETS


def fuzz_one(target: Callable[[bytes], None], args: list[str]) -> None:
    """Hand over to libFuzzer (never returns: it exits the process)."""
    import atheris

    atheris.Setup([sys.argv[0], *args], target)
    atheris.Fuzz()


def summary(log: str) -> dict[str, int]:
    """Runs, seconds, coverage, features and corpus size from a libFuzzer log (the last
    status line; a run that stopped at a crash has no DONE line, only its final stats)."""
    out: dict[str, int] = {}
    status = _STATUS.findall(log)
    if status:
        execs, cov, ft, corp = (int(x) for x in status[-1])
        out |= {"execs": execs, "cov": cov, "ft": ft, "corpus": corp}
    executed = _EXECUTED.findall(log)
    if executed:
        out["execs"] = int(executed[-1])
    runs = _RUNS.findall(log)
    if runs:
        out |= {"execs": int(runs[-1][0]), "seconds": int(runs[-1][1])}
    return out


def run_all(seconds: int, work: Path, names: list[str]) -> int:
    targets = load_targets()
    names = names or list(targets)
    work.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in names:
        (work / name).mkdir(exist_ok=True)
        log = work / f"{name}.log"
        args = [f"-max_total_time={seconds}", "-timeout=20", "-rss_limit_mb=2048",
                "-print_final_stats=1", f"-artifact_prefix={work}/{name}-",
                str(work / name), str(CORPUS / name)]
        pid = os.fork()
        if pid == 0:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            fuzz_one(targets[name], args)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        crashes = sorted(p.name for p in work.glob(f"{name}-crash-*"))
        code = os.waitstatus_to_exitcode(status)
        stats = summary(log.read_text(errors="replace"))
        failed += bool(crashes or code)
        print(f"{name}: exit {code}, " + ", ".join(f"{k} {v}" for k, v in stats.items())
              + f", crashes {len(crashes)} {' '.join(crashes)}".rstrip(), flush=True)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 2
    if argv[1] == "--all":
        if len(argv) < 4:
            print("usage: python -m fuzz.run --all SECONDS WORKDIR [TARGET ...]",
                  file=sys.stderr)
            return 2
        return run_all(int(argv[2]), Path(argv[3]), argv[4:])
    targets = load_targets()
    if argv[1] == "--list":
        print("\n".join(targets))
        return 0
    target = targets.get(argv[1])
    if target is None:
        print(f"unknown target {argv[1]!r}; known: {', '.join(targets)}", file=sys.stderr)
        return 2
    fuzz_one(target, argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
