"""Tools and privileges a test needs: skip on a developer machine, fail in CI.

scripts/test-all.sh installs node, chromium and iproute2, runs as root and exports
``PKDNS_REQUIRE_ALL=1``: there a missing tool is a broken setup, and a test that quietly skips
(or returns early) would pass without having run. So with ``PKDNS_REQUIRE_ALL`` or ``CI`` set,
:func:`require` fails the test with the reason; otherwise it skips with the same reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

STRICT_VARS = ("PKDNS_REQUIRE_ALL", "CI")
_OFF = ("", "0", "false", "no")


def strict() -> bool:
    """True when every test must run (``PKDNS_REQUIRE_ALL`` or ``CI`` set to a true value)."""
    return any(os.environ.get(var, "").strip().lower() not in _OFF for var in STRICT_VARS)


def require(missing: str | None) -> None:
    """Fail (strict) or skip the running test when ``missing`` names what is absent."""
    if missing is not None:
        stop(missing)


def stop(reason: str) -> NoReturn:
    """Fail the running test in strict mode, else skip it; ``reason`` says what is missing."""
    if strict():
        pytest.fail(f"{reason} (PKDNS_REQUIRE_ALL/CI is set, so this test must run; "
                    "scripts/test-all.sh installs it)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)   # also from a module's top level


def require_tool(name: str, path: str | None = None) -> str:
    """The executable ``name`` (at ``path`` when given, else on PATH), or :func:`require`."""
    found = path if path is not None and Path(path).is_file() else shutil.which(name)
    if found is None:
        stop(f"{name} is not installed (looked in {path or 'PATH'})")
    return found
