"""``python -m build`` makes an sdist and a wheel, and both install where there is no C compiler.

The hot path is compiled with mypyc when a compiler and the Python headers are there, and is
plain Python otherwise (setup.py). A machine without gcc must still get a working pkdns from
either artifact, so here the whole chain runs with ``CC=false`` and a ``PATH`` without a
compiler: the build (from a copy of the tree, so the repository is left alone), then each
artifact installed into a fresh venv, whose ``pkdns`` must run (the one from the sdist: the
offline demo, answering ``dig``). Offline: nothing is fetched from an index (``--no-index``);
the fresh venvs see the already installed dependencies through a ``.pth`` line, as they
would come from PyPI's wheels.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
HOT = ("resolver", "wire", "cache", "exchange", "forwarder")
NO_COMPILER = {"CC": "false", "CXX": "false", "PKDNS_PURE": ""}


def _env(path_dirs: list[Path]) -> dict[str, str]:
    """The environment of a machine without a C compiler: CC=false and a PATH of tools."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(NO_COMPILER, PATH=":".join(str(p) for p in path_dirs),
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INDEX="1")
    del env["PKDNS_PURE"]
    return env


def _tools(tmp: Path) -> Path:
    """A bin directory with only what the build needs (no cc, gcc or clang)."""
    tools = tmp / "tools"
    tools.mkdir()
    for name in ("sh", "tar", "gzip", "uname", "dig"):
        found = shutil.which(name)
        if found:
            (tools / name).symlink_to(found)
    assert not any((tools / cc).exists() for cc in ("cc", "gcc", "clang"))
    return tools


def _fresh_venv(where: Path) -> Path:
    """A venv without pip whose imports fall back to this venv's packages (the dependencies,
    pip and the build backend); pkdns itself is not among them (this venv has it editable,
    through a finder a plain .pth line does not load)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True,
                   timeout=120)
    here = sysconfig.get_paths()["purelib"]
    site = next((where / "lib").glob("python3*/site-packages"))
    (site / "zz_deps.pth").write_text(here + "\n")
    return where / "bin" / "python"


def _demo_answers(pkdns: Path, env: dict[str, str], tmp: Path) -> str:
    """Run ``pkdns --testnet`` from ``pkdns`` and ``dig`` its first printed line."""
    out = tmp / f"demo-{time.monotonic_ns()}.out"
    with open(out, "wb") as f:
        proc = subprocess.Popen([str(pkdns), "--testnet", "--listen", "127.0.0.1:0",
                                 "--no-http", "--log-format", "json"], stdout=f,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=tmp)
    try:
        deadline = time.monotonic() + 60
        while "Ctrl-C to stop." not in out.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        first = next(ln.strip() for ln in out.read_text().splitlines()
                     if ln.startswith("  dig "))
        return subprocess.run([*first.split(), "+short"], capture_output=True, text=True,
                              timeout=30, check=False).stdout
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.timeout(480)
def test_sdist_and_wheel_build_and_install_without_a_compiler(tmp_path: Path) -> None:
    if shutil.which("dig") is None:
        pytest.skip("dig is not installed")
    tools = _tools(tmp_path)
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "node_modules", "build", "dist", "*.egg-info", "__pycache__", "*.so",
        ".cache", ".mypy_cache", ".ruff_cache", ".pytest_cache", "bench", "tests"))
    env = _env([Path(sys.executable).parent, tools])
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation",
                            "--skip-dependency-check", "--outdir", str(dist), str(src)],
                           capture_output=True, text=True, env=env, timeout=300, check=False)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert "no working C compiler" in built.stdout + built.stderr
    (sdist,) = dist.glob("pkdns-*.tar.gz")
    (wheel,) = dist.glob("pkdns-*-py3-none-any.whl")   # pure: nothing was compiled
    listing = subprocess.run(["tar", "tzf", str(sdist)], capture_output=True, text=True,
                             check=True).stdout
    for member in ("setup.py", "pyproject.toml", "pkdns/dns/_udpsock.c", "pkdns/server/_udprecv.c",
                   "pkdns/server/static/index.html", "systemd/pkdns.service",
                   "config.example.toml"):
        assert re.search(rf"^pkdns-[^/]+/{re.escape(member)}$", listing, re.M), member
    for artifact in (wheel, sdist):
        venv = tmp_path / f"venv-{artifact.suffix.strip('.')}"
        python = _fresh_venv(venv)
        installed = subprocess.run(
            [str(python), "-m", "pip", "install", "--no-deps", "--no-index",
             "--no-build-isolation", str(artifact)],
            capture_output=True, text=True, env=env, timeout=300, check=False)
        assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
        where = subprocess.run(
            [str(python), "-c", "import importlib; print(*(importlib.import_module("
             f"'pkdns.dns.' + m).__file__ for m in {HOT!r}))"],
            capture_output=True, text=True, env=env, timeout=60, check=True,
            cwd=tmp_path).stdout.split()
        assert all(f.startswith(str(venv)) and f.endswith(".py") for f in where), where
        version = subprocess.run([str(venv / "bin" / "pkdns"), "--version"],
                                 capture_output=True, text=True, env=env, timeout=60,
                                 cwd=tmp_path)
        assert version.returncode == 0 and version.stdout.startswith("pkdns "), version
        if artifact == sdist:   # the demo once: the same modules either way
            assert re.search(r"^127\.0\.0\.1$", _demo_answers(venv / "bin" / "pkdns", env,
                                                               tmp_path), re.M)
        else:
            check = subprocess.run([str(venv / "bin" / "pkdns"), "serve", "--check"],
                                   capture_output=True, text=True, env=env, timeout=60,
                                   cwd=tmp_path)
            assert check.returncode == 0 and "configuration OK" in check.stdout, check
