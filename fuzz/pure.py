"""Import pkdns as plain Python even where the compiled hot path is installed.

Why: the modules in ``setup.py`` HOT_MODULES are built to C extensions by mypyc, and atheris
only sees Python bytecode: a compiled ``pkdns.dns.wire`` gives the fuzzer no coverage signal
and no comparison hooks. The same source (the ``.py`` next to each ``.so``) is what mypyc
compiles, so fuzzing it interpreted tests the same logic; a compiled run of every corpus file
(the test suite replays them in the ordinary, compiled import) checks the build agrees.

:func:`prefer_source` must run before anything imports ``pkdns``; it puts a finder in front
of the path finder (after atheris's own, which then wraps the source loader it returns).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


class SourceFirst(importlib.abc.MetaPathFinder):
    """Finds ``pkdns`` modules as ``.py`` source (packages as ``__init__.py``), never ``.so``."""

    def __init__(self, root: Path = ROOT) -> None:
        self.root = root

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "pkdns" and not fullname.startswith("pkdns."):
            return None
        base = self.root.joinpath(*fullname.split("."))
        package = base / "__init__.py"
        if package.is_file():
            return importlib.util.spec_from_file_location(
                fullname, package, submodule_search_locations=[str(base)])
        module = base.with_suffix(".py")
        if module.is_file():
            return importlib.util.spec_from_file_location(fullname, module)
        return None


def prefer_source() -> None:
    """Install :class:`SourceFirst` just before the path finder (once)."""
    if any(isinstance(f, SourceFirst) for f in sys.meta_path):
        return
    if any(name == "pkdns" or name.startswith("pkdns.") for name in sys.modules):
        raise RuntimeError("pkdns is already imported: call prefer_source() first")
    at = next((i for i, f in enumerate(sys.meta_path)
               if f is importlib.machinery.PathFinder), len(sys.meta_path))
    sys.meta_path.insert(at, SourceFirst())


def compiled(module: ModuleType) -> bool:
    """Is ``module`` a C extension (mypyc) rather than Python source?"""
    return not str(getattr(module, "__file__", "")).endswith(".py")
