"""The two ways the hot path installs (setup.py): compiled by mypyc, or as plain Python.

CI installs with a compiler, so there the compiled modules must be what runs (the benchmark
figures in bench/RESULTS.md are for them). The plain-Python fallback is what a machine without
gcc or the Python headers gets; the same unit tests must pass on it, so a change that only
works compiled (or only interpreted) cannot land.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.require import stop

ROOT = Path(__file__).resolve().parent.parent
HOT = [line.split('"')[1][:-3].replace("/", ".") for line in
       (ROOT / "setup.py").read_text().splitlines() if line.strip().startswith('"pkdns/')]
HAND = {"pkdns.dns._udpsock": "pkdns/dns/_udpsock.c",          # C by hand (setup.py),
        "pkdns.server._udprecv": "pkdns/server/_udprecv.c"}    # built on Linux
PURE_TESTS = ["tests/dns/test_wire.py", "tests/dns/test_cache.py", "tests/dns/test_hotpath.py",
              "tests/dns/test_forwarder.py", "tests/dns/test_exchange.py",
              "tests/dns/test_sockpoll.py",
              "tests/dns/test_resolver.py"]


def test_setup_lists_the_hot_modules() -> None:
    assert "pkdns.dns.wire" in HOT and "pkdns.dns.door" in HOT and len(HOT) >= 10
    for name in HOT:
        assert (ROOT / (name.replace(".", "/") + ".py")).is_file(), name


def test_only_the_hot_modules_are_compiled() -> None:
    """Orchestration stays plain Python (an edit to it runs at once), and a module taken off
    HOT_MODULES must not keep running an extension an earlier in-place build left beside it
    (Python imports that before the ``.py``; setup.py removes such leftovers)."""
    for name in ("pkdns.dns.resolver", "pkdns.server.udp", "pkdns.server.tcp", "pkdns.app"):
        assert str(importlib.import_module(name).__file__).endswith(".py"), name
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    built = {str(p.relative_to(ROOT)).split(".")[0].replace("/", ".")
             for p in (ROOT / "pkdns").rglob("*") if p.name.endswith(suffixes)}
    assert not built - set(HOT) - set(HAND), "rebuild (pip install -e .): leftovers shadow .py"


def test_hot_modules_are_compiled_where_the_suite_installs_them() -> None:
    plain = [m for m in HOT if str(importlib.import_module(m).__file__).endswith(".py")]
    if sys.platform.startswith("linux"):
        plain += [m for m in HAND if importlib.util.find_spec(m) is None]
    if plain:
        stop(f"hot path not compiled: {plain} (scripts/test-all.sh installs gcc and "
             "python3-dev and builds them with mypyc; see setup.py)")


def test_the_plain_python_fallback_passes_the_unit_tests(tmp_path: Path) -> None:
    """A copy of the project without any compiled module (pytest puts the copy's root first
    on the path, so its plain ``pkdns`` is the one imported)."""
    shutil.copytree(ROOT / "pkdns", tmp_path / "pkdns",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copytree(ROOT / "tests", tmp_path / "tests",
                    ignore=shutil.ignore_patterns("node_modules", "artifacts", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import pkdns.dns.wire as w; print(w.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == str(tmp_path / "pkdns" / "dns" / "wire.py"), probe.stderr
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-p", "no:xdist", *PURE_TESTS], cwd=tmp_path,
                         env={**os.environ, "PKDNS_PURE": "1"},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout


def test_compiled_modules_are_not_older_than_their_source() -> None:
    """An in-place build (editable install) is not redone when a .py changes: a stale build
    would silently run the old code. The code of every compiled module is in one library,
    ``pkdns_hot__mypyc`` (setup.py's group); rebuild with ``.venv/bin/pip install -e .``."""
    if not str(importlib.import_module(HOT[0]).__file__).endswith(".so"):
        stop("hot path not compiled here")
    lib = Path(str(importlib.import_module("pkdns_hot__mypyc").__file__))
    stale = [m for m in HOT
             if (ROOT / (m.replace(".", "/") + ".py")).stat().st_mtime > lib.stat().st_mtime]
    for module, source in HAND.items():
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin is not None and (
                (ROOT / source).stat().st_mtime > Path(spec.origin).stat().st_mtime):
            stale.append(module)
    assert not stale, f"rebuild the compiled hot path (pip install -e .): {stale} changed"
