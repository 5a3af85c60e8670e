"""The fuzz targets in the test suite: every corpus file replayed (compiled build, in process),
a short coverage-guided run of each target (atheris, plain-Python build, a few seconds), and
the regressions the fuzzer found.

The longer campaign is ``bench/fuzz_campaign.py`` (figures in bench/RESULTS.md).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import dnslib
import pytest

from fuzz.targets import TARGETS, replay
from pkdns.dns.reply import inspect_reply
from pkdns.errors import DecodeError
from tests.support.require import stop

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus"
SHORT_RUN = 2          # seconds of fuzzing per target in the suite


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_corpus_replays(target: str) -> None:
    """Every seed and regression input passes the target's contract checks."""
    files = sorted((CORPUS / target).iterdir())
    assert files, f"no corpus for {target}"
    for f in files:
        try:
            replay(target, f.read_bytes())
        except Exception as exc:
            raise AssertionError(f"{f.relative_to(ROOT)}: {type(exc).__name__}: {exc}") from exc


def test_short_fuzz_run_of_every_target(tmp_path: Path) -> None:
    """A bounded atheris run of each target from its seeds (one process instruments and
    imports once, a forked child per target): no crash, and every target executed."""
    if importlib.util.find_spec("atheris") is None:
        stop("atheris is not installed (pip install -e '.[test]')")
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz.run", "--all", str(SHORT_RUN), str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = [ln for ln in proc.stdout.splitlines() if ": exit " in ln]
    logs = "".join((tmp_path / f"{t}.log").read_text()[-1500:] for t in TARGETS
                   if f"{t}: exit 0," not in proc.stdout and (tmp_path / f"{t}.log").exists())
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:] + logs
    assert sorted(ln.split(":")[0] for ln in lines) == sorted(TARGETS), proc.stdout
    for line in lines:
        assert ", crashes 0" in line and ", execs " in line, line
        assert int(line.split(", execs ")[1].split(",")[0]) > 0, line


def test_fuzzing_uses_the_plain_python_source() -> None:
    """atheris sees only bytecode: under fuzz.run, the mypyc modules come from their .py."""
    code = ("from fuzz.pure import prefer_source, compiled; prefer_source()\n"
            "import pkdns.dns.wire, pkdns.dns.reply, pkdns.dns.resolver\n"
            "mods = (pkdns.dns.wire, pkdns.dns.reply, pkdns.dns.resolver)\n"
            "assert not any(compiled(m) for m in mods), [m.__file__ for m in mods]\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})


# --- what the fuzzer found --------------------------------------------------------------------

def test_relay_put_dated_past_year_9999_is_a_400() -> None:
    """A relay PUT with a timestamp in year 107007 raised ValueError in the 400 message's
    HTTP-date (a 500 from aiohttp); now the date is clamped and the client gets its 400."""
    from pkdns.pkarr.relay_client import http_date

    assert http_date(2**63 - 1) == "Fri, 31 Dec 9999 23:59:59 GMT"
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    data = (CORPUS / "relay_put" / "regress-relay_put-timestamp-year-107007").read_bytes()
    replay("relay_put", data)         # asserts RelayError 400 (any other exception escapes)


def test_reply_naming_a_pointer_into_trailing_bytes_is_refused() -> None:
    """An upstream reply whose CNAME target was compressed into bytes after its last record
    was cached cut at that record: the pointer then led past the end, and neither clients
    nor our own IcannPath.resolve could parse the entry. Now such a reply goes through dnslib,
    which refuses the forward pointer (DecodeError: SERVFAIL, not cached)."""
    data = (CORPUS / "upstream_reply" / "regress-upstream_reply-pointer-into-trailing-bytes"
            ).read_bytes()
    with pytest.raises(DecodeError):
        inspect_reply(data)


def test_trailing_bytes_after_a_good_reply_are_dropped() -> None:
    reply = dnslib.DNSRecord.question("a.example", "A").reply()
    reply.add_answer(*dnslib.RR.fromZone("a.example. 60 CNAME b.example."))
    reply.add_answer(*dnslib.RR.fromZone("b.example. 60 A 192.0.2.1"))
    clean = inspect_reply(bytes(reply.pack()))
    padded = inspect_reply(bytes(reply.pack()) + b"\x00junk")
    assert padded.wire == clean.wire and padded.offsets == clean.offsets
    assert [str(r.rdata) for r in dnslib.DNSRecord.parse(padded.wire).rr] == [
        "b.example.", "192.0.2.1"]


def test_cname_whose_target_is_not_its_rdata_is_refused() -> None:
    """A CNAME with RDLENGTH 0 was read as naming the next record's owner (an OPT); the
    reply was cached with that OPT cut off, and the cached entry no longer parsed. A CNAME's
    target must fill its RDATA (RFC 1035 §3.3.1): DecodeError, SERVFAIL, not cached."""
    data = (CORPUS / "upstream_reply" / "regress-upstream_reply-empty-cname-rdata").read_bytes()
    with pytest.raises(DecodeError, match="CNAME target"):
        inspect_reply(data)
    replay("upstream_reply", data)


def test_cname_with_a_compressed_target_is_kept() -> None:
    reply = dnslib.DNSRecord.question("a.example", "A").reply()
    reply.add_answer(*dnslib.RR.fromZone("a.example. 60 CNAME b.a.example."))
    reply.add_answer(*dnslib.RR.fromZone("b.a.example. 60 A 192.0.2.1"))
    info = inspect_reply(bytes(reply.pack()))
    assert [str(r.rdata) for r in dnslib.DNSRecord.parse(info.wire).rr] == [
        "b.a.example.", "192.0.2.1"]
