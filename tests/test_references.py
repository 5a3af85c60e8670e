"""Comments and docstrings cite only what a reader of this repository can open.

The research notes the project started from (threat lists, lab reports, style and design notes)
are not in the repository, so a comment that says "see reliability.md U3" or "quirk 8" tells a
newcomer nothing. A comment gives the reason itself, and where the fact comes from when that is
public: an RFC or BEP section, an upstream project's file, or a measurement in bench/RESULTS.md.
This test keeps such citations from coming back, and checks that every path in the repository
a file names (``tests/server/test_tcp.py``, ``pkdns/dns/wire.py``) still exists, so moving a
module or a test cannot leave its citations pointing nowhere.
"""

from __future__ import annotations

import io
import os
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("pkdns", "tests", "bench")
SUFFIXES = {".py", ".pyi", ".js", ".mjs", ".sh", ".md", ".toml", ".c", ".h", ".txt"}
SKIP_DIRS = {"node_modules", "__pycache__", ".venv", "build", ".mypy_cache", ".ruff_cache"}
THIS = Path(__file__).resolve()

DOCUMENTS = re.compile(
    r"\b(?:reliability|dns-anchors|pkarr-reference|dht-lab|style|design)\.md\b"
    r"|\b(?:dns-anchors|pkarr-reference|dht-lab)\b"
    r"|\bquirk \d+"
    r"|\b(?:reliability|style|design|pkarr)(?:\.md)? ?§"
    r"|\breliability [A-Z]\d"
    r"|shared/tools/|/work/shared",
    re.IGNORECASE,
)
"""Names of the documents outside the repository, and the shapes their citations took."""

LABEL = re.compile(r"(?<![\w.$/-])[ADFGMPRTU][1-9]\d?(?:[–-][ADFGMPRTU]?\d{1,2})?(?![\w.])")
"""A threat-list label such as U3, D7, F4, T10 or D3–D5 (checked in comments and docstrings
of Python files only; the lists numbered from 1, so ``T0`` is a name, not a label)."""


PATH = re.compile(r"(?<![\w./-])(?:pkdns|tests|bench|docs|scripts|fuzz|systemd)/[\w./-]+"
                  r"\.(?:py|mjs|json|js|md|sh|toml|c|service|socket)\b")
"""A path inside this repository, as files cite one (``/etc/pkdns/...`` is not one)."""

FOREIGN = {"tests/pytests/test_conn_mgmt.py"}
"""Paths in other projects' repositories that a comment cites (Knot Resolver's tests)."""


def _files() -> list[Path]:
    out = []
    for top in SCANNED:
        for dirpath, dirnames, filenames in os.walk(ROOT / top):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
            for name in filenames:
                path = Path(dirpath, name)
                if path.suffix in SUFFIXES and path.resolve() != THIS:
                    out.append(path)
    return sorted(out)


def _prose(source: str) -> list[tuple[int, str]]:
    """(line, text) of every comment and every string of a Python file."""
    found = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.STRING):
            found.append((tok.start[0], tok.string))
    return found


def citations(path: Path) -> list[str]:
    """Every citation of a document outside the repository in ``path``, as ``file:line: text``."""
    text = path.read_text(encoding="utf-8", errors="replace")
    rel = path.relative_to(ROOT)
    hits = [f"{rel}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1)
            if DOCUMENTS.search(line)]
    if path.suffix == ".py":
        for start, chunk in _prose(text):
            if chunk.startswith(("f'", 'f"', "rb", "b'", 'b"')):   # data, not prose
                continue
            for off, line in enumerate(chunk.splitlines()):
                if LABEL.search(line):
                    hits.append(f"{rel}:{start + off}: {line.strip()}")
    return hits


def test_scan_covers_the_package_tests_and_bench() -> None:
    files = {p.relative_to(ROOT).as_posix() for p in _files()}
    assert {"pkdns/dns/wire.py", "tests/dns/test_wire.py", "bench/RESULTS.md"} <= files
    assert "tests/test_references.py" not in files


@pytest.mark.parametrize("sample", [
    "# late reply cached (reliability.md U3)",
    "# see dns-anchors §8",
    '"""SERVFAIL, never NXDOMAIN: quirk 8."""',
    "# pkarr-reference §1.9",
    "# never downgraded (reliability D6)",
    "# copied from shared/tools/dhtlab",
    '"""Outcome -> RCODE (style.md §2.6)"""',
])
def test_a_citation_is_found(sample: str) -> None:
    """The checks can fail: each shape a citation took is caught."""
    assert DOCUMENTS.search(sample)


@pytest.mark.parametrize(("sample", "found"), [
    ('"""TC=1: ask again over TCP (U5)."""\n', True),
    ("x = 1  # every upstream left is down (U8)\n", True),
    ('"""Checks (D3–D5): every field present."""\n', True),
    ("T0 = 1_700_000_000.0\nZ1 = T0 + 5  # T1 fails here\n", True),
    ("T0 = 1_700_000_000.0\nZ1 = T0 + 5  # after T0\n", False),
    ("T0 = 1_700_000_000.0\nplan.due(T0 + 1)\n", False),
    ('"""RFC 8767 serve-stale; BEP 44 items; TTL 300."""\n', False),
    ('url = f"{relay}/{Z32}"\n', False),
])
def test_a_label_in_prose_is_found(sample: str, found: bool) -> None:
    hits = [text for _, text in _prose(sample) if LABEL.search(text)]
    assert bool(hits) is found, hits


def test_a_cited_path_is_found() -> None:
    text = "(tests/dns/test_wire.py), `bench/RESULTS.md`; not /etc/pkdns/config.toml"
    assert PATH.findall(text) == ["tests/dns/test_wire.py", "bench/RESULTS.md"]


def test_every_path_a_file_names_exists() -> None:
    readers = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
               *sorted((ROOT / "scripts").glob("*.sh"))]
    missing = sorted({f"{path.relative_to(ROOT)}: {cited}" for path in _files() + readers
                      for cited in PATH.findall(path.read_text(encoding="utf-8", errors="replace"))
                      if cited not in FOREIGN and not (ROOT / cited).exists()})
    assert not missing, "paths that no longer exist (moved or renamed?):\n" + "\n".join(missing)


def test_no_comment_cites_a_document_outside_the_repository() -> None:
    hits = [hit for path in _files() for hit in citations(path)]
    assert not hits, ("give the one-line reason (and a public source: RFC/BEP section, an "
                      "upstream file, bench/RESULTS.md) instead of citing documents that are "
                      "not in the repository:\n" + "\n".join(hits))
