"""Build hook: compile the DNS hot path to C with mypyc, or install it as plain Python.

Why: on a cache miss the interpreter's work per query (scan, fetch and exchange bookkeeping,
reply walk, render) cost about twice what unbound spends in user space (bench/RESULTS.md).
The modules below are already ``mypy --strict`` clean, so mypyc compiles them as they are:
same source, same tests, no second implementation. Everything else in the package is
asyncio glue or off the per-query path and stays interpreted.

Two small modules are C by hand, ``pkdns/dns/_udpsock.c`` (the per-query upstream socket calls)
and ``pkdns/server/_udprecv.c`` (the listening socket's batched reads with the flood filter);
why: see their headers. They are built on Linux only and each on its own: if one fails, the rest
stays compiled and :mod:`pkdns.dns.sockpoll` / :mod:`pkdns.server.udp` use plain Python.

Compiling is best effort: without a C compiler or the Python headers (Debian: ``gcc`` and
``python3-dev``), or with ``PKDNS_PURE=1`` in the environment, the same modules install as
plain Python and only run slower. A compiler probe (one tiny file that includes Python.h)
decides before mypyc runs, so such an install takes seconds, not mypyc's minutes of
generating C that cannot be compiled. A half-built set is never left behind: if any extension
fails, every built one is removed, since the compiled modules share one runtime library.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import tempfile
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HOT_MODULES = [
    "pkdns/dns/acl.py",
    "pkdns/dns/actions.py",
    "pkdns/dns/cache.py",
    "pkdns/dns/door.py",
    "pkdns/dns/driver.py",
    "pkdns/dns/exchange.py",
    "pkdns/dns/fetch.py",
    "pkdns/dns/forwarder.py",
    "pkdns/dns/health.py",
    "pkdns/dns/querypolicy.py",
    "pkdns/dns/ratelimit.py",
    "pkdns/dns/reply.py",
    "pkdns/dns/sockpoll.py",
    "pkdns/dns/tally.py",
    "pkdns/dns/upstreams.py",
    "pkdns/dns/wire.py",
]


def _note(msg: str) -> None:
    print(f"pkdns build: {msg}", file=sys.stderr)


UDPSOCK = "pkdns.dns._udpsock"
UDPRECV = "pkdns.server._udprecv"
STANDALONE = (UDPSOCK, UDPRECV)      # hand-written C: each stands alone, built or not


def _can_compile() -> str | None:
    """None when a C file including Python.h compiles here (the compiler and flags setuptools
    will use, ``CC`` included), else why not."""
    try:
        from setuptools._distutils.ccompiler import new_compiler
        from setuptools._distutils.sysconfig import customize_compiler, get_python_inc

        compiler: Any = new_compiler()
        customize_compiler(compiler)
        with tempfile.TemporaryDirectory() as tmp:
            source = os.path.join(tmp, "probe.c")
            with open(source, "w") as f:
                f.write("#include <Python.h>\nint pkdns_probe(void) { return 0; }\n")
            compiler.compile([source], output_dir=tmp, include_dirs=[get_python_inc()])
    except Exception as exc:  # CompileError, no compiler executable, missing headers
        return f"{type(exc).__name__}: {str(exc).strip()[:200]}"
    return None


def _extensions() -> list[Any]:
    if any(cmd in sys.argv for cmd in ("sdist", "egg_info", "dist_info")):
        return []                   # no building: nothing to probe, nothing to remove
    exts: list[Any] = []
    why = "PKDNS_PURE is set" if os.environ.get("PKDNS_PURE") else _can_compile()
    if why is not None and not os.environ.get("PKDNS_PURE"):
        why = f"no working C compiler or Python headers ({why})"
    if why is not None:
        _note(f"{why}: installing the hot path as plain Python")
    else:
        exts = ([Extension(UDPSOCK, ["pkdns/dns/_udpsock.c"]),
                 Extension(UDPRECV, ["pkdns/server/_udprecv.c"])]
                if sys.platform.startswith("linux") else []) + _mypyc()
    _remove_leftovers({e.name for e in exts})
    return exts


def _remove_leftovers(building: set[str]) -> None:
    """Delete compiled modules an earlier in-place build (editable install) left in the source
    tree that this build will not make: Python imports an extension module before the ``.py``
    beside it, so a module taken off :data:`HOT_MODULES` (or every one, with ``PKDNS_PURE``)
    would otherwise keep running its old compiled code."""
    root = os.path.dirname(os.path.abspath(__file__))
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    for top, _dirs, files in os.walk(root):
        rel = os.path.relpath(top, root)
        if rel != "." and not (rel == "pkdns" or rel.startswith("pkdns" + os.sep)):
            continue
        for name in files:
            if not name.endswith(suffix):
                continue
            module = os.path.join(rel, name[:-len(suffix)]).replace(os.sep, ".").lstrip(".")
            if module not in building:
                _note(f"removing {module}{suffix}, left by an earlier build")
                os.remove(os.path.join(top, name))


def _mypyc() -> list[Any]:
    try:
        from mypyc.build import mypycify

        # pip builds in an isolated environment without the runtime dependencies, so mypy
        # sees prometheus_client, structlog, ... as missing: compile without the project's
        # strict configuration (CI runs ``mypy --strict`` on the package itself) and treat
        # those imports as Any, which is how the compiled code calls them anyway.
        return list(mypycify(["--config-file=", "--ignore-missing-imports", *HOT_MODULES],
                             opt_level="3", group_name="pkdns_hot"))
    except (Exception, SystemExit) as exc:  # mypyc exits on a type error: never block
        _note(f"mypyc unavailable ({type(exc).__name__}: {exc}); plain Python")
        return []


class OptionalBuildExt(build_ext):
    """build_ext that falls back to the pure-Python modules instead of failing."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # CompileError, LinkError, missing Python.h, ...
            self._remove_built()
            _note(f"compiling failed ({type(exc).__name__}: {exc}); plain Python")

    def build_extension(self, ext: Any) -> None:
        if ext.name not in STANDALONE:
            super().build_extension(ext)
            return
        try:
            super().build_extension(ext)
        except Exception as exc:
            _note(f"{ext.name} not built ({type(exc).__name__}: {exc}); plain-Python sockets")

    def _remove_built(self) -> None:
        """The mypyc modules share one runtime library: all or none. The C socket module
        stands alone and stays."""
        for ext in self.extensions:
            if ext.name in STANDALONE:
                continue
            path = self.get_ext_fullpath(ext.name)
            if os.path.exists(path):
                os.remove(path)


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
